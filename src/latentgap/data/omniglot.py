"""Omniglot 28×28, in the split of Burda et al.'s IWAE code (``chardata.mat``).

``chardata.mat`` is a MATLAB file with ``data`` (784 × 24,345, training) and ``testdata``
(784 × 8,070, test): one image per column, gray levels in [0, 1]. MATLAB stores a 28×28 image
column-major, so image ``n`` is ``data[:, n].reshape(28, 28, order="F")``; for all columns at
once, ``data.T.reshape(-1, 28, 28, order="F")``. This is the same array as the IWAE loader's
``data.T.reshape((-1, 28, 28)).reshape((-1, 784), order="F")`` viewed as 28×28, and gives
upright characters. ``target`` (50 × N, one-hot), when present, gives the alphabet as label.

As in the IWAE / VAEPP experiments the images are dynamically binarised. Reading a ``.mat``
file needs SciPy, which latentgap does not require: it is imported only here, with a clear
message if it is missing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from latentgap.data.base import DATASETS, DatasetInfo, DataSpec, ImageSet, Splits
from latentgap.data.fetch import Attempts, fetch_files
from latentgap.data.root import file_error
from latentgap.errors import ConfigError, DataError

NAME = "omniglot"
FILE = "chardata.mat"
SPEC = DataSpec(NAME, (1, 28, 28), "binary")
MD5 = {FILE: "21ecaf34373511aa7691cf2e0802aa3d"}
"""md5 of the IWAE repository's ``chardata.mat`` (as pinned by other loaders of this file)."""
MIRRORS: list[str] = [
    "https://raw.githubusercontent.com/yburda/iwae/master/datasets/OMNIGLOT/",
    "https://github.com/yburda/iwae/raw/master/datasets/OMNIGLOT/",
]
SPLIT_KEYS = {"train": ("data", "target"), "test": ("testdata", "testtarget")}


def _loadmat(path: Path) -> dict[str, Any]:
    try:
        from scipy.io import loadmat
    except ImportError:
        raise ConfigError(
            "reading omniglot's chardata.mat needs SciPy: `pip install scipy`"
        ) from None
    return loadmat(path)


def images_from_columns(columns: np.ndarray) -> np.ndarray:
    """(784, N) MATLAB columns → (N, 1, 28, 28) float32 images (column-major 28×28)."""
    return np.ascontiguousarray(columns.T.reshape(-1, 28, 28, order="F")[:, None], dtype=np.float32)


def load_omniglot(folder: Path) -> Splits:
    """Omniglot :class:`Splits` (24,345 train / 8,070 test in the real file), dynamically
    binarised: ``Batch.e`` holds the gray levels, ``Batch.x`` a fresh Bernoulli draw."""
    path = folder / FILE
    try:
        mat = _loadmat(path)
    except ConfigError:
        raise
    except Exception as exc:  # scipy raises ValueError, OSError, TypeError, ... on bad files
        raise file_error(NAME, folder, path, f"not a readable MATLAB file ({exc})") from exc
    sets = {}
    for split, (key, target_key) in SPLIT_KEYS.items():
        if key not in mat:
            found = sorted(k for k in mat if not k.startswith("__"))
            raise file_error(NAME, folder, path, f"no variable {key!r} (found {found})")
        columns = np.asarray(mat[key])
        if columns.ndim != 2 or columns.shape[0] != 784:
            raise file_error(
                NAME, folder, path, f"{key!r} has shape {columns.shape}, expected (784, N)"
            )
        if not np.issubdtype(columns.dtype, np.number):
            raise file_error(NAME, folder, path, f"{key!r} holds {columns.dtype}, not numbers")
        images = images_from_columns(columns)
        if not np.isfinite(images).all() or images.min() < 0 or images.max() > 1:
            raise file_error(NAME, folder, path, f"{key!r} has values outside [0, 1]")
        labels = None
        target = np.asarray(mat.get(target_key, []))
        if target.ndim == 2 and target.shape[1] == columns.shape[1]:  # (50, N) one-hot
            labels = torch.from_numpy(np.argmax(target, axis=0).astype(np.int64))
        sets[split] = ImageSet(torch.from_numpy(images), labels, spec=SPEC, binarize="dynamic")
    return Splits(SPEC, sets["train"], sets["test"])


def fetch_omniglot(folder: Path) -> None:
    """Download ``chardata.mat`` from the IWAE repository into ``folder`` (md5-checked)."""
    attempts = Attempts()
    if fetch_files(folder, (FILE,), MIRRORS, MD5, attempts):
        raise DataError(f"could not download {FILE}; tried: {attempts.summary()}")


DATASETS.add(
    NAME,
    DatasetInfo(
        name=NAME,
        description="Omniglot 1x28x28 (IWAE split, 24,345/8,070), dynamically binarised; "
        "needs scipy",
        folder=NAME,
        files=(FILE,),
        load=load_omniglot,
        md5=MD5,
        fetch=fetch_omniglot,
        options=(),
    ),
)
