"""The trainer set up for timing epochs, shared by the benchmarks (models, scaling, throughput)."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch

# no progress bar, test evaluation, sample grids or log records inside a timed epoch
QUIET = {"progress": False, "eval_batches": 0, "sample_every": 0, "log_every": 10_000}


@contextlib.contextmanager
def bench_trainer(config, splits, images: int, ctx=None, device: str = "cpu") -> Iterator:
    """A :class:`~latentgap.train.trainer.Trainer` for ``config`` on the first ``images``
    training images of ``splits``, model seeded with 0, writing into a temporary folder."""
    from latentgap.models import build_model
    from latentgap.train.trainer import Trainer

    train = splits.train.subset(images)
    torch.manual_seed(0)
    model = build_model(config.model, config.model_options, splits.spec)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(
            model,
            config,
            type(splits)(splits.spec, train, splits.test),
            Path(tmp),
            torch.device(device),
            ctx,
        )
        trainer.model.prepare_training(train)
        yield trainer
