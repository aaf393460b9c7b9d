"""Metrics to ``metrics.jsonl`` (one JSON object per line), mirrored to experiment trackers
(:mod:`latentgap.train.loggers`)."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

NOT_SCALARS = ("epoch", "iteration", "step", "time")


class MetricsLog:
    """Appends records to ``DIR/metrics.jsonl`` and forwards scalars, images, hyperparameters
    and artifacts to ``loggers`` (names); a no-op on non-zero ranks (``enabled=False``)."""

    def __init__(
        self,
        out_dir: Path,
        enabled: bool = True,
        tensorboard: bool = False,
        loggers: Sequence[str] = (),
    ) -> None:
        from latentgap.train.loggers import make_loggers

        self.path = Path(out_dir) / "metrics.jsonl"
        self.enabled = enabled
        self._t0 = time.time()
        names = [*loggers, *(["tensorboard"] if tensorboard else [])]
        self.loggers = make_loggers(names, Path(out_dir)) if enabled and names else []

    def write(self, record: dict[str, Any], step: int | None = None) -> None:
        if not self.enabled:
            return
        record = {"time": round(time.time() - self._t0, 3), **record}
        clean = {
            k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in record.items()
        }
        with self.path.open("a") as f:
            f.write(json.dumps(clean, sort_keys=False) + "\n")
        if self.loggers and step is not None:
            prefix = record.get("split", "train")
            scalars = {
                f"{prefix}/{k}": float(v)
                for k, v in clean.items()
                if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in NOT_SCALARS
            }
            for logger in self.loggers:
                logger.log_scalars(scalars, step)

    def hparams(self, params: dict[str, Any]) -> None:
        for logger in self.loggers if self.enabled else []:
            logger.log_hparams(params)

    def image(self, name: str, path: Path, step: int) -> None:
        for logger in self.loggers if self.enabled else []:
            logger.log_image(name, Path(path), step)

    def artifact(self, path: Path) -> None:
        for logger in self.loggers if self.enabled else []:
            logger.log_artifact(Path(path))

    def close(self) -> None:
        for logger in self.loggers:
            logger.close()
        self.loggers = []


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """All records of a ``metrics.jsonl`` file (skipping a torn last line)."""
    records = []
    for line in Path(path).read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records
