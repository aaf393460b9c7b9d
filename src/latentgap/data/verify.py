"""Check dataset files against the md5 of their decoded content (``latentgap data verify``).

The md5 is taken over the *decompressed* bytes of a ``.gz`` file: the gzip wrapper (header,
timestamp, compression level) differs between mirrors and re-packagings of the same data, while
the IDX content is what the published checksums describe. Files without a published checksum
are only checked for presence.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

from latentgap.data.base import DATASETS, DatasetInfo
from latentgap.data.root import find_file, resolve_dataset_dir

GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class FileCheck:
    """The verdict on one dataset file: ``ok`` and a one-line ``message``."""

    file: str
    ok: bool
    message: str


def is_gzip(path: Path) -> bool:
    """Whether ``path`` starts with the gzip magic number (whatever its name says)."""
    with open(path, "rb") as f:
        return f.read(2) == GZIP_MAGIC


def decoded_md5(path: Path) -> str:
    """md5 hex digest of ``path``'s content, gunzipped first if it is gzip-compressed.

    Raises ``EOFError``, ``gzip.BadGzipFile``, ``zlib.error`` or ``OSError`` for a damaged file.
    """
    h = hashlib.md5()
    opener = gzip.open if is_gzip(path) else open
    with opener(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def check_file(folder: Path, name: str, expected_md5: str | None) -> FileCheck:
    """Check one file of a dataset folder (or a sub-folder of images, such as CelebA's)."""
    path = find_file(folder, name)
    if path is None:
        return FileCheck(name, False, f"missing: expected {folder / name}")
    if path.is_dir():
        count = sum(1 for _ in os.scandir(path))
        if count == 0:
            return FileCheck(name, False, f"{path} is an empty folder")
        return FileCheck(name, True, f"folder with {count} entries")
    if not expected_md5:
        size = path.stat().st_size
        return FileCheck(name, True, f"present, {size} bytes (no published md5 to check against)")
    try:
        got = decoded_md5(path)
    except (EOFError, OSError, zlib.error) as exc:
        return FileCheck(name, False, f"{path} cannot be read ({exc or type(exc).__name__})")
    if got != expected_md5:
        return FileCheck(name, False, f"md5 of decoded content is {got}, expected {expected_md5}")
    return FileCheck(name, True, f"md5 {got} OK ({path.name})")


def check_folder(info: DatasetInfo, folder: Path) -> list[FileCheck]:
    """Check every file of ``info`` in ``folder``."""
    return [check_file(folder, name, info.md5.get(name)) for name in info.files]


def verify_dataset(name: str, data_dir: str | os.PathLike[str] | None = None) -> list[FileCheck]:
    """Check dataset ``name``'s files where :func:`get_dataset` would read them.

    Returns one :class:`FileCheck` per expected file (an empty list for generated datasets,
    which need no files). Raises :class:`~latentgap.errors.ConfigError` for an unknown name.
    """
    info = DATASETS.get(name)
    return check_folder(info, resolve_dataset_dir(info, data_dir))
