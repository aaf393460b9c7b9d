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
``folder:PATH``    :mod:`~.image_folder`        own PNG/JPEG images, 1 or 3 channels
``npy:PATH``       :mod:`~.npy`                 own arrays in a .npy/.npz file
=================  ===========================  ==========================================

An own loader can also be named ``package.module:attribute``: a :class:`DatasetInfo`, or a
function ``(**options) -> Splits`` (see :mod:`latentgap.plugins`).

Files are looked up as described in :mod:`~.root` (``--data-dir``, ``$LATENTGAP_DATA``,
``~/.cache/latentgap``, then ``/usr/share/datasets``); :func:`verify_dataset` checks them and
:func:`fetch_dataset` downloads them.
"""

from __future__ import annotations

import inspect
import os

# Importing the format modules registers their datasets.
from latentgap.data import (  # noqa: F401
    amat,
    celeba,
    cifar,
    idx,
    image_folder,
    npy,
    omniglot,
    synthetic,
)
from latentgap.data.base import DATASETS, Batch, DatasetInfo, DataSpec, ImageSet, Splits
from latentgap.data.fetch import fetch_dataset
from latentgap.data.root import default_data_root, require_files, resolve_dataset_dir
from latentgap.data.sources import SOURCES, absolute_dataset_name, load_source, split_scheme
from latentgap.data.verify import FileCheck, verify_dataset
from latentgap.errors import ConfigError

__all__ = [
    "DATASETS",
    "Batch",
    "DataSpec",
    "DatasetInfo",
    "FileCheck",
    "ImageSet",
    "SOURCES",
    "Splits",
    "absolute_dataset_name",
    "check_dataset_name",
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
    own = load_source(name, data_dir, **options)  # folder:PATH, npy:PATH
    if own is not None:
        return own
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


def check_dataset_name(name: str) -> None:
    """Fail early (ConfigError) on an unknown dataset name; reads no files."""
    if split_scheme(name) is None:
        DATASETS.get(name)


def _check_dataset(obj: object, name: str) -> DatasetInfo:
    """An own dataset named ``package.module:attribute``: a DatasetInfo, or a function
    ``(**options) -> Splits`` wrapped into one (its keyword arguments are the options)."""
    if isinstance(obj, DatasetInfo):
        return obj
    if not callable(obj):
        raise ConfigError(
            f"dataset {name!r} is a {type(obj).__name__}, not a DatasetInfo or a function "
            "returning latentgap.data.Splits"
        )
    params = inspect.signature(obj).parameters.values()
    options = tuple(p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD))

    def load(folder, **opts) -> Splits:
        splits = obj(**opts)
        if not isinstance(splits, Splits):
            raise ConfigError(f"dataset {name!r} returned a {type(splits).__name__}, not Splits")
        return splits

    return DatasetInfo(name, f"own dataset {name}", "", (), load, {}, options=options)


DATASETS.set_check(_check_dataset)
