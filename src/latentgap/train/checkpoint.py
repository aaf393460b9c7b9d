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
import tempfile
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


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write) -> None:
    """Call ``write(f)`` on a temporary file beside ``path``, flush it to disk, then rename it
    over ``path``: readers see the old file or the new one, never a torn one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 → the usual file mode
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (temp file + rename)."""
    atomic_write(path, lambda f: f.write(text.encode()))


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Save ``state`` (plain data only) atomically to ``path``."""
    state = {"format": FORMAT_VERSION, **state}
    atomic_write(path, lambda f: torch.save(state, f))


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
        raise CheckpointError(
            f"checkpoint {path} cannot be read ({type(err).__name__}: {str(err).splitlines()[0][:120]}); "
            "it is corrupt or not a latentgap checkpoint"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"{path} is not a latentgap checkpoint (format {FORMAT_VERSION})")
    return state


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
    save_file(
        tensors, str(tmp), metadata={"format": "latentgap", "model": str(config.get("model"))}
    )
    os.replace(tmp, weights)
    atomic_write_text(out_dir / "config.json", json.dumps(config, indent=2, sort_keys=True) + "\n")
    return weights


def load_safetensors(model: torch.nn.Module, path: Path) -> None:
    """Load exported weights into ``model``."""
    from safetensors.torch import load_file

    load_model_state(model, load_file(str(path)), Path(path))
