"""Metrics to ``metrics.jsonl`` (one JSON object per line), optionally mirrored to TensorBoard."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from latentgap.errors import ConfigError


class MetricsLog:
    """Appends records to ``DIR/metrics.jsonl``; a no-op on non-zero ranks (``enabled=False``)."""

    def __init__(self, out_dir: Path, enabled: bool = True, tensorboard: bool = False) -> None:
        self.path = Path(out_dir) / "metrics.jsonl"
        self.enabled = enabled
        self._tb = None
        self._t0 = time.time()
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise ConfigError(
                    "--tensorboard needs the tensorboard package: pip install 'latentgap[tensorboard]'"
                ) from None
            self._tb = SummaryWriter(log_dir=str(Path(out_dir) / "tensorboard"))

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
        if self._tb is not None and step is not None:
            prefix = record.get("split", "train")
            for key, value in record.items():
                if isinstance(value, (int, float)) and key not in ("epoch", "iteration", "time"):
                    self._tb.add_scalar(f"{prefix}/{key}", value, step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """All records of a ``metrics.jsonl`` file (skipping a torn last line)."""
    records = []
    for line in Path(path).read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records
