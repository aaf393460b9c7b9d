"""Exports: a trained model that rebuilds without its run directory.

``latentgap export DIR`` writes into ``DIR/export/`` (or ``--out``):

- ``model.safetensors``: the model's weights and buffers (no optimiser state, no code);
- ``config.json``: the run's :class:`~latentgap.config.ExperimentConfig` (model, options,
  dataset, ``imports`` of own code);
- ``export.json``: the data spec the nets were built for (name, shape, kind), the epoch, the
  library and torch versions, the sha256 of the weights;
- ``README.md``: a model card (what, trained on what with which command, metrics of eval.json
  with their sample sizes, how to load it);
- ``eval.json``, ``provenance.json``, ``samples.png``: copies, when the run has them.

Every file is written readable by all (0644): an export is meant to be shared.
:func:`load_export` (and so ``latentgap.load``, ``latentgap sample / evaluate EXPORT``) rebuilds
the model from the first three files only.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import torch

from latentgap.config import ExperimentConfig
from latentgap.data.base import DataSpec
from latentgap.errors import CheckpointError
from latentgap.train.checkpoint import atomic_write_text, export_safetensors, load_safetensors
from latentgap.train.provenance import PROVENANCE, environment, read_provenance

WEIGHTS = "model.safetensors"
MANIFEST = "export.json"
EXPORT_FORMAT = 1
COPIED = ("eval.json", PROVENANCE, "samples.png")


def is_export(path: Path) -> bool:
    """Whether ``path`` is an export folder (weights and manifest, no training checkpoint)."""
    path = Path(path)
    return (path / WEIGHTS).exists() and not (path / "checkpoint.pt").exists()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_export(
    model: torch.nn.Module,
    config: ExperimentConfig,
    spec: DataSpec,
    run_dir: Path,
    out: Path,
    *,
    state: dict[str, Any] | None = None,
) -> dict[str, str]:
    """Write the export of ``model`` (trained in ``run_dir``) into ``out``; returns the paths."""
    out = Path(out)
    weights = export_safetensors(model, config.to_dict(), out)
    copied = []
    for name in COPIED:
        if (Path(run_dir) / name).exists() and Path(run_dir).resolve() != out.resolve():
            shutil.copyfile(Path(run_dir) / name, out / name)
            copied.append(name)
    manifest = {
        "format": "latentgap-export",
        "format_version": EXPORT_FORMAT,
        "model": config.model,
        "spec": {"name": spec.name, "shape": list(spec.shape), "kind": spec.kind},
        "epoch": None if state is None else state.get("epoch"),
        "iteration": None if state is None else state.get("iteration"),
        "weights_sha256": _sha256(weights),
        "exported": environment(),
        "source_run": str(Path(run_dir).resolve()),
    }
    atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    atomic_write_text(out / "README.md", model_card(config, manifest, out))
    for path in out.iterdir():
        if path.is_file():
            path.chmod(0o644)
    out.chmod(0o755)
    paths = {"weights": weights, "config": out / "config.json", "card": out / "README.md"}
    paths.update({name: out / name for name in copied})
    return {k: str(v) for k, v in paths.items()}


def read_manifest(path: Path) -> dict[str, Any]:
    try:
        manifest = json.loads((Path(path) / MANIFEST).read_text())
    except FileNotFoundError:
        raise CheckpointError(
            f"{path} has {WEIGHTS} but no {MANIFEST}; re-export it with 'latentgap export RUN'"
        ) from None
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{Path(path) / MANIFEST} is not valid JSON ({err})") from None
    if manifest.get("format") != "latentgap-export":
        raise CheckpointError(f"{Path(path) / MANIFEST} is not a latentgap export manifest")
    return manifest


def export_spec(path: Path) -> DataSpec:
    s = read_manifest(path)["spec"]
    return DataSpec(s["name"], tuple(s["shape"]), s["kind"])


def load_export_weights(model: torch.nn.Module, path: Path) -> None:
    """Load ``path/model.safetensors`` into ``model`` (CheckpointError on a mismatch)."""
    weights = Path(path) / WEIGHTS
    try:
        load_safetensors(model, weights)
    except CheckpointError:
        raise
    except Exception as err:  # noqa: BLE001 - safetensors raises its own kinds for bad files
        raise CheckpointError(f"cannot read {weights} ({type(err).__name__}: {err})") from None


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def model_card(config: ExperimentConfig, manifest: dict[str, Any], out: Path) -> str:
    """The README.md of an export: a model card in Markdown."""
    from latentgap.plugins import own_modules
    from latentgap.report.html import read_json_object
    from latentgap.report.metrics import group_metrics

    spec = manifest["spec"]
    opts = config.model_options
    prov = read_provenance(out)
    lines = [
        f"# {config.model} on {spec['name']}",
        "",
        "A [latentgap](https://pypi.org/project/latentgap/) model export.",
        "",
        "## Model",
        "",
        f"- model: `{config.model}`" + (f" (preset `{config.preset}`)" if config.preset else ""),
        f"- networks: `{opts.get('arch', 'mlp')}`, latent dimension {opts.get('latent_dim', '?')}",
        f"- data: `{spec['name']}`, images {'×'.join(map(str, spec['shape']))} (C×H×W), "
        f"observations {spec['kind']}",
        f"- trained for {manifest.get('epoch')} epochs ({manifest.get('iteration')} iterations), "
        f"batch size {config.train.batch_size}, learning rate {config.train.lr:g}, "
        f"seed {config.train.seed}",
    ]
    own = own_modules(config)
    if own:
        lines.append(
            "- own code, which must be importable where the model is loaded: "
            + ", ".join(f"`{m}`" for m in own)
        )
    if prov:
        lines += [
            "",
            "## Training",
            "",
            "```bash",
            prov.get("command", "?"),
            "```",
            "",
            f"on {prov.get('host', '?')} ({prov.get('cpu', '?')}, device "
            f"{prov.get('device', '?')}), {prov.get('date', '?')}, latentgap "
            f"{prov.get('latentgap', '?')}, torch {prov.get('torch', '?')}.",
        ]
        for entry in prov.get("resumed", []):
            lines.append(f"Resumed {entry.get('date', '?')}: `{entry.get('command', '?')}`.")
    eval_path = out / "eval.json"
    if eval_path.exists():
        lines += ["", "## Metrics (eval.json)", ""]
        for group in group_metrics(read_json_object(eval_path)):
            lines += [
                f"**{group.title}**",
                "",
                "| metric | value | unit | based on |",
                "|---|---|---|---|",
            ]
            for row in group.rows:
                lines.append(f"| {row.label} | {row.value} | {row.unit} | {row.basis} |")
            lines += [f"> {c}" for c in group.caveats]
            lines.append("")
    exported = manifest["exported"]
    lines += [
        "",
        "## Use",
        "",
        "```python",
        "import latentgap",
        "",
        f'model = latentgap.load("{out.name}")  # this folder',
        "images = model.sample(16)  # (16, C, H, W) in [0, 1]",
        "```",
        "",
        "```bash",
        f"latentgap sample {out.name} --num 64 --out grid.png",
        f"latentgap evaluate {out.name} --nll   # needs the dataset files named in config.json",
        f"latentgap train --init-from {out.name} --out finetuned ...",
        "```",
        "",
        "## Files",
        "",
        f"- `{WEIGHTS}`: weights (sha256 `{manifest['weights_sha256']}`)",
        "- `config.json`: the experiment config; `export.json`: data spec and versions",
        "",
        f"Exported with latentgap {exported['latentgap']}, torch {exported['torch']}, "
        f"{exported['date']}.",
        "",
    ]
    return "\n".join(lines)


def export_run(run_dir: Path, out: Path | None = None) -> dict[str, str]:
    """Export the run in ``run_dir`` into ``out`` (default ``run_dir/export``)."""
    from latentgap.train.checkpoint import load_checkpoint
    from latentgap.train.run import load_run, spec_from_state
    from latentgap.train.trainer import CHECKPOINT

    run_dir = Path(run_dir)
    if is_export(run_dir):
        raise CheckpointError(f"{run_dir} is already an export; export the run it came from")
    model, config, _ = load_run(run_dir, "cpu", load_data=False)
    state = load_checkpoint(run_dir / CHECKPOINT)
    spec = spec_from_state(state, run_dir)
    return write_export(model, config, spec, run_dir, out or run_dir / "export", state=state)
