"""``latentgap report DIR``: one HTML page for a run directory or a reproduced table.

The page (default ``DIR/report/index.html``) is self-contained: every figure is embedded as a
base64 ``data:`` URI, so the file can be mailed or archived alone. The same figures are also
written as PNG files beside it (``DIR/report/*.png``) for use elsewhere.

A run directory (``config.json``) gives: its config, the metrics of ``eval.json``, loss curves,
β and log Ẑ curves (VAEPP), acceptance rates if logged, the sample grids already in the folder
(``samples*.png``), fresh grids per sampler (``samples=True``), reconstructions of a few test
images and ``latent-tsne.png`` if present. A table directory (``results.json`` from
``latentgap reproduce``) gives the table, ours beside the paper's, then a section per run.
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
.note { color: #8a5300; font-size: 0.9em; }
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
    eval_path = run_dir / "eval.json"
    if eval_path.exists():
        parts.append(f"<{sub}>Metrics (eval.json)</{sub}>")
        parts.append(metrics_table(read_json_object(eval_path)))
    metrics = run_dir / "metrics.jsonl"
    records = read_records(metrics) if metrics.exists() else []
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


def build_report(
    directory: str | Path,
    out: str | Path | None = None,
    *,
    samples: bool = False,
    data_dir: str | None = None,
    device: str = "cpu",
) -> Path:
    """Write the report of ``directory`` (a run or a reproduced table) and return its path.

    ``out`` is the HTML file (or a folder, which gets ``index.html``); default
    ``DIR/report/index.html``. Raises :class:`ConfigError` if ``directory`` is neither kind.
    """
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
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_esc(title)}</title><style>{STYLE}</style></head>\n<body>\n"
        + "\n".join(parts)
        + "\n</body></html>\n"
    )
    from latentgap.train.checkpoint import atomic_write_text

    atomic_write_text(out_path, page)
    out_path.chmod(0o644)  # a page to share: readable like the PNGs beside it
    return out_path


__all__ = ["build_report", "metrics_table", "run_section", "table_section"]
