"""Atomic checkpoints, safe loading and safetensors export.

A checkpoint is plain data (tensors, dicts, lists, numbers, strings): model and optimiser state,
schedulers, position, phase plan and the run's config. It is written to a temporary file in the
same directory, flushed to disk, then renamed over the old one, so a crash mid-save leaves the
previous checkpoint intact. Loading uses ``torch.load(..., weights_only=True)``: no pickled code
is ever executed.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from pathlib import Path
from typing import Any

import torch

from latentgap.errors import CheckpointError

FORMAT_VERSION = 1


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def atomic_write(path: Path, write) -> None:
    """Call ``write(f)`` on a temporary file beside ``path``, flush it to disk, then rename it
    over ``path``: readers see the old file or the new one, never a torn one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # the name is chosen before the file exists, so that an interrupt (SIGTERM is raised as an
    # exception) arriving right after the file is created still finds it to remove; with
    # tempfile.mkstemp it could land inside mkstemp, after the open, and leak the file
    tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        if not isinstance(err, FileExistsError):  # that name was not ours to remove
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        if isinstance(err, OSError) and err.errno is not None and err.filename is None:
            err.filename = str(path)  # "No space left on device" says where
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (temp file + rename)."""
    atomic_write(path, lambda f: f.write(text.encode()))


class _ErrorKeepingFile:
    """A file wrapper that keeps the OSError (or interrupt) of a failed write: ``torch.save``
    turns it into a RuntimeError without the errno ("unexpected pos"), which hides a full disk,
    and an interrupt (SIGTERM is raised as an exception) that lands inside a write."""

    def __init__(self, f) -> None:
        self.f = f
        self.error: BaseException | None = None

    def write(self, data) -> int:
        try:
            return self.f.write(data)
        except (OSError, KeyboardInterrupt) as err:
            self.error = err
            raise

    def flush(self) -> None:
        self.f.flush()


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Save ``state`` (plain data only) atomically to ``path``."""
    state = {"format": FORMAT_VERSION, **state}

    def write(f) -> None:
        kept = _ErrorKeepingFile(f)
        try:
            torch.save(state, kept)
        except RuntimeError:
            if kept.error is not None:
                raise kept.error from None
            raise

    atomic_write(path, write)


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint without executing pickled code; CheckpointError if missing or corrupt."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(
            f"no checkpoint at {path}; train first or pass the right run directory"
        )
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many kinds for a bad file
        detail = (str(err).strip().splitlines() or ["no detail"])[0][:120]
        empty = " (an empty file)" if path.is_file() and path.stat().st_size == 0 else ""
        raise CheckpointError(
            f"checkpoint {path}{empty} cannot be read ({type(err).__name__}: {detail}); "
            "it is corrupt or not a latentgap checkpoint: retrain, or restore it"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"{path} is not a latentgap checkpoint (format {FORMAT_VERSION})")
    return state


RESUME_FIELDS = ("model", "optimizers", "schedulers", "epoch", "iteration", "config")
"""What resuming a run needs from its checkpoint (:func:`check_state`)."""
_FIELD_TYPES: dict[str, type | tuple[type, ...]] = {
    "model": dict,
    "optimizers": dict,
    "schedulers": dict,
    "epoch": int,
    "iteration": int,
    "config": dict,
    "world_size": int,
    "phases": list,
    "spec": dict,
}


def check_state(state: dict[str, Any], path: Path, required: tuple[str, ...]) -> None:
    """CheckpointError unless ``state`` holds ``required`` entries of the right types (the model
    as a dict of tensors); optional entries that are present are type-checked too."""
    for key, kind in _FIELD_TYPES.items():
        if key not in state:
            if key in required:
                raise CheckpointError(
                    f"checkpoint {path} has no {key!r} entry; it is damaged or was not written "
                    "by latentgap train: retrain, or restore it"
                )
            continue
        value = state[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise CheckpointError(
                f"checkpoint {path}: {key!r} is a {type(value).__name__}, expected a "
                f"{getattr(kind, '__name__', kind)}; it is damaged: retrain, or restore it"
            )
    model = state.get("model", {})
    bad = [k for k, v in model.items() if not isinstance(k, str) or not torch.is_tensor(v)]
    if bad:
        raise CheckpointError(
            f"checkpoint {path}: model entry {bad[0]!r} is not a tensor; it is damaged: "
            "retrain, or restore it"
        )


def load_model_state(model: torch.nn.Module, state_dict: dict[str, Any], source: Path) -> None:
    """Load weights into ``model``, turning a shape or key mismatch into a CheckpointError."""
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as err:
        first = str(err).splitlines()
        detail = first[1].strip() if len(first) > 1 else first[0]
        raise CheckpointError(
            f"checkpoint {source} does not match the model built from its config ({detail[:160]}); "
            "was config.json edited?"
        ) from None


def export_safetensors(model: torch.nn.Module, config: dict[str, Any], out_dir: Path) -> Path:
    """Write ``model.safetensors`` and ``config.json`` into ``out_dir``; returns the weights path."""
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    weights = out_dir / "model.safetensors"
    tmp = out_dir / ".model.safetensors.tmp"
    try:
        save_file(
            tensors, str(tmp), metadata={"format": "latentgap", "model": str(config.get("model"))}
        )
        os.replace(tmp, weights)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk leaves no partial file behind
        raise
    atomic_write_text(out_dir / "config.json", json.dumps(config, indent=2, sort_keys=True) + "\n")
    return weights


def load_safetensors(model: torch.nn.Module, path: Path) -> None:
    """Load exported weights into ``model``."""
    from safetensors.torch import load_file

    load_model_state(model, load_file(str(path)), Path(path))
