"""Datasets: one module per file format, all registered in :data:`DATASETS`.

=================  ===========================  ==========================================
name               module                       observations
=================  ===========================  ==========================================
``mnist``          :mod:`~.idx`                 1×28×28, dynamically binarised or [0, 1]
``fashion-mnist``  :mod:`~.idx`                 1×28×28, dynamically binarised or [0, 1]
``static-mnist``   :mod:`~.amat`                1×28×28, fixed binarisation, valid split
``omniglot``       :mod:`~.omniglot`            1×28×28, dynamically binarised
``cifar10``        :mod:`~.cifar`               3×32×32, 8-bit levels
``celeba``         :mod:`~.celeba`              3×64×64, 8-bit levels, valid split
``toy-images``     :mod:`~.synthetic`           1×8×8 generated shapes (tests)
``mixture-2d``     :mod:`~.synthetic`           2-D Gaussian mixture points (tests)
=================  ===========================  ==========================================

Files are looked up as described in :mod:`~.root` (``--data-dir``, ``$LATENTGAP_DATA``,
``~/.cache/latentgap``, then ``/usr/share/datasets``); :func:`verify_dataset` checks them and
:func:`fetch_dataset` downloads them.
"""

from __future__ import annotations

import os

# Importing the format modules registers their datasets.
from latentgap.data import amat, celeba, cifar, idx, omniglot, synthetic  # noqa: F401
from latentgap.data.base import DATASETS, Batch, DatasetInfo, DataSpec, ImageSet, Splits
from latentgap.data.fetch import fetch_dataset
from latentgap.data.root import default_data_root, require_files, resolve_dataset_dir
from latentgap.data.verify import FileCheck, verify_dataset
from latentgap.errors import ConfigError

__all__ = [
    "DATASETS",
    "Batch",
    "DataSpec",
    "DatasetInfo",
    "FileCheck",
    "ImageSet",
    "Splits",
    "default_data_root",
    "fetch_dataset",
    "get_dataset",
    "resolve_dataset_dir",
    "verify_dataset",
]


def get_dataset(name: str, data_dir: str | os.PathLike[str] | None = None, **options) -> Splits:
    """Load dataset ``name`` with its ``options`` (e.g. ``binarize=False`` for MNIST).

    The files are read from the first folder that holds them all (see
    :func:`~latentgap.data.root.resolve_dataset_dir`). Raises
    :class:`~latentgap.errors.ConfigError` for an unknown name or option, and
    :class:`~latentgap.errors.DataError` naming the file, the problem and the fixing command
    when a file is missing or corrupt.
    """
    info = DATASETS.get(name)
    unknown = sorted(set(options) - set(info.options))
    if unknown:
        valid = ", ".join(info.options) if info.options else "none"
        raise ConfigError(
            f"dataset {name!r} has no option {', '.join(map(repr, unknown))}; "
            f"valid options: {valid}"
        )
    folder = resolve_dataset_dir(info, data_dir)
    require_files(info, folder)
    return info.load(folder, **options)
