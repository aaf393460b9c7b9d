"""The Python entry points that mirror the command line: :func:`train` and :func:`load`.

.. code-block:: python

    import latentgap

    result = latentgap.train(
        {"model": "vae", "data": {"name": "folder:digits"}, "train": {"epochs": 5}},
        out="runs/vae",
    )
    model = latentgap.load("runs/vae")           # a run directory or an export folder
    images = model.sample(16)                    # (16, C, H, W) in [0, 1]
    codes = model.encode(images)                 # (16, latent_dim)

Both go through the same code as ``latentgap train`` and ``latentgap sample``: the config is
validated, own code named in it (``imports``, ``package.module:attribute`` names) is imported,
and the run directory gets config.json, checkpoint.pt, metrics.jsonl and provenance.json.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from latentgap.config import ExperimentConfig
from latentgap.models.base import GenerativeModel
from latentgap.train.run import TrainResult


def train(
    config: ExperimentConfig | dict[str, Any],
    out: str | os.PathLike[str],
    *,
    preset: str | None = None,
    resume: bool = False,
    force: bool = False,
    data_dir: str | None = None,
) -> TrainResult:
    """Train a run into ``out`` as ``latentgap train`` would; returns the trained model, its
    config and the last epoch's record.

    ``config`` is an :class:`ExperimentConfig` or a (partial) dict of one (missing fields take
    their defaults; ``preset`` fills them from a named preset first). ``resume`` continues the
    run in ``out``; ``force`` overwrites it.
    """
    from latentgap.plugins import import_modules
    from latentgap.presets import PRESETS, deep_merge
    from latentgap.train.run import train as train_run

    if not isinstance(config, ExperimentConfig):
        values = dict(config)
        if preset is not None:
            values = deep_merge(PRESETS.get(preset).values, values)
            values["preset"] = preset
        import_modules(values.get("imports", ()))
        config = ExperimentConfig.from_dict(values)
    return train_run(config, Path(out), resume=resume, force=force, data_dir=data_dir)


def load(
    path: str | os.PathLike[str], device: str = "cpu", *, data_dir: str | None = None
) -> GenerativeModel:
    """The trained model of a run directory or an export folder, in eval mode on ``device``.

    The model's experiment config is ``model.experiment``; use ``model.sample(n)``,
    ``model.encode(images)``, ``model.reconstruct(batch)`` or
    :func:`latentgap.metrics.nll.evaluate_nll`.
    """
    from latentgap.train.run import load_run

    model, config, _ = load_run(Path(path), device, data_dir, load_data=False)
    model.experiment = config
    return model


__all__ = ["load", "train"]
