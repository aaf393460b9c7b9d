"""Experiment configuration: typed dataclasses, written as JSON beside every checkpoint.

An :class:`ExperimentConfig` composes the data options, the model's name and options (validated
by the model's own config dataclass) and the training options. Paper experiments are named
presets (:mod:`latentgap.presets`) that fill these fields.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from latentgap.errors import ConfigError

T = TypeVar("T")


def dataclass_from_dict(cls: type[T], values: dict[str, Any], where: str = "") -> T:
    """Build dataclass ``cls`` from ``values``; unknown keys raise ConfigError listing valid ones.

    Lists become tuples where the field is annotated as a tuple (JSON has no tuples).
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(fields))
    if unknown:
        prefix = f"{where}: " if where else ""
        raise ConfigError(
            f"{prefix}unknown option(s) {', '.join(unknown)}; valid: {', '.join(sorted(fields))}"
        )
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in values.items():
        kwargs[key] = _coerce(hints.get(key), value)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where}: {err}" if where else str(err)) from None


def _coerce(hint: Any, value: Any) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(hint):
            if arg is not type(None) and typing.get_origin(arg) is tuple:
                hint, origin = arg, tuple
                break
    if origin is tuple and isinstance(value, list):
        return tuple(value)
    if dataclasses.is_dataclass(hint) and isinstance(value, dict):
        return dataclass_from_dict(hint, value)
    return value


def to_plain(obj: Any) -> Any:
    """Dataclasses, tuples and paths as JSON-ready plain data."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


@dataclass
class DataConfig:
    """Which dataset, with which options, and how much of it."""

    name: str = "mnist"
    options: dict[str, Any] = field(default_factory=dict)
    limit_train: int | None = None
    limit_test: int | None = None


PRECISIONS = ("fp32", "bf16")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@dataclass
class TrainConfig:
    """Optimisation and bookkeeping options (the trainer's)."""

    epochs: int = 10
    batch_size: int = 100
    lr: float = 1e-3
    weight_decay: float = 0.0
    lr_halve_every: int | None = None  # epochs; None keeps the rate constant
    seed: int = 0
    device: str = "cpu"
    log_every: int = 50  # iterations between metrics.jsonl records
    sample_every: int = 1  # epochs between sample grids (0: only at the end)
    checkpoint_every: int = 1  # epochs between checkpoints (the last epoch always saves)
    eval_batches: int = 10  # test batches for the per-epoch test loss (0: none)
    grad_clip: float | None = None
    tensorboard: bool = False  # the same as "tensorboard" in loggers
    # experiment trackers besides metrics.jsonl: tensorboard, mlflow, wandb (train/loggers.py)
    loggers: tuple[str, ...] = ()
    progress: bool = True
    precision: str = "fp32"  # "bf16": autocast the networks; log-densities and log Z stay fp32
    compile: str | None = None  # torch.compile mode: "default", "reduce-overhead", ...
    channels_last: bool = False  # conv nets in NHWC memory format (GPU tensor cores)

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ConfigError(f"learning rate must be positive, got {self.lr}")
        if self.weight_decay < 0:
            raise ConfigError(f"weight decay must be ≥ 0, got {self.weight_decay}")
        if self.lr_halve_every is not None and self.lr_halve_every <= 0:
            raise ConfigError("lr_halve_every must be a positive number of epochs")
        if self.log_every <= 0:
            raise ConfigError("log_every must be positive")
        if self.precision not in PRECISIONS:
            raise ConfigError(
                f"unknown precision {self.precision!r}; choose one of: {', '.join(PRECISIONS)}"
            )
        if self.channels_last and not self.device.startswith("cuda"):
            raise ConfigError(
                "--channels-last is for CUDA devices: it does not speed up CPU training, and "
                "oneDNN's CPU kernels compute wrong weight gradients for narrow strided 1x1 "
                "convolutions in that layout; drop --channels-last or use --device cuda"
            )
        if self.loggers:
            from latentgap.train.loggers import LOGGERS

            for name in self.loggers:
                LOGGERS.get(name)  # ConfigError listing the valid names
        if self.compile is not None and self.compile not in COMPILE_MODES:
            raise ConfigError(
                f"unknown compile mode {self.compile!r}; choose one of: {', '.join(COMPILE_MODES)}"
            )


@dataclass
class ExperimentConfig:
    """One run: data, model (name + its options) and training."""

    model: str = "vae"
    model_options: dict[str, Any] = field(default_factory=dict)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    preset: str | None = None
    # modules imported before anything is built: own nets, models, datasets (latentgap.plugins)
    imports: tuple[str, ...] = ()
    # a run or export whose weights start this run (fine-tuning); its optimiser state is not used
    init_from: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return to_plain(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ExperimentConfig:
        return dataclass_from_dict(cls, values, where="config")

    def save(self, path: Path) -> None:
        from latentgap.train.checkpoint import atomic_write_text

        atomic_write_text(path, json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: Path) -> ExperimentConfig:
        from latentgap.errors import CheckpointError

        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except FileNotFoundError:
            raise CheckpointError(
                f"no config.json in {Path(path).parent}; is it a run directory?"
            ) from None
        except json.JSONDecodeError as err:
            raise CheckpointError(
                f"{path} is not valid JSON ({err}); restore it or retrain"
            ) from None
