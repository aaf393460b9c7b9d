"""``latentgap report DIR``: one HTML page for a run directory or a reproduced table.

The page (default ``DIR/report/index.html``) is self-contained: every figure is embedded as a
base64 ``data:`` URI, so the file can be mailed or archived alone. The same figures are also
written as PNG files beside it (``DIR/report/*.png``) for use elsewhere.

A run directory (``config.json``) gives: its config, the metrics of ``eval.json`` grouped with
units and sample sizes (:mod:`~.metrics`), its provenance (command, versions, machine), loss curves,
β and log Ẑ curves (VAEPP), acceptance rates if logged, the sample grids already in the folder
(``samples*.png``), fresh grids per sampler (``samples=True``), reconstructions of a few test
images and ``latent-tsne.png`` if present. A table directory (``results.json`` from
``latentgap reproduce``) gives the table, ours beside the paper's, then a section per run.
Several run directories give a comparison: metrics side by side, overlaid training curves,
the sample grids in one row, each run's provenance, then a section per run.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

from latentgap.errors import ConfigError, LatentgapError
from latentgap.report import figures
from latentgap.train.rundir import check_output_file

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; border-bottom: 1px solid #ccc; margin-top: 2em; }
h3 { font-size: 1.05em; } pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
figure { display: inline-block; margin: 0.5em 1em 0.5em 0; vertical-align: top; }
figcaption { font-size: 0.85em; color: #555; } img { max-width: 100%; image-rendering: pixelated; }
.note { color: #8a5300; font-size: 0.9em; } .basis { color: #666; font-size: 0.85em; }
.row { display: flex; flex-wrap: nowrap; overflow-x: auto; gap: 1em; }
.row figure { flex: 0 0 auto; max-width: 320px; } td.cmd { text-align: left; }
"""


def _esc(value: Any) -> str:
    return html.escape(str(value))


def _img(path: Path, caption: str) -> str:
    """A figure with the PNG at ``path`` embedded as a data URI."""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{_esc(caption)}">'
        f"<figcaption>{_esc(caption)}</figcaption></figure>"
    )


def _scalar(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, dict)):
        return _esc(json.dumps(value))
    return _esc(value)


def metrics_table(metrics: dict[str, Any]) -> str:
    """A two-column table of ``eval.json``'s entries."""
    rows = "".join(
        f"<tr><td>{_esc(k)}</td><td>{_scalar(v)}</td></tr>" for k, v in sorted(metrics.items())
    )
    return f"<table><tr><th>metric</th><th>value</th></tr>{rows}</table>"


def read_json_object(path: Path) -> dict[str, Any]:
    """The JSON object in ``path``; ConfigError (one line) if it is unreadable or not an object."""
    try:
        value = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(f"{path} cannot be read as JSON ({err}); fix or delete it") from None
    if not isinstance(value, dict):
        raise ConfigError(
            f"{path} holds {type(value).__name__}, not a JSON object; fix or delete it"
        )
    return value


def read_records(path: Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` file; a torn last line (a killed run) is skipped, any
    other line that is not a JSON object is a ConfigError."""
    try:
        lines = Path(path).read_text().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path} cannot be read ({err}); fix or delete it") from None
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):
                break  # torn by a kill mid-write
            record = None
        if not isinstance(record, dict):
            raise ConfigError(f"{path} line {number} is not a JSON object; fix or delete it")
        records.append(record)
    return records


def run_key_dir(directory: Path, key: Any) -> Path:
    """``directory / key`` for a run key of ``results.json``; ConfigError for a key that is not
    a plain folder name inside ``directory`` (absolute, ``..``, nested or a link out of it)."""
    ok = isinstance(key, str) and key not in ("", ".", "..") and "/" not in key and "\\" not in key
    if ok:
        path = Path(directory) / key
        root = Path(directory).resolve()
        ok = path.resolve().parent == root
    if not ok:
        raise ConfigError(
            f"{Path(directory) / 'results.json'} names run {key!r}, which is not a folder inside "
            f"{directory}; a report reads runs inside its folder only"
        )
    return path


def grouped_metrics(
    metrics: dict[str, Any],
    training: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
) -> str:
    """Tables of ``eval.json`` (and the last epoch record) by group, with units, the sample
    sizes behind each number and caveats (:func:`~latentgap.report.metrics.group_metrics`)."""
    from latentgap.report.metrics import group_metrics

    parts = []
    for group in group_metrics(metrics, training, config):
        rows = "".join(
            f"<tr><td>{_esc(r.label)}</td><td>{_esc(r.value)}</td><td>{_esc(r.unit)}</td>"
            f'<td class="basis">{_esc(r.basis)}</td></tr>'
            for r in group.rows
        )
        parts.append(
            f"<h4>{_esc(group.title)}</h4><table><tr><th>metric</th><th>value</th>"
            f"<th>unit</th><th>based on</th></tr>{rows}</table>"
        )
        parts += [f'<p class="note">{_esc(c)}</p>' for c in group.caveats]
    return "\n".join(parts)


PROVENANCE_KEYS = ("command", "latentgap", "torch", "python", "host", "cpu", "cores", "device")
PROVENANCE_KEYS += ("gpu", "date")


def provenance_table(columns: dict[str, dict[str, Any]]) -> str:
    """Command, versions, machine and date: one column per run (from provenance.json)."""
    keys = [k for k in PROVENANCE_KEYS if any(k in c for c in columns.values())]
    head = "".join(f"<th>{_esc(name)}</th>" for name in columns)
    body = ""
    for key in keys:
        cells = "".join(
            f'<td class="cmd"><code>{_esc(c.get(key, ""))}</code></td>'
            if key == "command"
            else f"<td>{_esc(c.get(key, ''))}</td>"
            for c in columns.values()
        )
        body += f"<tr><td>{_esc(key)}</td>{cells}</tr>"
    resumed = [
        f"{name}: resumed {e.get('date', '?')} with <code>{_esc(e.get('command', '?'))}</code>"
        for name, c in columns.items()
        for e in c.get("resumed", [])
    ]
    extra = "".join(f'<p class="basis">{r}</p>' for r in resumed)
    return f"<table><tr><th></th>{head}</tr>{body}</table>{extra}"


def report_provenance() -> str:
    """Which library, torch and machine wrote this page, and when."""
    from latentgap.train.provenance import environment

    env = environment()
    return (
        f'<p class="basis">Report written {_esc(env["date"])} by latentgap '
        f"{_esc(env['latentgap'])} (torch {_esc(env['torch'])}, Python {_esc(env['python'])}) "
        f"on {_esc(env['host'])} ({_esc(env['cpu'])}).</p>"
    )


def _last_epoch(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    epochs = [r for r in records if r.get("split") == "epoch"]
    return epochs[-1] if epochs else None


def run_section(
    run_dir: Path,
    out_dir: Path,
    *,
    prefix: str = "",
    samples: bool = False,
    data_dir: str | None = None,
    device: str = "cpu",
) -> str:
    """The HTML of one run directory; figures are written to ``out_dir`` as ``<prefix>*.png``."""
    parts: list[str] = []
    sub = "h3"
    config_path = run_dir / "config.json"
    config = read_json_object(config_path) if config_path.exists() else {}
    parts.append(f"<{sub}>Configuration</{sub}>")
    data = config.get("data") if isinstance(config.get("data"), dict) else {}
    summary = f"{config.get('model', '?')} on {data.get('name', '?')}"
    summary += f", preset {config['preset']}" if config.get("preset") else ""
    parts.append(
        f"<details><summary>{_esc(summary)} (config.json)</summary>"
        f"<pre>{_esc(json.dumps(config, indent=2, sort_keys=True))}</pre></details>"
    )
    from latentgap.train.provenance import read_provenance

    metrics_path = run_dir / "metrics.jsonl"
    records = read_records(metrics_path) if metrics_path.exists() else []
    eval_path = run_dir / "eval.json"
    metrics = read_json_object(eval_path) if eval_path.exists() else {}
    if metrics or _last_epoch(records):
        where = "eval.json" if metrics else "training"
        parts.append(f"<{sub}>Metrics ({where})</{sub}>")
        parts.append(grouped_metrics(metrics, _last_epoch(records), config))
    provenance = read_provenance(run_dir)
    if provenance:
        parts.append(f"<{sub}>Provenance (provenance.json)</{sub}>")
        parts.append(provenance_table({run_dir.name: provenance}))
    curves = [
        (figures.loss_curves(records, out_dir / f"{prefix}loss.png"), "losses"),
        (figures.vaepp_curves(records, out_dir / f"{prefix}vaepp-prior.png"), "β and log Ẑ"),
        (figures.acceptance_curve(records, out_dir / f"{prefix}acceptance.png"), "acceptance"),
    ]
    curves = [(p, c) for p, c in curves if p is not None]
    if curves:
        parts.append(f"<{sub}>Training curves (metrics.jsonl)</{sub}>")
        parts += [_img(p, c) for p, c in curves]
    existing = sorted(run_dir.glob("samples*.png"))
    grids = [_img(p, f"{p.name} (from training / latentgap sample)") for p in existing]
    notes: list[str] = []
    model = splits = None
    if (run_dir / "checkpoint.pt").exists():
        model, splits, note = _load(run_dir, device, data_dir)
        if note:
            notes.append(note)
    if model is not None and samples:
        for grid in figures.sample_grids(model, out_dir, prefix):
            if grid.path is None:
                notes.append(f"sampler {grid.sampler}: {grid.error}")
                continue
            caption = f"sampler {grid.sampler}"
            if grid.acceptance_rate is not None:
                caption += f" (MALA acceptance rate {grid.acceptance_rate:.2f})"
            grids.append(_img(grid.path, caption))
    if grids:
        parts.append(f"<{sub}>Samples</{sub}>")
        parts += grids
    if model is not None and splits is not None:
        path = figures.reconstruction_grid(model, splits.test, out_dir / f"{prefix}recon.png")
        parts.append(f"<{sub}>Reconstructions</{sub}>")
        parts.append(_img(path, "test images (top) and their reconstructions (bottom)"))
    tsne = run_dir / "latent-tsne.png"
    if tsne.exists():
        parts.append(f"<{sub}>Latent space</{sub}>")
        parts.append(_img(tsne, "t-SNE of latent codes (latent-tsne.png)"))
    parts += [f'<p class="note">{_esc(n)}</p>' for n in notes]
    return "\n".join(parts)


def _load(run_dir: Path, device: str, data_dir: str | None):
    """(model, splits, note): the trained model and its data; what failed goes in the note.

    Missing data still gives the model (samples need no dataset), without reconstructions.
    """
    from latentgap.train.run import load_run

    try:
        model, _, splits = load_run(run_dir, device, data_dir)
        return model, splits, ""
    except LatentgapError as err:
        problem = str(err)
    try:
        model, _, _ = load_run(run_dir, device, data_dir, load_data=False)
        return model, None, f"no reconstructions: {problem}"
    except LatentgapError as err:
        return None, None, f"could not load the model: {err}"


def table_section(results: dict[str, Any]) -> str:
    """The reproduced table as HTML: ours beside the paper's, plus skip/failure reasons."""
    from latentgap.reproduce.markdown import table_grid
    from latentgap.reproduce.tables import TABLES

    if results.get("table") not in TABLES:
        return f"<p>(table {_esc(results.get('table'))} is not known to this version)</p>"
    header, rows, notes = table_grid(results, TABLES.get(results["table"]))
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_esc(v)}</td>" for v in row) + "</tr>" for row in rows)
    parts = [f"<table><tr>{head}</tr>{body}</table>"]
    if notes:
        parts.append("<ol>" + "".join(f"<li>{_esc(n)}</li>" for n in notes) + "</ol>")
    machine = results.get("machine", {})
    parts.append(
        f"<p>Budget <b>{_esc(results.get('budget'))}</b>: "
        f"{_esc(results.get('budget_description', ''))}<br>Machine: {_esc(machine.get('cpu'))}, "
        f"{_esc(machine.get('cores'))} cores, torch {_esc(machine.get('torch'))}, device "
        f"{_esc(machine.get('device'))}; wall time {_esc(results.get('wall_s'))} s</p>"
    )
    return "\n".join(parts)


def _table_runs(directory: Path, results: dict[str, Any]) -> list[str]:
    """The run keys of a ``results.json`` whose folders hold a run; ConfigError for a
    malformed file or a key that points outside ``directory``."""
    for section in ("runs", "cells", "machine"):
        entries = results.get(section, {})
        if not isinstance(entries, dict) or (
            section != "machine" and not all(isinstance(v, dict) for v in entries.values())
        ):
            raise ConfigError(
                f"{directory / 'results.json'}: {section!r} is not an object of objects; "
                "rerun latentgap reproduce to rewrite it"
            )
    keys = [
        k for k in results.get("runs", {}) if (run_key_dir(directory, k) / "config.json").exists()
    ]
    for key in keys:
        read_json_object(run_key_dir(directory, key) / "config.json")
    return keys


def _short_label(run_dir: Path, labels: set[str]) -> str:
    name = run_dir.resolve().name
    return name if name not in labels else str(run_dir)


def comparison_sections(run_dirs: list[Path], out_dir: Path, **options) -> tuple[str, list[str]]:
    """(title, HTML parts) of a side-by-side comparison of ``run_dirs``."""
    from latentgap.report.metrics import group_metrics
    from latentgap.train.provenance import read_provenance

    labels: list[str] = []
    for run_dir in run_dirs:
        labels.append(_short_label(run_dir, set(labels)))
    configs, records, metrics = {}, {}, {}
    for label, run_dir in zip(labels, run_dirs, strict=True):
        if not (run_dir / "config.json").exists():
            raise ConfigError(f"{run_dir} holds no config.json; compare run directories only")
        configs[label] = read_json_object(run_dir / "config.json")
        path = run_dir / "metrics.jsonl"
        records[label] = read_records(path) if path.exists() else []
        path = run_dir / "eval.json"
        metrics[label] = read_json_object(path) if path.exists() else {}
    title = f"Comparison of {len(run_dirs)} runs"
    parts = [f"<h1>{_esc(title)}</h1>", "<h2>Runs</h2>"]
    head = "".join(f"<th>{_esc(label)}</th>" for label in labels)
    rows = ""
    for name, get in (
        ("model", lambda c: c.get("model")),
        ("dataset", lambda c: c.get("data", {}).get("name")),
        ("preset", lambda c: c.get("preset") or ""),
        ("networks", lambda c: c.get("model_options", {}).get("arch", "mlp")),
        ("latent dim", lambda c: c.get("model_options", {}).get("latent_dim", "")),
        ("epochs", lambda c: c.get("train", {}).get("epochs")),
        ("batch size", lambda c: c.get("train", {}).get("batch_size")),
        ("seed", lambda c: c.get("train", {}).get("seed")),
    ):
        cells = "".join(f"<td>{_esc(get(configs[label]))}</td>" for label in labels)
        rows += f"<tr><td>{_esc(name)}</td>{cells}</tr>"
    parts.append(f"<table><tr><th></th>{head}</tr>{rows}</table>")
    # metrics side by side: rows (group, label, unit), a value and its basis per run
    grouped = {
        label: group_metrics(metrics[label], _last_epoch(records[label]), configs[label])
        for label in labels
    }
    order: list[tuple[str, str, str]] = []
    cells: dict[tuple[str, str, str], dict[str, Any]] = {}
    caveats: list[str] = []
    for label in labels:
        for group in grouped[label]:
            for row in group.rows:
                key = (group.title, row.label, row.unit)
                if key not in cells:
                    order.append(key)
                    cells[key] = {}
                cells[key][label] = row
            caveats += [f"{label}: {c}" for c in group.caveats]
    parts.append("<h2>Metrics</h2>")
    if order:
        body, current = "", None
        for key in sorted(order, key=lambda k: [g for g, _, _ in order].index(k[0])):
            if key[0] != current:
                current = key[0]
                body += f'<tr><th colspan="{len(labels) + 2}">{_esc(current)}</th></tr>'
            values = ""
            for label in labels:
                row = cells[key].get(label)
                values += (
                    "<td></td>"
                    if row is None
                    else f'<td>{_esc(row.value)}<br><span class="basis">{_esc(row.basis)}</span></td>'
                )
            body += f"<tr><td>{_esc(key[1])}</td><td>{_esc(key[2])}</td>{values}</tr>"
        parts.append(f"<table><tr><th>metric</th><th>unit</th>{head}</tr>{body}</table>")
        parts += [f'<p class="note">{_esc(c)}</p>' for c in caveats]
    else:
        parts.append("<p>(no run has eval.json or an epoch record)</p>")
    overlay = figures.overlay_curves(
        [(label, records[label]) for label in labels], None, out_dir / "compare-curves.png"
    )
    if overlay is not None:
        parts.append("<h2>Training curves</h2>")
        parts.append(_img(overlay, "training curves of every run, against the optimizer step"))
    grids = [
        _img(run_dir / "samples.png", f"{label}: samples.png")
        for label, run_dir in zip(labels, run_dirs, strict=True)
        if (run_dir / "samples.png").exists()
    ]
    if grids:
        parts.append("<h2>Samples</h2>")
        parts.append('<div class="row">' + "".join(grids) + "</div>")
    parts.append("<h2>Provenance</h2>")
    parts.append(
        provenance_table(
            {label: read_provenance(d) for label, d in zip(labels, run_dirs, strict=True)}
        )
    )
    for i, (label, run_dir) in enumerate(zip(labels, run_dirs, strict=True)):
        parts.append(f'<h2 id="run-{i}">Run {_esc(label)}</h2>')
        parts.append(run_section(run_dir, out_dir, prefix=f"run{i}-", **options))
    return title, parts


def build_report(
    directory: str | Path | list[str | Path],
    out: str | Path | None = None,
    *,
    samples: bool = False,
    data_dir: str | None = None,
    device: str = "cpu",
) -> Path:
    """Write the report of ``directory`` (a run or a reproduced table; a list of several runs
    for a comparison) and return its path.

    ``out`` is the HTML file (or a folder, which gets ``index.html``); default
    ``DIR/report/index.html`` (a comparison: ``report/index.html`` in the current directory).
    Raises :class:`ConfigError` if ``directory`` is neither kind.
    """
    if isinstance(directory, (list, tuple)):
        if len(directory) > 1:
            return _build_comparison([Path(d) for d in directory], out, samples, data_dir, device)
        directory = directory[0]
    directory = Path(directory)
    if not directory.is_dir():
        raise ConfigError(f"{directory} is not a directory")
    out_path = Path(out) if out is not None else directory / "report" / "index.html"
    if out_path.suffix.lower() != ".html":
        out_path = out_path / "index.html"
    out_dir = out_path.parent
    check_output_file(out_path)
    options = {"samples": samples, "data_dir": data_dir, "device": device}
    if (directory / "results.json").exists():
        results = read_json_object(directory / "results.json")
        keys = _table_runs(directory, results)  # all inputs checked before anything is written
        out_dir.mkdir(parents=True, exist_ok=True)
        title = f"{results.get('table')}: {results.get('title', '')}"
        parts = [f"<h1>{_esc(title)}</h1>", f"<p>{_esc(results.get('source', ''))}</p>"]
        parts.append(table_section(results))
        links = "".join(f'<li><a href="#{_esc(k)}">{_esc(k)}</a></li>' for k in keys)
        parts.append(f"<h2>Runs</h2><ul>{links}</ul>" if keys else "")
        for key in keys:
            parts.append(f'<h2 id="{_esc(key)}">Run {_esc(key)}</h2>')
            parts.append(
                run_section(run_key_dir(directory, key), out_dir, prefix=f"{key}-", **options)
            )
    elif (directory / "config.json").exists():
        read_json_object(directory / "config.json")
        out_dir.mkdir(parents=True, exist_ok=True)
        title = f"Run {directory.resolve().name}"
        parts = [f"<h1>{_esc(title)}</h1>", run_section(directory, out_dir, **options)]
    else:
        raise ConfigError(
            f"{directory} holds neither config.json (a run) nor results.json (a reproduced table)"
        )
    return _write_page(out_path, title, parts)


def _write_page(out_path: Path, title: str, parts: list[str]) -> Path:
    from latentgap.train.checkpoint import atomic_write_text

    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_esc(title)}</title><style>{STYLE}</style></head>\n<body>\n"
        + "\n".join([*parts, report_provenance()])
        + "\n</body></html>\n"
    )
    atomic_write_text(out_path, page)
    out_path.chmod(0o644)  # a page to share: readable like the PNGs beside it
    return out_path


def _build_comparison(
    run_dirs: list[Path], out: str | Path | None, samples: bool, data_dir: str | None, device: str
) -> Path:
    for run_dir in run_dirs:
        if not run_dir.is_dir():
            raise ConfigError(f"{run_dir} is not a directory")
    out_path = Path(out) if out is not None else Path("report") / "index.html"
    if out_path.suffix.lower() != ".html":
        out_path = out_path / "index.html"
    check_output_file(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    title, parts = comparison_sections(
        run_dirs, out_path.parent, samples=samples, data_dir=data_dir, device=device
    )
    return _write_page(out_path, title, parts)


__all__ = [
    "build_report",
    "comparison_sections",
    "grouped_metrics",
    "metrics_table",
    "provenance_table",
    "run_section",
    "table_section",
]
