"""Where a result came from: the command, library versions, machine and date.

``latentgap train`` writes ``DIR/provenance.json`` beside config.json (a resume appends to its
``resumed`` list); exports copy it into their model card and reports print it.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import shlex
import socket
import sys
from pathlib import Path
from typing import Any

PROVENANCE = "provenance.json"


def command_line(argv: list[str] | None = None) -> str:
    """The command as a user would retype it: ``latentgap ARGS`` for the CLI, else the
    interpreter's argv."""
    if argv is not None:
        return shlex.join(["latentgap", *argv])
    args = list(sys.argv)
    if args and Path(args[0]).name in ("latentgap", "__main__.py"):
        return shlex.join(["latentgap", *args[1:]])
    return shlex.join([Path(sys.executable).name, *args]) if args else "(python)"


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: str | None = None) -> dict[str, Any]:
    """Library versions, machine and the current time (UTC, ISO 8601)."""
    import torch

    from latentgap import __version__

    env: dict[str, Any] = {
        "latentgap": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "cpu": _cpu(),
        "cores": os.cpu_count(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if device is not None:
        env["device"] = device
        if device.startswith("cuda") and torch.cuda.is_available():
            env["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return env


def record_provenance(
    run_dir: Path, *, command: str | None, device: str, resumed: bool = False
) -> dict[str, Any]:
    """Write (or, on resume, extend) ``DIR/provenance.json``; returns its content."""
    from latentgap.train.checkpoint import atomic_write_text

    path = Path(run_dir) / PROVENANCE
    entry = {"command": command or command_line(), **environment(device)}
    record = read_provenance(run_dir) if resumed else {}
    if record:
        record.setdefault("resumed", []).append(entry)
    else:
        record = entry
    atomic_write_text(path, json.dumps(record, indent=2) + "\n")
    return record


def read_provenance(run_dir: Path) -> dict[str, Any]:
    """``DIR/provenance.json`` as a dict, or {} if absent or unreadable."""
    try:
        record = json.loads((Path(run_dir) / PROVENANCE).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return record if isinstance(record, dict) else {}
