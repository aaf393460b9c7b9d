"""The "full budget plan" of the GPU check: how many GPU hours ``latentgap reproduce TABLE
--budget full`` would take, from measured training throughput.

Every run of every table (:data:`latentgap.reproduce.tables.TABLES`) is configured exactly as
``reproduce`` configures it (:func:`latentgap.reproduce.harness.build_config` with the ``full``
budget). Runs whose training iterations cost the same share one *timing key*, so each distinct
configuration is timed once (``bench/gpu_jobs.py``, job ``plan``). The key leaves out only
options that do not change an iteration's work (evaluation and sampling settings, phase lengths,
β's bound) and the latent size, which changes an iteration's counted FLOPs by 1.3 % (the
``vaepp-mnist`` ResNet nets, z = 13 → 128) and 0.7 % (the RAE nets, z = 16 → 128), counted with
``bench/models.py``'s FlopCount.

A run's projected hours are Σ over its phases of (phase epochs × training images ÷ the measured
images/s of that phase): training iterations only. Per-epoch extras (test loss, sample grid,
AIS log Z, checkpoint) are measured for ``vaepp-mnist`` alone and reported beside the plan.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

# What the timing jobs need to know of a dataset without reading its files: image shape, how
# observations are served, and the size of the training split the trainer iterates over.
DATASET_SHAPES: dict[str, dict[str, Any]] = {
    "mnist": {"shape": (1, 28, 28), "train": 60_000, "binary": "dynamic"},
    "fashion-mnist": {"shape": (1, 28, 28), "train": 60_000, "binary": "dynamic"},
    "static-mnist": {"shape": (1, 28, 28), "train": 50_000, "binary": "fixed"},
    "omniglot": {"shape": (1, 28, 28), "train": 24_345, "binary": "dynamic"},
    "cifar10": {"shape": (3, 32, 32), "train": 50_000, "binary": None},
    "celeba": {"shape": (3, 64, 64), "train": 162_770, "binary": None},
}

# model options that change nothing in a training iteration's work (see the module docstring)
NOT_IN_TIMING_KEY = frozenset(
    {
        "latent_dim",
        "beta_bound",
        "gan_epochs",
        "stage2_epochs",
        "gan_lr",
        "mala_steps",
        "mala_step_size",
        "ais_chains",
        "ais_temps",
        "ais_leapfrog",
        "epoch_ais_chains",
        "epoch_ais_temps",
        "eval_logz",
        "eval_logz_samples",
        "eval_logz_passes",
    }
)


def data_layout(name: str, options: dict[str, Any]) -> tuple[tuple[int, int, int], str, str]:
    """(shape, observation kind, binarisation) of dataset ``name`` with ``options``, as its
    loader would serve it: ``binary``/``dynamic`` (MNIST-like with binarize=True),
    ``binary``/``none`` (static MNIST), ``continuous``/``none`` or ``discrete8``/``none``."""
    if name not in DATASET_SHAPES:
        raise KeyError(f"dataset {name!r} is not in DATASET_SHAPES; add its shape and size")
    info = DATASET_SHAPES[name]
    if info["binary"] is None:
        return info["shape"], "discrete8", "none"
    if info["binary"] == "fixed":
        return info["shape"], "binary", "none"
    if options.get("binarize", True):
        return info["shape"], "binary", "dynamic"
    return info["shape"], "continuous", "none"


def timing_key(config, model_options: dict[str, Any]) -> str:
    """Runs with the same key cost the same per training image (module docstring);
    ``model_options``: the model's complete options, defaults filled in."""
    shape, kind, binarize = data_layout(config.data.name, config.data.options)
    options = {k: v for k, v in model_options.items() if k not in NOT_IN_TIMING_KEY}
    return json.dumps(
        {
            "model": config.model,
            "model_options": options,
            "shape": list(shape),
            "kind": kind,
            "binarize": binarize,
            "batch_size": config.train.batch_size,
        },
        sort_keys=True,
    )


def phase_epochs(phases, epochs: int) -> list[tuple[str, int]]:
    """(phase name, epochs it runs) for a run of ``epochs`` epochs, as the trainer's
    ``phase_at`` assigns them (the last phase takes what is left)."""
    out, used = [], 0
    for i, phase in enumerate(phases):
        if phase.epochs is None or i == len(phases) - 1:
            n = epochs - used
        else:
            n = min(phase.epochs, epochs - used)
        out.append((phase.name, max(n, 0)))
        used += max(n, 0)
    return out


@dataclass
class PlannedRun:
    table: str
    key: str  # the run's key in the table (its run directory)
    preset: str
    model: str
    dataset: str
    epochs: int
    batch_size: int
    train_images: int
    phases: list[tuple[str, int]]
    timing_key: str


def planned_runs() -> list[PlannedRun]:
    """Every run of every table under ``--budget full``, VAEPP tables first (the issue's
    target), each run once per table."""
    import torch

    import latentgap.models  # noqa: F401  (registers the models and their presets)
    from latentgap.config import to_plain
    from latentgap.data.base import DataSpec
    from latentgap.models import build_model
    from latentgap.reproduce.harness import build_config
    from latentgap.reproduce.tables import BUDGETS, TABLES

    runs: list[PlannedRun] = []
    names = sorted(TABLES.names(), key=lambda n: (not n.startswith("vaepp"), n))
    for name in names:
        seen: set[str] = set()
        for cell in TABLES.get(name).cells:
            if cell.run.key in seen:
                continue
            seen.add(cell.run.key)
            config = build_config(cell.run, BUDGETS["full"])
            shape, kind, _ = data_layout(config.data.name, config.data.options)
            with torch.device("meta"):  # phases and options only: no weights needed
                model = build_model(
                    config.model, config.model_options, DataSpec("plan", shape, kind)
                )
            runs.append(
                PlannedRun(
                    table=name,
                    key=cell.run.key,
                    preset=cell.run.full.preset,
                    model=config.model,
                    dataset=config.data.name,
                    epochs=config.train.epochs,
                    batch_size=config.train.batch_size,
                    train_images=DATASET_SHAPES[config.data.name]["train"],
                    phases=phase_epochs(model.phases(config.train.epochs), config.train.epochs),
                    timing_key=timing_key(config, to_plain(model.config)),
                )
            )
    return runs


def config_ids(runs: list[PlannedRun], first: str | None = None) -> dict[str, str]:
    """Timing key → the id of the configuration, "table/run" of the first run that has it, in
    table order except that preset ``first``'s run comes before all others."""
    ids: dict[str, str] = {}
    for run in sorted(runs, key=lambda r: r.preset != first):  # stable: else table order
        ids.setdefault(run.timing_key, f"{run.table}/{run.key}")
    return ids


def distinct_configs(runs: list[PlannedRun], first: str | None = None) -> list[dict[str, Any]]:
    """One entry per timing key, in :func:`config_ids` order: its id, table and run (for the
    timing job to rebuild), the key itself and how many runs share it."""
    ids = config_ids(runs, first)
    return [
        {
            "id": cid,
            "table": cid.split("/", 1)[0],
            "run": cid.split("/", 1)[1],
            "timing_key": json.loads(key),
            "runs": sum(r.timing_key == key for r in runs),
        }
        for key, cid in ids.items()
    ]


def project(
    runs: list[PlannedRun], timings: dict[str, dict[str, Any]], first: str | None = None
) -> dict[str, Any]:
    """GPU hours per run and per table from ``timings`` (configuration id → {"phases": {phase
    name: {"images_per_s": ...} or {"error": ...}}} or {"not_measured": reason})."""
    ids = config_ids(runs, first)
    tables: dict[str, dict[str, Any]] = {}
    for run in runs:
        timed_as = ids[run.timing_key]
        timing = timings.get(timed_as, {"not_measured": "no timing job reached it"})
        row: dict[str, Any] = {
            "run": run.key,
            "timed_as": timed_as,
            "preset": run.preset,
            "model": run.model,
            "dataset": run.dataset,
            "epochs": run.epochs,
            "batch_size": run.batch_size,
            "train_images": run.train_images,
            "phases": [{"phase": p, "epochs": n} for p, n in run.phases],
        }
        hours, missing = 0.0, []
        for entry in row["phases"]:
            measured = timing.get("phases", {}).get(entry["phase"], {})
            rate = measured.get("images_per_s")
            if entry["epochs"] == 0:
                entry["hours"] = 0.0
            elif rate:
                entry["images_per_s"] = rate
                entry["hours"] = entry["epochs"] * run.train_images / rate / 3600
                hours += entry["hours"]
            else:
                reason = measured.get("error") or timing.get("not_measured") or "not measured"
                entry["not_measured"] = reason
                missing.append(entry["phase"])
        row["gpu_hours"] = None if missing else hours
        if missing:
            row["not_measured"] = f"phase(s) {', '.join(missing)} not measured"
        table = tables.setdefault(run.table, {"runs": [], "gpu_hours_measured_runs": 0.0})
        table["runs"].append(row)
        if row["gpu_hours"] is not None:
            table["gpu_hours_measured_runs"] += row["gpu_hours"]
    for table in tables.values():
        unmeasured = [r["run"] for r in table["runs"] if r["gpu_hours"] is None]
        table["complete"] = not unmeasured
        table["gpu_hours"] = table["gpu_hours_measured_runs"] if not unmeasured else None
        table["runs_not_measured"] = unmeasured
    return tables
