"""Shared by the hostile test suites (test_hostile_inputs.py, test_hostile_runs.py): a tiny
trained run, the CLI called in-process, and the error contract every refusal must keep."""

from __future__ import annotations

import contextlib
import hashlib
import io
import shutil
from pathlib import Path

from latentgap.cli.main import main

TOY = [
    "--dataset",
    "toy-images",
    "--arch",
    "mlp",
    "--latent-dim",
    "4",
    "--epochs",
    "1",
    "--batch-size",
    "64",
    "--limit-train",
    "128",
    "--limit-test",
    "64",
    "--no-progress",
    "--set",
    "model_options.arch_options.hidden=[8]",
]


def cli(capsys, *args) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``latentgap ARGS`` run in this process."""
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_refused(result: tuple[int, str, str], *fragments: str, code: int = 2) -> str:
    """The error contract: exit ``code``, exactly one line on stderr, no traceback, and every
    fragment in that line. Returns the line."""
    got, _, err = result
    assert got == code, f"exit {got}, stderr: {err}"
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (the lock file aside), by relative path."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(Path(root).rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


def train_toy(out: Path, *extra: str) -> None:
    """Train the tiny run into ``out`` (outside pytest's capture: for module fixtures)."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        code = main(["train", "--out", str(out), *TOY, *extra])
    assert code == 0


def copy_run(run: Path, tmp_path: Path, name: str = "run") -> Path:
    """A private copy of a trained run, free to damage."""
    return Path(shutil.copytree(run, tmp_path / name))
