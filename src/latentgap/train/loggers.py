"""Experiment trackers the trainer logs to besides ``metrics.jsonl``: TensorBoard, MLflow, W&B.

A logger implements the small :class:`Logger` interface: scalars at a step, an image (a PNG
file) at a step, the hyperparameters once, files as artifacts, and ``close``. The step is the
optimizer step (every update of every parameter group counts one). Each tracker is an optional
extra, imported only when asked for (``--logger NAME``), with a one-line error naming the pip
extra when it is missing:

- ``tensorboard`` (``pip install 'latentgap[tensorboard]'``): event files in ``DIR/tensorboard``;
  scalars, the sample grids (``add_image``) and the hyperparameters (``add_hparams``).
- ``mlflow`` (``pip install 'latentgap[mlflow]'``): a run in ``$MLFLOW_TRACKING_URI``, default
  a local SQLite store ``DIR/mlflow.db`` with artifacts in ``DIR/mlartifacts`` (MLflow 3 keeps
  its ``mlruns`` file store in maintenance mode); view it with
  ``mlflow ui --backend-store-uri sqlite:///DIR/mlflow.db``. Experiment
  ``$MLFLOW_EXPERIMENT_NAME`` or ``latentgap``; scalars, sample grids, params, artifacts.
- ``wandb`` (``pip install 'latentgap[wandb]'``): a W&B run in ``DIR/wandb``, offline unless
  ``WANDB_MODE`` says otherwise (``wandb sync`` uploads it); project ``$WANDB_PROJECT`` or
  ``latentgap``.

A resumed run continues the same tracker run: the ids are kept in ``DIR/loggers.json``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from latentgap.errors import ConfigError
from latentgap.registry import Registry

IDS_FILE = "loggers.json"


class Logger:
    """The interface; every method is optional to override (the base class does nothing)."""

    name = "logger"

    def log_hparams(self, params: dict[str, Any]) -> None:
        """The run's config, flattened to dotted keys."""

    def log_scalars(self, values: dict[str, float], step: int) -> None:
        """Named scalars (``train/loss``, ``epoch/test_elbo``, ...) at optimizer step ``step``."""

    def log_image(self, name: str, path: Path, step: int) -> None:
        """The PNG at ``path`` (e.g. a sample grid) under ``name`` at ``step``."""

    def log_artifact(self, path: Path) -> None:
        """A file kept with the run (config.json, the final samples)."""

    def close(self) -> None:
        """Flush and finish."""


def _check_logger(obj: object, name: str) -> Callable[[Path], Logger]:
    if not callable(obj):
        raise ConfigError(f"logger {name!r} is not a class or function (out_dir) -> Logger")
    return obj  # type: ignore[return-value]


LOGGERS: Registry[Callable[[Path], Logger]] = Registry("logger", _check_logger)


def flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts as one level with dotted keys; lists as JSON strings."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        elif isinstance(value, (list, tuple)):
            out[name] = json.dumps(value)
        else:
            out[name] = value
    return out


def _missing(name: str) -> ConfigError:
    return ConfigError(f"--logger {name} needs the {name} package: pip install 'latentgap[{name}]'")


def _read_png(path: Path):
    import numpy as np
    from PIL import Image

    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))  # (H, W, 3) uint8


def _ids(out_dir: Path) -> dict[str, str]:
    try:
        return json.loads((out_dir / IDS_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _save_id(out_dir: Path, name: str, run_id: str) -> None:
    ids = _ids(out_dir)
    ids[name] = run_id
    (out_dir / IDS_FILE).write_text(json.dumps(ids, indent=2) + "\n")


@LOGGERS.register("tensorboard")
class TensorBoardLogger(Logger):
    name = "tensorboard"

    def __init__(self, out_dir: Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise _missing("tensorboard") from None
        self.writer = SummaryWriter(log_dir=str(Path(out_dir) / "tensorboard"))

    def log_hparams(self, params: dict[str, Any]) -> None:
        clean = {
            k: v if isinstance(v, (int, float, str, bool)) else str(v)
            for k, v in flatten(params).items()
        }
        self.writer.add_hparams(clean, {}, run_name=".")

    def log_scalars(self, values: dict[str, float], step: int) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)

    def log_image(self, name: str, path: Path, step: int) -> None:
        self.writer.add_image(name, _read_png(path), step, dataformats="HWC")

    def close(self) -> None:
        self.writer.close()


@LOGGERS.register("mlflow")
class MLflowLogger(Logger):
    name = "mlflow"

    def __init__(self, out_dir: Path) -> None:
        try:
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise _missing("mlflow") from None
        self.out_dir = Path(out_dir).resolve()
        uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{self.out_dir / 'mlflow.db'}"
        self.client = MlflowClient(tracking_uri=uri)
        self.uri = uri
        run_id = _ids(self.out_dir).get("mlflow")
        if run_id is None:
            name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "latentgap")
            exp = self.client.get_experiment_by_name(name)
            artifacts = None
            if not os.environ.get("MLFLOW_TRACKING_URI"):
                artifacts = (self.out_dir / "mlartifacts").as_uri()
            exp_id = (
                exp.experiment_id
                if exp is not None
                else self.client.create_experiment(name, artifact_location=artifacts)
            )
            run = self.client.create_run(exp_id, run_name=self.out_dir.resolve().name)
            run_id = run.info.run_id
            _save_id(self.out_dir, "mlflow", run_id)
        self.run_id = run_id

    def log_hparams(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in flatten(params).items()]
        for start in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[start : start + 100])

    def log_scalars(self, values: dict[str, float], step: int) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k.replace("/", "."), float(v), now, step) for k, v in values.items()]
        if metrics:
            self.client.log_batch(self.run_id, metrics=metrics)

    def log_image(self, name: str, path: Path, step: int) -> None:
        self.client.log_image(self.run_id, _read_png(path), key=name, step=step)

    def log_artifact(self, path: Path) -> None:
        self.client.log_artifact(self.run_id, str(path))

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


@LOGGERS.register("wandb")
class WandbLogger(Logger):
    name = "wandb"

    def __init__(self, out_dir: Path) -> None:
        try:
            import wandb
        except ImportError:
            raise _missing("wandb") from None
        self.wandb = wandb
        self.out_dir = Path(out_dir)
        run_id = _ids(self.out_dir).get("wandb")
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "latentgap"),
            name=self.out_dir.resolve().name,
            dir=str(self.out_dir),
            mode=os.environ.get("WANDB_MODE", "offline"),
            id=run_id,
            resume="allow" if run_id else None,
            reinit="finish_previous",
        )
        if run_id is None:
            _save_id(self.out_dir, "wandb", self.run.id)

    def log_hparams(self, params: dict[str, Any]) -> None:
        self.run.config.update(flatten(params), allow_val_change=True)

    def log_scalars(self, values: dict[str, float], step: int) -> None:
        self.run.log(dict(values), step=step)

    def log_image(self, name: str, path: Path, step: int) -> None:
        self.run.log({name: self.wandb.Image(str(path))}, step=step)

    def log_artifact(self, path: Path) -> None:
        self.run.save(str(path), base_path=str(path.parent), policy="now")

    def close(self) -> None:
        self.run.finish()


def make_loggers(names: tuple[str, ...] | list[str], out_dir: Path) -> list[Logger]:
    """The loggers ``names`` writing for the run in ``out_dir`` (each at most once)."""
    return [LOGGERS.get(name)(Path(out_dir)) for name in dict.fromkeys(names)]
