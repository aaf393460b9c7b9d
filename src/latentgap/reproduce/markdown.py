"""``results.md``: a reproduced table in the paper's layout, our number beside the paper's.

Cells that were skipped or failed show a numbered footnote with the reason; cells never asked
for (outside ``--only``/``--column``) show ``·``. Below the table: the runs (preset, epochs,
training images, wall time), the budget and the machine.
"""

from __future__ import annotations

from typing import Any

from latentgap.reproduce.tables import Table


def format_value(metric: str, value: float | None, std: float | None = None) -> str:
    """A number as the papers print it: nats and FID with 2 decimals, bits/dim with 3."""
    if value is None:
        return "—"
    digits = 3 if metric == "bits_per_dim" else 2
    text = f"{value:.{digits}f}"
    if std:
        text += f" ± {std:.{digits}f}"
    return text


def format_paper(value: float | None, digits: int = 2) -> str:
    """A paper's number with the decimals the paper prints (``—`` where it gives none)."""
    return "—" if value is None else f"{value:.{digits}f}"


def format_seconds(seconds: float | None) -> str:
    """``4.2 s``, ``93 s``, ``12.4 min`` or ``2.1 h``."""
    if seconds is None:
        return "—"
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _escape(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def table_grid(
    results: dict[str, Any], table: Table
) -> tuple[list[str], list[list[str]], list[str]]:
    """(header, rows, notes): the table's text cells, ours beside the paper's, in its layout.

    A skipped or failed cell reads ``skipped [n]`` with its reason as the n-th note.
    """
    cells: dict[str, Any] = results.get("cells", {})
    header = ["model"]
    for label in table.columns.values():
        header += [f"{label} ours", "paper"]
    rows: list[list[str]] = []
    notes: list[str] = []
    for row, row_label in table.rows.items():
        out = [row_label]
        for column in table.columns:
            cell = table.cell(row, column)
            if cell is None:
                out += ["", ""]
                continue
            rec = cells.get(cell.key)
            if rec is None:
                ours = "·"
            elif rec.get("status") == "done":
                ours = format_value(cell.metric, rec.get("value"), rec.get("std"))
            else:
                notes.append(f"{row_label} / {table.columns[column]}: {rec.get('reason', '')}")
                ours = f"{rec.get('status', '?')} [{len(notes)}]"
            out += [ours, format_paper(cell.paper, table.paper_digits)]
        rows.append(out)
    return header, rows, notes


def _epochs(run: dict[str, Any]) -> str:
    """Epochs of a run: the plan, or what ran of a cap under the convergence rule."""
    planned = run.get("epochs", "")
    if not run.get("stop_metric") or "epochs_trained" not in run:
        return str(planned)
    how = f"converged on {run['stop_metric']}" if run.get("converged") else "cap reached"
    return f"{run['epochs_trained']} of ≤ {planned} ({how})"


def render_markdown(results: dict[str, Any], table: Table) -> str:
    """The markdown page of ``results`` (the content of ``results.json``) for ``table``."""
    runs: dict[str, Any] = results.get("runs", {})
    lines = [
        f"# {table.name}: {table.title}",
        "",
        f"Source: {table.source}. Budget: **{results.get('budget')}** "
        f"({results.get('budget_description', '')}).",
        "",
    ]
    header, rows, notes = table_grid(results, table)
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    lines += ["| " + " | ".join(_escape(v) for v in row) + " |" for row in rows]
    lines.append("")
    if table.note:
        lines += [table.note, ""]
    if notes:
        lines += ["Not computed:", ""]
        lines += [f"{i}. {_escape(note)}" for i, note in enumerate(notes, 1)]
        lines.append("")
    lines += ["`·`: not run yet (outside the selected rows/columns).", ""]
    if runs:
        lines += [
            "## Runs",
            "",
            "| run | preset | model | dataset | epochs | train images | status | train wall |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for key, run in runs.items():
            images = run.get("train_images") or "all"
            lines.append(
                f"| {key} | {run.get('preset', '')} | {run.get('model', '')} | "
                f"{run.get('dataset', '')} | {_epochs(run)} | {images} | "
                f"{run.get('status', '')} | {format_seconds(run.get('train_wall_s'))} |"
            )
        lines.append("")
    machine = results.get("machine", {})
    lines += [
        "## Machine",
        "",
        f"- CPU: {machine.get('cpu', '?')}, {machine.get('cores', '?')} cores "
        f"(torch threads: {machine.get('torch_threads', '?')})",
        f"- torch {machine.get('torch', '?')}, Python {machine.get('python', '?')}, "
        f"device {machine.get('device', '?')}"
        + (f" ({machine['gpu']})" if "gpu" in machine else ""),
        f"- wall time: {format_seconds(results.get('wall_s'))} training + evaluation, "
        f"{format_seconds(results.get('elapsed_s'))} in all (data checks and loading included)",
        f"- started {results.get('started', '?')}, updated {results.get('updated', '?')}",
        "",
    ]
    return "\n".join(lines)


__all__ = ["format_paper", "format_seconds", "format_value", "render_markdown", "table_grid"]
