"""Where output may go, and the life of a run directory on disk.

- :func:`check_output_dir` / :func:`check_output_file`: refuse, before any work, an output path
  that cannot be written (empty, a file, under a file, read-only, on /proc or /sys).
- :class:`RunLock`: an exclusive OS lock (``fcntl.flock``) on ``DIR/.lock``, held by the one
  process that trains into the run; the kernel drops it when that process dies, so a killed run
  never leaves a stale lock, and a second writer is refused with the holder's pid.
- :func:`remove_stale_temp_files`: temporary files left by writes that were killed.
- :func:`clear_run`: ``--force`` deletes the files latentgap wrote into a run and nothing else.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from latentgap.errors import ConfigError

LOCK_FILE = ".lock"
VIRTUAL_ROOTS = (Path("/proc"), Path("/sys"))

# What training, evaluation, sampling, export and report write into a run directory.
RUN_FILES = ("config.json", "checkpoint.pt", "metrics.jsonl", "samples.png", "eval.json")
RUN_GLOBS = (
    "samples-*.png",
    "samples/epoch_*.png",
    "provenance.json",
    "loggers.json",
    "export/model.safetensors",
    "export/config.json",
    "export/export.json",
    "export/README.md",
    "export/eval.json",
    "export/provenance.json",
    "export/samples.png",
    "tensorboard/events.out.tfevents.*",
    "report/index.html",
    "report/*.png",
)
RUN_DIRS = ("samples", "export", "tensorboard", "report")
# Temporary files of killed atomic writes (train/checkpoint.py, train/images.py).
TEMP_GLOBS = (
    ".checkpoint.pt.*.tmp",
    ".config.json.*.tmp",
    ".samples.png.*.tmp",
    ".samples.png.tmp",
    "samples/.epoch_*.png.*.tmp",
    "samples/.epoch_*.png.tmp",
)


def _nearest_existing(path: Path) -> Path:
    """``path`` or its closest ancestor that exists (the folder a mkdir would write into)."""
    path = Path(os.path.abspath(path))
    while not os.path.lexists(path) and path != path.parent:
        path = path.parent
    return path


def _on_virtual_fs(path: Path) -> bool:
    resolved = Path(os.path.realpath(path))
    return any(resolved == root or root in resolved.parents for root in VIRTUAL_ROOTS)


def check_output_dir(path: Path | str, flag: str = "--out") -> None:
    """Raise :class:`ConfigError` (one line: what and how to fix) unless ``path`` is a folder
    that exists or can be created, and can be written to. Creates nothing."""
    if str(path) == "":
        raise ConfigError(f"{flag} is empty; name a folder to write to")
    path = Path(path)
    if _on_virtual_fs(path):
        raise ConfigError(
            f"{flag} {path} is on a virtual file system (/proc, /sys); choose a folder on disk"
        )
    existing = _nearest_existing(path)
    if not existing.is_dir():
        what = (
            "is a file"
            if existing == Path(os.path.abspath(path))
            else f"is under {existing}, a file"
        )
        raise ConfigError(f"{flag} {path} {what}; choose a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        where = "" if existing == Path(os.path.abspath(path)) else f" ({existing} is not)"
        raise ConfigError(f"{flag} {path} is not writable{where}; choose a folder you can write to")


def check_output_file(path: Path | str, flag: str = "--out") -> None:
    """Like :func:`check_output_dir` for a file to be (over)written: not empty, not a folder,
    and its folder writable or creatable."""
    if str(path) == "":
        raise ConfigError(f"{flag} is empty; name a file to write")
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{flag} {path} is a folder; name a file inside it")
    check_output_dir(path.parent if str(path.parent) else Path("."), flag=f"{flag} {path}: folder")
    if path.exists() and not os.access(path, os.W_OK):
        raise ConfigError(f"{flag} {path} is read-only; choose another file")


def check_export_dir(out: Path, run_dir: Path) -> None:
    """ConfigError unless ``out`` may receive ``run_dir``'s export (model.safetensors +
    config.json): a new or writable folder that holds no run and no other model's export
    (``run_dir/export`` and an earlier export of the same run may be overwritten)."""
    out, run_dir = Path(out), Path(run_dir)
    check_output_dir(out)
    if not out.is_dir() or os.path.realpath(out) == os.path.realpath(run_dir / "export"):
        return
    files = existing_run_files(out)
    if not files:
        return
    default = f"choose an empty folder (default {run_dir / 'export'})"
    # an export: config.json, model.safetensors and copies of the run's eval.json, samples.png
    exported = {"config.json", "eval.json", "samples.png"}
    if "config.json" in files and set(files) <= exported and (out / "model.safetensors").exists():
        if _same_json(out / "config.json", run_dir / "config.json"):
            return  # an earlier export of this very run
        raise ConfigError(f"--out {out} holds the export of another model; {default}")
    raise ConfigError(
        f"--out {out} holds a run ({', '.join(files)}) that the export would overwrite; {default}"
    )


def _same_json(a: Path, b: Path) -> bool:
    try:
        return json.loads(a.read_text()) == json.loads(b.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False


def nonempty_path(text: str) -> Path:
    """argparse type for an output path: ``""`` would silently mean the current folder."""
    import argparse

    if text == "":
        raise argparse.ArgumentTypeError("empty path; name a folder or file")
    return Path(text)


class RunLock:
    """Exclusive lock on ``run_dir`` for the process that writes the run (train, resume).

    ``fcntl.flock`` on ``DIR/.lock``: held until :meth:`release` or the process's death. The
    file holds the holder's pid so that a refused writer can name it. Raises
    :class:`ConfigError` if another process holds the lock.
    """

    def __init__(self, run_dir: Path | str) -> None:
        self.path = Path(run_dir) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise ConfigError(
                f"run directory {self.path.parent} is in use by another latentgap process "
                f"(pid {holder}); wait for it to finish or stop it, or choose another --out"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def remove_stale_temp_files(run_dir: Path) -> list[Path]:
    """Delete the temporary files of killed checkpoint/config/sample writes in ``run_dir``
    (call it only while holding the :class:`RunLock`); returns what was removed."""
    removed = []
    for pattern in TEMP_GLOBS:
        for path in Path(run_dir).glob(pattern):
            if path.is_file():
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed


def is_run_config(path: Path) -> bool:
    """Whether ``path`` is a config.json that latentgap wrote (an experiment config)."""
    try:
        values = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(values, dict) and {"model", "data", "train"} <= set(values)


def existing_run_files(run_dir: Path) -> list[str]:
    """The run files (config.json, checkpoint.pt, ...) present in ``run_dir``."""
    return [name for name in RUN_FILES if (Path(run_dir) / name).exists()]


def clear_run(run_dir: Path) -> None:
    """Delete what latentgap wrote into ``run_dir`` (``--force``): run files, sample grids,
    export, TensorBoard events, report and temporary files; folders only once empty. Any other
    file is left alone. Refuses (ConfigError) a config.json that is not latentgap's."""
    run_dir = Path(run_dir)
    config = run_dir / "config.json"
    if config.exists() and not is_run_config(config):
        raise ConfigError(
            f"{config} is not a latentgap run config, so --force will not overwrite it; "
            "choose another --out"
        )
    paths: list[Path] = [run_dir / name for name in RUN_FILES]
    for pattern in RUN_GLOBS + TEMP_GLOBS:
        paths += run_dir.glob(pattern)
    for path in paths:
        if path.is_file() or path.is_symlink():
            path.unlink(missing_ok=True)
    for name in RUN_DIRS:
        with contextlib.suppress(OSError):  # not empty (foreign files) or absent: keep it
            (run_dir / name).rmdir()


__all__ = [
    "RUN_FILES",
    "RunLock",
    "check_export_dir",
    "check_output_dir",
    "check_output_file",
    "clear_run",
    "existing_run_files",
    "is_run_config",
    "nonempty_path",
    "remove_stale_temp_files",
]
