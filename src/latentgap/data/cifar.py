"""CIFAR-10 from the "python version" batches (``cifar-10-batches-py/``).

Each of ``data_batch_1`` … ``data_batch_5`` (training, 10,000 images each) and ``test_batch``
is a Python pickle of a dict with ``b"data"``, a (N, 3072) uint8 array whose rows are the red,
green and blue 32×32 planes in turn (so ``reshape(N, 3, 32, 32)``), and ``b"labels"``, a list
of N ints in 0–9. The observations are the 8-bit levels (kind ``discrete8``).

Security: unpickling can run arbitrary code, so the batches are read with
:class:`NumpyOnlyUnpickler`, which resolves only the handful of globals needed to rebuild numpy
arrays and refuses everything else with a :class:`~latentgap.errors.DataError`.
"""

from __future__ import annotations

import codecs
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from latentgap.data.base import DATASETS, DatasetInfo, DataSpec, ImageSet, Splits
from latentgap.data.fetch import Attempts, download_first, extract_tar_members
from latentgap.data.root import file_error
from latentgap.errors import DataError

try:  # numpy >= 2 moved the implementation to numpy._core
    from numpy._core import multiarray as _multiarray
    from numpy._core import numeric as _numeric
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core import multiarray as _multiarray  # type: ignore[no-redef]
    from numpy.core import numeric as _numeric  # type: ignore[no-redef]

NAME = "cifar10"
BATCH_DIR = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
FILES: tuple[str, ...] = tuple(f"{BATCH_DIR}/{b}" for b in (*TRAIN_BATCHES, TEST_BATCH))
SPEC = DataSpec(NAME, (3, 32, 32), "discrete8")
MD5: dict[str, str] = {
    f"{BATCH_DIR}/data_batch_1": "c99cafc152244af753f735de768cd75f",
    f"{BATCH_DIR}/data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    f"{BATCH_DIR}/data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    f"{BATCH_DIR}/data_batch_4": "634d18415352ddfa80567beed471001a",
    f"{BATCH_DIR}/data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    f"{BATCH_DIR}/{TEST_BATCH}": "40351d587109b95175f43aff81a1287e",
}
ARCHIVE_URLS: list[str] = ["https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"]
ARCHIVE_MD5 = "c58f30108f718f92721af3b95e74349a"

_SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    # ndarray.__reduce__ (pickle protocols 0-4), under numpy 1.x and 2.x module names
    ("numpy.core.multiarray", "_reconstruct"): _multiarray._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _multiarray._reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "scalar"): _multiarray.scalar,
    ("numpy._core.multiarray", "scalar"): _multiarray.scalar,
    # ndarray.__reduce_ex__ with pickle protocol 5 (out-of-band buffers)
    ("numpy.core.numeric", "_frombuffer"): _numeric._frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _numeric._frombuffer,
    # how Python 3 writes bytes objects at pickle protocol 2
    ("_codecs", "encode"): codecs.encode,
}


class NumpyOnlyUnpickler(pickle.Unpickler):
    """An unpickler that rebuilds plain containers and numpy arrays, and nothing else.

    ``find_class`` answers from a fixed table (:data:`_SAFE_GLOBALS`) instead of importing
    whatever the pickle names, so a crafted file cannot call ``os.system`` or any other
    callable; it raises :class:`pickle.UnpicklingError` instead.
    """

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _SAFE_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load global {module}.{name}: only numpy arrays are allowed"
            ) from None


def safe_unpickle(data: bytes) -> Any:
    """Unpickle ``data`` with :class:`NumpyOnlyUnpickler` (Python 2 ``str`` become bytes, as
    in the original CIFAR files)."""
    return NumpyOnlyUnpickler(io.BytesIO(data), encoding="bytes").load()


def _key(entry: dict[Any, Any], key: str) -> Any:
    return entry.get(key.encode(), entry.get(key))


def load_batch(folder: Path, file: str) -> tuple[np.ndarray, np.ndarray]:
    """(N, 3, 32, 32) uint8 images and (N,) int64 labels of one batch file under ``folder``."""
    path = folder / file
    try:
        entry = safe_unpickle(path.read_bytes())
    except OSError as exc:
        raise file_error(NAME, folder, path, f"cannot be read ({exc})") from exc
    except pickle.UnpicklingError as exc:
        raise file_error(NAME, folder, path, f"unsafe or corrupt pickle: {exc}") from exc
    except Exception as exc:  # a damaged pickle raises about anything (EOFError, ValueError, ...)
        raise file_error(NAME, folder, path, f"corrupt pickle ({exc!r})") from exc
    if not isinstance(entry, dict):
        raise file_error(NAME, folder, path, f"holds a {type(entry).__name__}, expected a dict")
    data, labels = _key(entry, "data"), _key(entry, "labels")
    if not isinstance(data, np.ndarray) or labels is None:
        raise file_error(NAME, folder, path, "expected keys b'data' (array) and b'labels'")
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise file_error(
            NAME, folder, path, f"data is {data.dtype} {data.shape}, expected uint8 (N, 3072)"
        )
    try:
        labels = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError) as exc:
        raise file_error(NAME, folder, path, f"labels are not integers ({exc})") from exc
    if labels.shape != (data.shape[0],):
        raise file_error(NAME, folder, path, f"{labels.shape[0]} labels for {data.shape[0]} images")
    return data.reshape(-1, 3, 32, 32), labels


def load_cifar10(folder: Path) -> Splits:
    """CIFAR-10 :class:`Splits` (50,000 train / 10,000 test), kind ``discrete8``."""
    train = [load_batch(folder, f"{BATCH_DIR}/{b}") for b in TRAIN_BATCHES]
    test_images, test_labels = load_batch(folder, f"{BATCH_DIR}/{TEST_BATCH}")
    train_images = torch.from_numpy(np.concatenate([x for x, _ in train]))
    train_labels = torch.from_numpy(np.concatenate([y for _, y in train]))
    return Splits(
        SPEC,
        ImageSet(train_images, train_labels, spec=SPEC),
        ImageSet(torch.from_numpy(test_images.copy()), torch.from_numpy(test_labels), spec=SPEC),
    )


def fetch_cifar10(folder: Path) -> None:
    """Download ``cifar-10-python.tar.gz`` (md5-checked) and extract the six batches."""
    attempts = Attempts()
    archive = folder / ".cifar-10-python.tar.gz"
    try:
        if download_first(ARCHIVE_URLS, archive, attempts, md5=ARCHIVE_MD5) is None:
            raise DataError(f"could not download CIFAR-10; tried: {attempts.summary()}")
        missing = extract_tar_members(archive, {f: folder / f for f in FILES})
    finally:
        archive.unlink(missing_ok=True)
    if missing:
        raise DataError(f"the CIFAR-10 archive lacks {', '.join(missing)}")


DATASETS.add(
    NAME,
    DatasetInfo(
        name=NAME,
        description="CIFAR-10, 50k/10k 3x32x32, 8-bit levels",
        folder=NAME,
        files=FILES,
        load=load_cifar10,
        md5=MD5,
        fetch=fetch_cifar10,
        options=(),
    ),
)
