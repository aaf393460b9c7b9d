"""Experiment configuration: typed dataclasses, written as JSON beside every checkpoint.

An :class:`ExperimentConfig` composes the data options, the model's name and options (validated
by the model's own config dataclass) and the training options. Paper experiments are named
presets (:mod:`latentgap.presets`) that fill these fields.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from latentgap.errors import ConfigError

T = TypeVar("T")


def dataclass_from_dict(cls: type[T], values: dict[str, Any], where: str = "") -> T:
    """Build dataclass ``cls`` from ``values``; unknown keys or values of the wrong type raise
    ConfigError naming the field (``where`` is the dotted path of ``values``, for messages).

    Lists become tuples where the field is annotated as a tuple (JSON has no tuples).
    """
    prefix = f"{where}: " if where else ""
    if not isinstance(values, dict):
        raise ConfigError(f"{where or cls.__name__} must be a section ({{...}}), got {values!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(
            f"{prefix}unknown option(s) {', '.join(map(str, unknown))}; "
            f"valid: {', '.join(sorted(fields))}"
        )
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in values.items():
        path = f"{where}.{key}" if where else key
        check_type(hints.get(key), value, path)
        kwargs[key] = _coerce(hints.get(key), value, path)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{prefix}{err}") from None


_TYPE_NAMES = {
    bool: "true or false",
    int: "an integer",
    float: "a finite number",
    str: "a string",
    dict: "a section ({...})",
    list: "a list",
    tuple: "a list",
}


def _type_ok(hint: Any, value: Any) -> bool | None:
    """Whether ``value`` fits ``hint`` (None: a hint this check does not judge)."""
    if dataclasses.is_dataclass(hint):
        return isinstance(value, (dict, hint))
    base = typing.get_origin(hint) or hint
    if base is bool:
        return isinstance(value, bool)
    if base is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if base is float:  # NaN or ±inf in a config is a mistake, never a setting
        return (
            isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        )
    if base is str:
        return isinstance(value, str)
    if base in (dict, collections.abc.Mapping):
        return isinstance(value, dict)
    if base in (list, tuple, collections.abc.Sequence):
        return isinstance(value, (list, tuple))
    return None


def check_type(hint: Any, value: Any, name: str) -> None:
    """ConfigError unless ``value`` has the type that ``hint`` (a dataclass field's annotation:
    bool, int, float, str, dict, list/tuple, a dataclass, or an Optional/union of them) asks."""
    if hint is None or hint is Any:
        return
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None and len(options) < len(typing.get_args(hint)):
            return
        verdicts = [_type_ok(a, value) for a in options]
        if any(v is None or v for v in verdicts):
            return
        names = [_TYPE_NAMES.get(typing.get_origin(a) or a, "a section ({...})") for a in options]
        if len(options) < len(typing.get_args(hint)):
            names.append("null")
        raise ConfigError(f"{name} must be {' or '.join(names)}, got {value!r}")
    if _type_ok(hint, value) is False:
        expected = _TYPE_NAMES.get(typing.get_origin(hint) or hint, "a section ({...})")
        raise ConfigError(f"{name} must be {expected}, got {value!r}")


def check_fields(obj: Any, where: str = "") -> None:
    """:func:`check_type` on every field of dataclass instance ``obj``."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        check_type(
            hints.get(f.name), getattr(obj, f.name), f"{where}.{f.name}" if where else f.name
        )


def _coerce(hint: Any, value: Any, where: str = "") -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(hint):
            if arg is not type(None) and typing.get_origin(arg) is tuple:
                hint, origin = arg, tuple
                break
    if origin is tuple and isinstance(value, list):
        return tuple(value)
    if dataclasses.is_dataclass(hint) and isinstance(value, dict):
        return dataclass_from_dict(hint, value, where)
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

    def __post_init__(self) -> None:
        check_fields(self, "data")
        for name in ("limit_train", "limit_test"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigError(f"data.{name} must be a positive integer or null, got {value}")


PRECISIONS = ("fp32", "bf16")
SEED_LIMIT = 2**63  # seeds (plus small offsets) must fit torch's 64-bit generator seeds
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
    # stop the first phase when this epoch-record key (e.g. "test_loss") stops improving by more
    # than stop_tolerance (relative) over stop_window epochs; epochs stays the cap
    # (train/convergence.py). None: train for exactly ``epochs``.
    stop_metric: str | None = None
    stop_mode: str = "min"  # "max" for a metric where higher is better (a log-likelihood)
    stop_window: int = 5
    stop_tolerance: float = 1e-3

    def __post_init__(self) -> None:
        check_fields(self, "train")
        for name in ("epochs", "batch_size", "log_every", "checkpoint_every"):
            if getattr(self, name) <= 0:
                raise ConfigError(
                    f"train.{name} must be a positive integer, got {getattr(self, name)}"
                )
        for name in ("sample_every", "eval_batches"):
            if getattr(self, name) < 0:
                raise ConfigError(f"train.{name} must be ≥ 0, got {getattr(self, name)}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"learning rate must be positive and finite, got {self.lr}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ConfigError(f"weight decay must be finite and ≥ 0, got {self.weight_decay}")
        if self.grad_clip is not None and not (
            math.isfinite(self.grad_clip) and self.grad_clip >= 0
        ):
            raise ConfigError(
                f"train.grad_clip must be a finite norm ≥ 0 (0 or null: no clipping), "
                f"got {self.grad_clip}"
            )
        if self.lr_halve_every is not None and self.lr_halve_every <= 0:
            raise ConfigError("lr_halve_every must be a positive number of epochs")
        if not 0 <= self.seed < SEED_LIMIT:
            raise ConfigError(f"seed must be in [0, 2**63), got {self.seed}")
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
        if self.stop_window <= 0:
            raise ConfigError(
                f"train.stop_window must be a positive integer, got {self.stop_window}"
            )
        if not (math.isfinite(self.stop_tolerance) and self.stop_tolerance >= 0):
            raise ConfigError(
                f"train.stop_tolerance must be a finite fraction ≥ 0, got {self.stop_tolerance}"
            )
        if self.stop_mode not in ("min", "max"):
            raise ConfigError(f"train.stop_mode must be 'min' or 'max', got {self.stop_mode!r}")
        if self.stop_metric is not None:
            if not self.stop_metric:
                raise ConfigError("train.stop_metric must name an epoch-record key or be null")
            if self.stop_metric.startswith("test_") and not self.eval_batches:
                raise ConfigError(
                    f"train.stop_metric {self.stop_metric!r} needs the per-epoch test loss; "
                    "set train.eval_batches > 0"
                )
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

    def __post_init__(self) -> None:
        check_fields(self, "config")

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
            values = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise CheckpointError(
                f"no config.json in {Path(path).parent}; is it a run directory?"
            ) from None
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise CheckpointError(
                f"{path} is not valid JSON ({err}); restore it or retrain"
            ) from None
        except OSError as err:
            raise CheckpointError(f"{path} cannot be read ({err.strerror or err})") from None
        try:
            return cls.from_dict(values)
        except ConfigError as err:
            raise CheckpointError(
                f"{path} is not a valid run config ({err}); restore it or retrain"
            ) from None
