"""Runs as directories: create (never overwriting unasked), train, resume, load for evaluation.

A run directory holds ``config.json`` (the :class:`ExperimentConfig`), ``checkpoint.pt``,
``metrics.jsonl``, ``samples.png`` (+ ``samples/``) and, after evaluation, ``eval.json``; while a
process trains into it, ``.lock`` is locked by that process (:mod:`latentgap.train.rundir`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from latentgap.config import ExperimentConfig
from latentgap.data import DataSpec, Splits, absolute_dataset_name, get_dataset
from latentgap.distributed import DistContext, barrier, init_distributed, resolve_device
from latentgap.errors import CheckpointError, ConfigError, DataError, LatentgapError
from latentgap.models import GenerativeModel, build_model
from latentgap.train.checkpoint import (
    RESUME_FIELDS,
    atomic_write_text,
    check_state,
    load_checkpoint,
    load_model_state,
)
from latentgap.train.rundir import (
    RUN_FILES,
    RunLock,
    check_output_dir,
    clear_run,
    existing_run_files,
    is_run_config,
    remove_stale_temp_files,
)
from latentgap.train.trainer import CHECKPOINT, Trainer

DEVICE_PATTERN = re.compile(r"cuda(?::(\d+))?")


def check_device(device: str) -> None:
    """ConfigError unless ``device`` names a device this machine has (cpu, cuda[:N], mps)."""
    if device == "cpu":
        return
    if device == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ConfigError(
                "--device mps asked for, but this machine has no MPS (Apple GPU) device; "
                "use --device cpu"
            )
        return
    match = DEVICE_PATTERN.fullmatch(device) if isinstance(device, str) else None
    if match is None:
        raise ConfigError(f"unknown device {device!r}; use cpu, cuda, cuda:N or mps")
    if not torch.cuda.is_available():
        raise ConfigError(
            f"--device {device} asked for, but no CUDA device is available; use --device cpu"
        )
    count = torch.cuda.device_count()
    if match.group(1) is not None and int(match.group(1)) >= count:
        raise ConfigError(
            f"--device {device}: this machine has {count} CUDA device(s), cuda:0 to "
            f"cuda:{count - 1}"
        )


def load_splits(config: ExperimentConfig, data_dir: str | None = None) -> Splits:
    from latentgap.plugins import import_modules

    import_modules(config.imports)
    splits = get_dataset(config.data.name, data_dir=data_dir, **config.data.options)
    return splits.limit(config.data.limit_train, config.data.limit_test)


def check_run_dir(out: Path, *, resume: bool, force: bool) -> None:
    """Whether a run may be written to ``out`` (creates and deletes nothing): refuse to
    overwrite an existing run unless ``force``; ``resume`` needs a checkpoint."""
    out = Path(out)
    if resume and force:
        raise ConfigError("--resume and --force contradict each other; pick one")
    check_output_dir(out)
    if resume:
        if not (out / CHECKPOINT).exists():
            raise CheckpointError(
                f"nothing to resume: {out / CHECKPOINT} does not exist; drop --resume"
            )
        return
    existing = existing_run_files(out)
    if existing and not force:
        raise ConfigError(
            f"run directory {out} already holds a run ({', '.join(existing)}); "
            "pass --resume to continue it or --force to overwrite it"
        )
    config = out / "config.json"
    if force and config.exists() and not is_run_config(config):
        raise ConfigError(
            f"{config} is not a latentgap run config, so --force will not overwrite it; "
            "choose another --out"
        )


def prepare_run_dir(out: Path, *, resume: bool, force: bool) -> None:
    """:func:`check_run_dir`, then create ``out``; ``force`` deletes the old run's files (only
    those latentgap wrote); temporary files of killed writes are removed. Call it holding the
    run's :class:`RunLock`, once the new run is known to start."""
    out = Path(out)
    check_run_dir(out, resume=resume, force=force)
    out.mkdir(parents=True, exist_ok=True)
    if force:
        clear_run(out)
    remove_stale_temp_files(out)


def _on_rank0(ctx: DistContext, fn: Callable[[], Any]) -> None:
    """Run ``fn`` on rank 0 only; if it fails, every rank stops (not only rank 0)."""
    failure: BaseException | None = None
    if ctx.is_main:
        try:
            fn()
        except (LatentgapError, OSError) as err:
            failure = err
    if ctx.any(failure is not None):
        raise failure or ConfigError("rank 0 could not prepare the run directory (see its error)")


def check_training_set(splits: Splits, config: ExperimentConfig, ctx: DistContext) -> None:
    """DataError for a training set too small to train on (empty, or fewer images than ranks)."""
    n = len(splits.train)
    if n == 0:
        raise DataError(
            f"dataset {config.data.name!r} has no training images; check its files "
            f"(`latentgap data verify {config.data.name}`)"
        )
    if n < ctx.world_size:
        raise DataError(
            f"{n} training image(s) for {ctx.world_size} processes; raise --limit-train or "
            "use fewer processes"
        )


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
    (default: this process's command line).

    Everything is checked first (device, run directory, checkpoint, data, model, ``init_from``);
    only then is the run directory locked (:class:`RunLock`, held until training ends), the old
    run's files deleted (``force``) and the new config and provenance written."""
    from latentgap.plugins import import_modules
    from latentgap.train.provenance import record_provenance

    out = Path(out)
    import_modules(config.imports)
    config.data.name = absolute_dataset_name(config.data.name)
    check_device(config.train.device)
    ctx = init_distributed(config.train.device)
    _on_rank0(ctx, lambda: check_run_dir(out, resume=resume, force=force))  # fail fast
    state = None
    if resume:
        state = load_checkpoint(out / CHECKPOINT)
        check_state(state, out / CHECKPOINT, RESUME_FIELDS)
        saved = ExperimentConfig.from_dict(state["config"])
        saved.train.epochs = max(saved.train.epochs, config.train.epochs)
        for name in ("device", "progress", "precision", "compile", "channels_last"):
            setattr(saved.train, name, getattr(config.train, name))  # how, not what, to train
        if config.train.loggers:  # trackers asked for on resume join the saved ones
            both = (*saved.train.loggers, *config.train.loggers)
            saved.train.loggers = tuple(dict.fromkeys(both))
        config = saved
    splits = load_splits(config, data_dir)
    check_training_set(splits, config, ctx)
    torch.manual_seed(config.train.seed)
    model = build_model(config.model, config.model_options, splits.spec)
    if state is None:  # a new run pins today's defaults (see GenerativeModel.resolved_options)
        config.model_options = model.resolved_options()
    if config.train.compile and model.compile_unsupported:
        raise ConfigError(
            f"--compile does not work with model {config.model!r}: "
            f"{model.compile_unsupported}; drop --compile"
        )
    if config.train.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise ConfigError(  # MetricsLog's own check would come after --force cleared the run
            "--tensorboard needs the tensorboard package: pip install 'latentgap[tensorboard]'"
        )
    model.phases(config.train.epochs)  # a plan the epochs cannot hold fails before the run dir
    device = resolve_device(config.train.device, ctx)
    if state is None and config.init_from:
        init_weights(model, config.init_from)
    with contextlib.ExitStack() as stack:

        def start() -> None:  # everything is validated: only now touch the run directory
            stack.enter_context(RunLock(out))
            prepare_run_dir(out, resume=resume, force=force)
            if state is None:
                from latentgap.train.loggers import IDS_FILE

                (out / IDS_FILE).unlink(missing_ok=True)  # a new run is a new tracker run
                config.save(out / "config.json")
            record_provenance(out, command=command, device=str(device), resumed=state is not None)

        _on_rank0(ctx, start)
        barrier()
        trainer = Trainer(model, config, splits, out, device, ctx)
        if state is not None:
            trainer.load_state_dict(state, out / CHECKPOINT)
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
            check_state(state, source / CHECKPOINT, ("model",))
            load_model_state(model, state["model"], source / CHECKPOINT)
    except CheckpointError as err:
        raise CheckpointError(
            f"--init-from {source}: {err} (the model options must match the source's)"
        ) from None


def load_run(
    run_dir: Path,
    device: str = "cpu",
    data_dir: str | None = None,
    load_data: bool = True,
    data: dict[str, Any] | None = None,
) -> tuple[GenerativeModel, ExperimentConfig, Splits | None]:
    """The trained model of ``run_dir`` (weights from its checkpoint, or from
    ``model.safetensors`` for an export folder), its config and (``load_data``) its data.

    ``data`` overrides fields of the run's data config (e.g. ``{"limit_train": None}``: the
    whole training set, whatever the run was trained on); the returned config has them."""
    from latentgap.plugins import import_modules
    from latentgap.train.export import export_spec, is_export, load_export_weights

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"run directory {run_dir} does not exist")
    check_device(device)
    config = ExperimentConfig.load(run_dir / "config.json")
    if data:
        config.data = dataclasses.replace(config.data, **data)
    import_modules(config.imports)
    if is_export(run_dir):
        splits = load_splits(config, data_dir) if load_data else None
        model = build_model(config.model, config.model_options, export_spec(run_dir))
        load_export_weights(model, run_dir)
        model.to(device).eval()
        return model, config, splits
    state = load_checkpoint(run_dir / CHECKPOINT, map_location=device)
    check_state(state, run_dir / CHECKPOINT, ("model",))
    splits = load_splits(config, data_dir) if load_data else None
    spec = splits.spec if splits is not None else spec_from_state(state, run_dir)
    model = build_model(config.model, config.model_options, spec)
    load_model_state(model, state["model"], run_dir / CHECKPOINT)
    if splits is not None:
        model.attach_training_set(splits.train)
    model.to(device).eval()
    return model, config, splits


def spec_from_state(state: dict, source: Path) -> DataSpec:
    """The data spec recorded in a checkpoint (so sampling needs no dataset files)."""
    try:
        s = state["spec"]
        return DataSpec(s["name"], tuple(s["shape"]), s["kind"])
    except (KeyError, TypeError):
        raise CheckpointError(f"{source} records no data spec; it predates this version") from None


def finite_or_none(value: Any, path: str = "") -> tuple[Any, list[str]]:
    """``value`` with every NaN/Inf float (also nested in lists and dicts) replaced by None, and
    the dotted paths of those replaced: JSON has no NaN."""
    if isinstance(value, float) and not math.isfinite(value):
        return None, [path]
    if isinstance(value, dict):
        out, bad = {}, []
        for k, v in value.items():
            out[k], b = finite_or_none(v, f"{path}.{k}" if path else str(k))
            bad += b
        return out, bad
    if isinstance(value, (list, tuple)):
        items = [finite_or_none(v, f"{path}[{i}]") for i, v in enumerate(value)]
        return [v for v, _ in items], [p for _, b in items for p in b]
    return value, []


def update_eval_json(run_dir: Path, results: dict[str, Any]) -> dict[str, Any]:
    """Merge ``results`` into ``DIR/eval.json`` (written atomically, valid JSON: non-finite
    numbers become null) and return the merged dict."""
    path = run_dir / "eval.json"
    merged: dict[str, Any] = {}
    if path.exists():
        try:
            merged = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            merged = {}
        if not isinstance(merged, dict):
            merged = {}
    merged.update(results)
    merged, _ = finite_or_none(merged)
    text = json.dumps(merged, indent=2, sort_keys=True, allow_nan=False)
    atomic_write_text(path, text + "\n")
    return merged


__all__ = [
    "RUN_FILES",
    "DistContext",
    "check_device",
    "check_run_dir",
    "finite_or_none",
    "TrainResult",
    "init_weights",
    "load_run",
    "load_splits",
    "prepare_run_dir",
    "train",
    "update_eval_json",
]
