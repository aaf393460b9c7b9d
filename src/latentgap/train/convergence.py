"""Stop training when a per-epoch metric has stopped improving (``train.stop_metric``).

The rule: after epoch t, with the metric's values m_1 … m_t (lower is better; ``mode="max"``
negates them, for a log-likelihood such as the reconstruction term), training of the watched
phase stops when the best value of the last ``window`` epochs is not better than the best
before them by more than ``tolerance`` × |that best|:

    min(m_{t−w+1} … m_t) > min(m_1 … m_{t−w}) − tolerance · |min(m_1 … m_{t−w})|.

So at least ``window`` + 1 epochs run, and a run stops ``window`` epochs after its last
improvement of more than the relative ``tolerance``. ``train.epochs`` stays the cap. The metric is
any key of the epoch record, usually a test-set loss (``test_loss``: the phase's first loss on
``eval_batches`` test batches, fixed across epochs); its noise from epoch to epoch, not only its
trend, decides when the rule fires, so a ``window`` of several epochs and a test set of thousands
of images keep it from firing on a lucky epoch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from latentgap.errors import ConfigError


@dataclass
class ConvergenceCheck:
    """The stopping rule above for one metric; its history travels with the checkpoint."""

    metric: str
    window: int
    tolerance: float
    mode: str = "min"  # "max": higher is better
    history: list[float] = field(default_factory=list)  # as logged, not negated
    converged_at: int | None = None  # epochs completed when the rule fired

    def update(self, epoch: int, record: dict[str, Any]) -> bool:
        """Add the value of ``record[metric]`` after ``epoch`` completed epochs; True when the
        rule fires now (it fires once)."""
        if self.converged_at is not None:
            return False
        if self.metric not in record:
            keys = ", ".join(sorted(k for k, v in record.items() if isinstance(v, int | float)))
            raise ConfigError(
                f"train.stop_metric {self.metric!r} is not in the epoch record; choose one of: "
                f"{keys}"
            )
        value = float(record[self.metric])
        if not math.isfinite(value):
            return False  # the trainer's divergence check reports it
        self.history.append(value)
        if len(self.history) <= self.window:
            return False
        losses = [-v for v in self.history] if self.mode == "max" else self.history
        before = min(losses[: -self.window])
        recent = min(losses[-self.window :])
        if recent > before - self.tolerance * abs(before):
            self.converged_at = epoch
            return True
        return False

    @property
    def best(self) -> float:
        """The best value so far (as logged)."""
        return max(self.history) if self.mode == "max" else min(self.history)

    def state_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "mode": self.mode,
            "history": self.history,
            "converged_at": self.converged_at,
        }

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """Restore the history of the same metric and mode (another starts afresh)."""
        if not state or state.get("metric") != self.metric:
            return
        if state.get("mode", "min") != self.mode:
            return
        self.history = [float(v) for v in state.get("history", [])]
        at = state.get("converged_at")
        self.converged_at = None if at is None else int(at)


__all__ = ["ConvergenceCheck"]
