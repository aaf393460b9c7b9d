"""Runs as directories: create (never overwriting unasked), train, resume, load for evaluation.

A run directory holds ``config.json`` (the :class:`ExperimentConfig`), ``checkpoint.pt``,
``metrics.jsonl``, ``samples.png`` (+ ``samples/``) and, after evaluation, ``eval.json``.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from latentgap.config import ExperimentConfig
from latentgap.data import DataSpec, Splits, absolute_dataset_name, get_dataset
from latentgap.distributed import DistContext, barrier, init_distributed, resolve_device
from latentgap.errors import CheckpointError, ConfigError, LatentgapError
from latentgap.models import GenerativeModel, build_model
from latentgap.train.checkpoint import atomic_write_text, load_checkpoint, load_model_state
from latentgap.train.trainer import CHECKPOINT, Trainer

RUN_FILES = ("config.json", CHECKPOINT, "metrics.jsonl", "samples.png", "eval.json")
RUN_DIRS = ("samples", "tensorboard", "export")


def check_device(device: str) -> None:
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            "--device cuda asked for, but no CUDA device is available; use --device cpu"
        )
    if device not in ("cpu", "cuda", "mps") and not device.startswith("cuda:"):
        raise ConfigError(f"unknown device {device!r}; use cpu, cuda or cuda:N")


def load_splits(config: ExperimentConfig, data_dir: str | None = None) -> Splits:
    from latentgap.plugins import import_modules

    import_modules(config.imports)
    splits = get_dataset(config.data.name, data_dir=data_dir, **config.data.options)
    return splits.limit(config.data.limit_train, config.data.limit_test)


def prepare_run_dir(out: Path, *, resume: bool, force: bool) -> None:
    """Refuse to overwrite an existing run unless ``force``; ``resume`` needs a checkpoint."""
    out = Path(out)
    if resume and force:
        raise ConfigError("--resume and --force contradict each other; pick one")
    existing = [f for f in RUN_FILES if (out / f).exists()]
    if resume:
        if not (out / CHECKPOINT).exists():
            raise CheckpointError(
                f"nothing to resume: {out / CHECKPOINT} does not exist; drop --resume"
            )
        return
    if existing and not force:
        raise ConfigError(
            f"run directory {out} already holds a run ({', '.join(existing)}); "
            "pass --resume to continue it or --force to overwrite it"
        )
    if existing and force:
        for name in RUN_FILES:
            (out / name).unlink(missing_ok=True)
        for name in RUN_DIRS:
            shutil.rmtree(out / name, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)


@dataclass
class TrainResult:
    out_dir: Path
    record: dict
    model: GenerativeModel
    config: ExperimentConfig
    is_main: bool = True  # False on the other ranks of a torchrun job (they print nothing)


def train(
    config: ExperimentConfig,
    out: Path,
    *,
    resume: bool = False,
    force: bool = False,
    data_dir: str | None = None,
    command: str | None = None,
) -> TrainResult:
    """Train (or resume) the run in ``out``. On resume the saved config wins, except that
    ``config.train.epochs`` may extend it. ``command`` is recorded in ``provenance.json``
    (default: this process's command line)."""
    from latentgap.plugins import import_modules
    from latentgap.train.provenance import record_provenance

    out = Path(out)
    import_modules(config.imports)
    config.data.name = absolute_dataset_name(config.data.name)
    check_device(config.train.device)
    ctx = init_distributed(config.train.device)
    failure: LatentgapError | None = None
    if ctx.is_main:
        try:
            prepare_run_dir(out, resume=resume, force=force)
        except LatentgapError as err:
            failure = err
    if ctx.any(failure is not None):  # every rank stops, not only rank 0
        raise failure or ConfigError("rank 0 could not prepare the run directory (see its error)")
    barrier()
    state = None
    if resume:
        state = load_checkpoint(out / CHECKPOINT)
        saved = ExperimentConfig.from_dict(state["config"])
        saved.train.epochs = max(saved.train.epochs, config.train.epochs)
        for name in ("device", "progress", "precision", "compile", "channels_last"):
            setattr(saved.train, name, getattr(config.train, name))  # how, not what, to train
        if config.train.loggers:  # trackers asked for on resume join the saved ones
            both = (*saved.train.loggers, *config.train.loggers)
            saved.train.loggers = tuple(dict.fromkeys(both))
        config = saved
    splits = load_splits(config, data_dir)
    torch.manual_seed(config.train.seed)
    model = build_model(config.model, config.model_options, splits.spec)
    device = resolve_device(config.train.device, ctx)
    if state is None and config.init_from:
        init_weights(model, config.init_from)
    if state is None and ctx.is_main:  # a new run is a new tracker run, also under --force
        from latentgap.train.loggers import IDS_FILE

        (out / IDS_FILE).unlink(missing_ok=True)
    trainer = Trainer(model, config, splits, out, device, ctx)
    if state is not None:
        trainer.load_state_dict(state, out / CHECKPOINT)
    elif ctx.is_main:
        config.save(out / "config.json")
    if ctx.is_main:
        record_provenance(out, command=command, device=str(device), resumed=state is not None)
    record = trainer.fit()
    return TrainResult(out, record, trainer.model, config, ctx.is_main)


def init_weights(model: GenerativeModel, source: str | Path) -> None:
    """Load the weights of a run (its checkpoint) or an export into ``model`` (``--init-from``)."""
    from latentgap.train.export import is_export, load_export_weights

    source = Path(source)
    if not source.is_dir():
        raise CheckpointError(f"--init-from {source}: no such run or export directory")
    try:
        if is_export(source):
            load_export_weights(model, source)
        else:
            state = load_checkpoint(source / CHECKPOINT)
            load_model_state(model, state["model"], source / CHECKPOINT)
    except CheckpointError as err:
        raise CheckpointError(
            f"--init-from {source}: {err} (the model options must match the source's)"
        ) from None


def load_run(
    run_dir: Path, device: str = "cpu", data_dir: str | None = None, load_data: bool = True
) -> tuple[GenerativeModel, ExperimentConfig, Splits | None]:
    """The trained model of ``run_dir`` (weights from its checkpoint, or from
    ``model.safetensors`` for an export folder), its config and (``load_data``) its data."""
    from latentgap.plugins import import_modules
    from latentgap.train.export import export_spec, is_export, load_export_weights

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"run directory {run_dir} does not exist")
    check_device(device)
    config = ExperimentConfig.load(run_dir / "config.json")
    import_modules(config.imports)
    if is_export(run_dir):
        splits = load_splits(config, data_dir) if load_data else None
        model = build_model(config.model, config.model_options, export_spec(run_dir))
        load_export_weights(model, run_dir)
        model.to(device).eval()
        return model, config, splits
    state = load_checkpoint(run_dir / CHECKPOINT, map_location=device)
    splits = load_splits(config, data_dir) if load_data else None
    spec = splits.spec if splits is not None else spec_from_state(state, run_dir)
    model = build_model(config.model, config.model_options, spec)
    load_model_state(model, state["model"], run_dir / CHECKPOINT)
    model.to(device).eval()
    return model, config, splits


def spec_from_state(state: dict, source: Path) -> DataSpec:
    """The data spec recorded in a checkpoint (so sampling needs no dataset files)."""
    try:
        s = state["spec"]
        return DataSpec(s["name"], tuple(s["shape"]), s["kind"])
    except (KeyError, TypeError):
        raise CheckpointError(f"{source} records no data spec; it predates this version") from None


def update_eval_json(run_dir: Path, results: dict[str, Any]) -> dict[str, Any]:
    """Merge ``results`` into ``DIR/eval.json`` (written atomically) and return the merged dict."""
    path = run_dir / "eval.json"
    merged: dict[str, Any] = {}
    if path.exists():
        try:
            merged = json.loads(path.read_text())
        except json.JSONDecodeError:
            merged = {}
    merged.update(results)
    atomic_write_text(path, json.dumps(merged, indent=2, sort_keys=True) + "\n")
    return merged


__all__ = [
    "DistContext",
    "TrainResult",
    "init_weights",
    "load_run",
    "load_splits",
    "prepare_run_dir",
    "train",
    "update_eval_json",
]
