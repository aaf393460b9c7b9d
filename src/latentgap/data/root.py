"""Where dataset files live, and how they are written there.

The data root is, in this order of precedence:

1. the ``data_dir`` argument (the CLI's ``--data-dir`` flag);
2. the environment variable ``LATENTGAP_DATA``;
3. ``~/.cache/latentgap``.

A dataset registered with folder ``name`` lives in ``<root>/<name>/``, e.g.
``<root>/mnist/train-images-idx3-ubyte.gz``. System-wide folders are looked at after the root:
Debian's ``dataset-*`` packages install under ``/usr/share/datasets/<name>/`` (e.g.
``/usr/share/datasets/fashion-mnist/``), so an installed package is found without copying it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from latentgap.data.base import DatasetInfo
from latentgap.errors import DataError

ENV_VAR = "LATENTGAP_DATA"
SYSTEM_DATA_DIRS: tuple[Path, ...] = (Path("/usr/share/datasets"),)
"""Read-only folders searched after the data root, each holding ``<name>/`` subfolders."""


def default_data_root() -> Path:
    """The data root when no ``--data-dir`` is given: ``$LATENTGAP_DATA`` or
    ``~/.cache/latentgap``."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    return Path("~/.cache/latentgap").expanduser()


def data_root(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """The primary data root: ``data_dir`` if given, else :func:`default_data_root`."""
    if data_dir is not None and str(data_dir) != "":
        return Path(data_dir).expanduser()
    return default_data_root()


def find_file(folder: Path, name: str) -> Path | None:
    """``folder / name`` if it exists; for a ``.gz`` name also its uncompressed twin
    (``train-images-idx3-ubyte`` for ``train-images-idx3-ubyte.gz``)."""
    path = folder / name
    if path.exists():
        return path
    if name.endswith(".gz"):
        plain = folder / name[: -len(".gz")]
        if plain.exists():
            return plain
    return None


def missing_files(info: DatasetInfo, folder: Path) -> list[str]:
    """The names in ``info.files`` that :func:`find_file` does not find under ``folder``."""
    return [name for name in info.files if find_file(folder, name) is None]


def candidate_dirs(info: DatasetInfo, data_dir: str | os.PathLike[str] | None = None) -> list[Path]:
    """The folders that may hold ``info``'s files, best first: the data root's folder, then
    ``<system dir>/<name>`` for each of :data:`SYSTEM_DATA_DIRS`."""
    primary = data_root(data_dir) / info.folder
    if not info.files:
        return [primary]
    return [primary] + [Path(d) / info.name for d in SYSTEM_DATA_DIRS]


def resolve_dataset_dir(info: DatasetInfo, data_dir: str | os.PathLike[str] | None = None) -> Path:
    """The first of :func:`candidate_dirs` that holds all of ``info.files``; if none does, the
    data root's folder, so that the error about missing files names the place to put them."""
    candidates = candidate_dirs(info, data_dir)
    for folder in candidates:
        if not missing_files(info, folder):
            return folder
    return candidates[0]


def fix_hint(name: str, folder: Path) -> str:
    """The command that (re)creates dataset ``name`` in ``folder`` (a ``<root>/<name>`` folder).

    Datasets that cannot be downloaded say where to get them instead.
    """
    from latentgap.data.fetch import MANUAL_DOWNLOAD

    if name in MANUAL_DOWNLOAD:
        return MANUAL_DOWNLOAD[name].format(folder=folder)
    if any(folder.parent == Path(d) for d in SYSTEM_DATA_DIRS):
        # A read-only system copy is broken: fetch a fresh one into the default root.
        return f"run `latentgap data fetch {name}` (downloads into {default_data_root()})"
    return f"run `latentgap data fetch {name} --data-dir {folder.parent}`"


def require_files(info: DatasetInfo, folder: Path) -> None:
    """Raise :class:`DataError` naming every file of ``info`` missing from ``folder``."""
    missing = missing_files(info, folder)
    if missing:
        listed = ", ".join(missing)
        raise DataError(
            f"dataset {info.name!r}: missing {listed} in {folder}; {fix_hint(info.name, folder)}"
        )


def file_error(name: str, folder: Path, path: Path, problem: str) -> DataError:
    """A :class:`DataError` for a corrupt file: which file, what is wrong, how to fix it."""
    return DataError(
        f"dataset {name!r}: {path} is unusable: {problem}; {fix_hint(name, folder)} "
        f"(`latentgap data verify {name}` checks every file)"
    )


@contextlib.contextmanager
def atomic_output(dest: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; on success it is renamed onto ``dest``
    (``os.replace``, atomic on one file system), on failure it is removed. A reader never
    sees a half-written file, and an interrupted download leaves no debris under ``dest``'s
    name."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
