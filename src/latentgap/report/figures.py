"""The report's figures: training curves (matplotlib) and image grids (Pillow) as PNG files.

Curves come from ``metrics.jsonl`` records: ``split == "train"`` records every ``log_every``
iterations and ``split == "epoch"`` records (with ``test_*`` terms) at the end of every epoch.
Every function returns the path it wrote, or None when the run logged nothing to plot.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from latentgap.errors import ConfigError, LatentgapError

MAX_PANELS = 6


def pyplot():
    """matplotlib's pyplot on the non-interactive Agg backend; ConfigError if not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError(
            "the report's figures need matplotlib: pip install matplotlib (a dependency of latentgap)"
        ) from None
    return plt


def save_figure(fig, path: Path, dpi: int) -> Path:
    """Write a matplotlib figure atomically (temp file + rename; format from the suffix)."""
    from latentgap.train.checkpoint import atomic_write

    path = Path(path)
    atomic_write(path, lambda f: fig.savefig(f, format=path.suffix.lstrip(".") or "png", dpi=dpi))
    return path


def _series(
    records: Sequence[dict[str, Any]], key: str, split: str, phases: set | None = None
) -> tuple[list, list]:
    """(iterations, values) of ``key`` in the records of ``split`` (and of ``phases``, if
    given), skipping missing or non-finite values."""
    xs, ys = [], []
    for r in records:
        value = r.get(key)
        if phases is not None and r.get("phase") not in phases:
            continue
        if r.get("split") == split and isinstance(value, (int, float)) and math.isfinite(value):
            xs.append(r.get("iteration", len(xs)))
            ys.append(value)
    return xs, ys


def _phase_starts(records: Sequence[dict[str, Any]]) -> list[tuple[int, str]]:
    """(iteration, phase) where each training phase after the first begins."""
    starts: list[tuple[int, str]] = []
    last = None
    for r in records:
        phase = r.get("phase")
        if r.get("split") == "train" and phase is not None and phase != last:
            if last is not None:
                starts.append((r.get("iteration", 0), phase))
            last = phase
    return starts


def _panels(
    records: Sequence[dict[str, Any]], keys: Sequence[str], path: Path, title: str
) -> Path | None:
    """One panel per key: the train series, its ``test_`` twin per epoch, phase boundaries."""
    keys = [k for k in keys if _series(records, k, "train")[0] or _series(records, k, "epoch")[0]]
    if not keys:
        return None
    keys = keys[:MAX_PANELS]
    plt = pyplot()
    cols = min(len(keys), 3)
    rows = -(-len(keys) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    starts = _phase_starts(records)
    first_loss: dict[Any, str] = {}  # phase → its first logged loss (the trainer's test loss)
    for r in records:
        if r.get("split") == "train" and r.get("phase") not in first_loss:
            losses = [k for k in r if k == "loss" or k.endswith("_loss")]
            if losses:
                first_loss[r.get("phase")] = losses[0]
    for ax, key in zip(axes.flat, keys, strict=False):
        xs, ys = _series(records, key, "train")
        if xs:
            ax.plot(xs, ys, lw=1, marker="." if len(xs) < 30 else None, label="train")
        # test_loss is the test value of the phase's first loss: overlay it where that is `key`
        is_loss = key == "loss" or key.endswith("_loss")
        phases = {p for p, k in first_loss.items() if k == key} if is_loss else None
        tx, ty = _series(records, "test_loss" if is_loss else f"test_{key}", "epoch", phases)
        if tx:
            ax.plot(tx, ty, "o-", ms=3, lw=1, label="test (epoch)")
        for it, phase in starts:
            ax.axvline(it, color="0.6", ls="--", lw=0.8)
            ax.text(it, 0.02, f" {phase}", transform=ax.get_xaxis_transform(), fontsize=7)
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("iteration", fontsize=8)
        ax.tick_params(labelsize=7)
        if xs and tx:
            ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(keys) :]:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, path, dpi=90)
    plt.close(fig)
    return path


def loss_curves(records: Sequence[dict[str, Any]], path: Path) -> Path | None:
    """Every logged loss (``loss``, ``*_loss``) and the ELBO, against the iteration."""
    found = {k for r in records for k in r if k in ("loss", "elbo") or k.endswith("_loss")}
    keys = sorted((k for k in found if not k.startswith("test_")), key=lambda k: (k == "elbo", k))
    return _panels(records, keys, path, "training curves")


def vaepp_curves(records: Sequence[dict[str, Any]], path: Path) -> Path | None:
    """VAEPP's β = w·sigmoid(ξ) and training log Ẑ (Algorithm 2, line 5), if logged."""
    return _panels(records, ["beta", "log_z"], path, "pull-back prior: β and log Ẑ")


def acceptance_curve(records: Sequence[dict[str, Any]], path: Path) -> Path | None:
    """MCMC acceptance rates (any term whose name contains ``accept``), if logged."""
    keys = sorted({k for r in records for k in r if "accept" in k and not k.startswith("test_")})
    return _panels(records, keys, path, "acceptance rate")


def curves(records: Sequence[dict[str, Any]], keys: Sequence[str], path: Path) -> Path | None:
    """Any logged terms ``keys`` of one run, one panel each (train and per-epoch test values)."""
    return _panels(records, keys, path, "training curves")


def _x(record: dict[str, Any]) -> Any:
    return record.get("step", record.get("iteration"))


def overlay_curves(
    runs: Sequence[tuple[str, Sequence[dict[str, Any]]]],
    keys: Sequence[str] | None,
    path: Path,
) -> Path | None:
    """Several runs' curves overlaid, one panel per key (default: the losses and the ELBO all
    of them logged), against the optimizer step; dashed lines are per-epoch test values."""
    if keys is None:
        common = None
        for _, records in runs:
            found = {k for r in records for k in r if k in ("loss", "elbo") or k.endswith("_loss")}
            common = found if common is None else common & found
        keys = sorted(
            (k for k in common or () if not k.startswith("test_")), key=lambda k: (k == "elbo", k)
        )
    keys = [k for k in keys if any(_series(r, k, "train")[0] for _, r in runs)][:MAX_PANELS]
    if not keys:
        return None
    plt = pyplot()
    cols = min(len(keys), 3)
    rows = -(-len(keys) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.4 * cols, 3.1 * rows), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, key in zip(axes.flat, keys, strict=False):
        for i, (label, records) in enumerate(runs):
            color = colors[i % len(colors)]
            pts = [(_x(r), r.get(key)) for r in records if r.get("split") == "train"]
            pts = [(x, y) for x, y in pts if isinstance(y, (int, float)) and math.isfinite(y)]
            if pts:
                ax.plot(*zip(*pts, strict=True), lw=1, color=color, label=label)
            test = [(_x(r), r.get(f"test_{key}")) for r in records if r.get("split") == "epoch"]
            test = [(x, y) for x, y in test if isinstance(y, (int, float)) and math.isfinite(y)]
            if test:
                ax.plot(*zip(*test, strict=True), "o--", ms=3, lw=1, color=color)
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("optimizer step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(keys) :]:
        ax.axis("off")
    fig.suptitle("training curves (dashed: test, per epoch)", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path, dpi=90)
    plt.close(fig)
    return path


@dataclass
class SampleGrid:
    """A sampler's grid (``path``), or why there is none (``error``); MALA's acceptance rate."""

    sampler: str
    path: Path | None = None
    error: str = ""
    acceptance_rate: float | None = None


def sample_grids(
    model, out_dir: Path, prefix: str = "", n: int = 64, seed: int = 0
) -> list[SampleGrid]:
    """A grid of ``n`` samples (``<prefix>samples-<sampler>.png``) per sampler of ``model``."""
    from latentgap.train.images import save_image_grid

    made: list[SampleGrid] = []
    for sampler in model.samplers():
        grid = SampleGrid(sampler)
        try:
            g = torch.Generator(device=model.device).manual_seed(seed)
            if hasattr(model, "last_acceptance_rate"):
                del model.last_acceptance_rate
            images = model.sample(n, generator=g, sampler=sampler)  # (n, C, H, W)
            grid.path = save_image_grid(images, out_dir / f"{prefix}samples-{sampler}.png")
            grid.acceptance_rate = getattr(model, "last_acceptance_rate", None)
        except (LatentgapError, RuntimeError, ValueError) as err:
            grid.error = str(err)
        made.append(grid)
    return made


@torch.no_grad()
def reconstruction_grid(model, test, path: Path, n: int = 8) -> Path:
    """Originals (top row) above their reconstructions (bottom row) for ``n`` test images."""
    from latentgap.train.images import save_image_grid

    n = min(n, len(test))
    batch = test.make_batch(torch.arange(n, device=test.device)).to(model.device)
    recon = model.reconstruct(batch).float().cpu()  # (n, C, H, W)
    originals = batch.e.float().cpu()  # the gray images (what binarised pixels are drawn from)
    return save_image_grid(torch.cat([originals, recon]), path, nrow=n)


__all__ = [
    "SampleGrid",
    "acceptance_curve",
    "curves",
    "loss_curves",
    "overlay_curves",
    "pyplot",
    "reconstruction_grid",
    "sample_grids",
    "vaepp_curves",
]
