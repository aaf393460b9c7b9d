"""Exports rebuild the model without the run: in a new process, the same NLL to the last digit;
readable files, a model card; ``sample`` / ``evaluate`` / ``latentgap.load`` / ``--init-from``."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import latentgap
from latentgap.cli.main import main

SRC = Path(__file__).resolve().parents[1] / "src"
NETS = """
from torch import nn
from latentgap.nets import Architecture

def encoder(shape, out_features):
    return nn.Sequential(nn.Flatten(), nn.Linear(shape[0] * shape[1] * shape[2], out_features))

def decoder(latent_dim, shape, param_channels):
    c, h, w = shape
    return nn.Sequential(nn.Linear(latent_dim, param_channels * c * h * w),
                         nn.Unflatten(1, (param_channels * c, h, w)))

linear = Architecture("linear", "linear maps", encoder, decoder)
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A VAE with own linear nets on a folder of PNGs, evaluated and exported."""
    from PIL import Image

    root = tmp_path_factory.mktemp("export")
    (root / "ownnets.py").write_text(textwrap.dedent(NETS))
    rng = np.random.default_rng(0)
    (root / "pngs").mkdir()
    for i in range(48):
        image = rng.integers(0, 256, (5, 5), dtype=np.uint8)
        Image.fromarray(image).save(root / "pngs" / f"{i}.png")
    cwd = os.getcwd()
    os.chdir(root)
    sys.path.insert(0, str(root))
    try:
        args = ["train", "--out", "run", "--dataset", "folder:pngs", "--arch", "ownnets:linear"]
        args += ["--latent-dim", "2", "--epochs", "2", "--batch-size", "16", "--no-progress"]
        assert main(args) == 0
        assert main(["evaluate", "run", "--nll", "--iw-samples", "30", "--no-progress"]) == 0
        assert main(["export", "run"]) == 0
    finally:
        os.chdir(cwd)
        sys.path.remove(str(root))
    return root


def cli(cwd: Path, *args: str) -> dict:
    """``latentgap ARGS`` in a new Python process; its last stdout line as JSON."""
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{cwd}", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "latentgap", *args], cwd=cwd, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_export_files_are_complete_and_readable(trained):
    export = trained / "run" / "export"
    names = {p.name for p in export.iterdir()}
    assert {"model.safetensors", "config.json", "export.json", "README.md"} <= names
    assert {"eval.json", "provenance.json", "samples.png"} <= names
    for path in export.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
    manifest = json.loads((export / "export.json").read_text())
    spec = {"name": f"folder:{trained / 'pngs'}", "shape": [1, 5, 5], "kind": "continuous"}
    assert manifest["spec"] == spec
    assert manifest["epoch"] == 2 and manifest["exported"]["torch"] == torch.__version__
    card = (export / "README.md").read_text()
    assert "latentgap train --out run --dataset folder:pngs" in card  # the training command
    assert "| test NLL |" in card and "5 test images × 30 importance samples" in card
    assert "`ownnets`" in card  # the own code a loader needs


def test_export_reloads_in_a_new_process_to_the_same_numbers(trained, tmp_path):
    """The export moved away from its run (whose checkpoint is gone) evaluates to the run's
    NLL exactly, and samples."""
    run_nll = json.loads((trained / "run" / "eval.json").read_text())["nll_nats"]
    moved = tmp_path / "shared-model"
    shutil.copytree(trained / "run" / "export", moved)
    got = cli(trained, "evaluate", str(moved), "--nll", "--iw-samples", "30", "--no-progress")
    assert got["nll_nats"] == run_nll  # bitwise: same weights, same seed, same data
    grid = cli(trained, "sample", str(moved), "--num", "9", "--out", str(tmp_path / "g.png"))
    assert grid["num"] == 9 and (tmp_path / "g.png").exists()
    code = (
        f"import latentgap, torch; m = latentgap.load({str(moved)!r}); "
        "g = torch.Generator().manual_seed(0); print(m.sample(3, generator=g).sum().item())"
    )
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{trained}"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    here = latentgap.load(trained / "run").sample(3, generator=torch.Generator().manual_seed(0))
    assert float(proc.stdout) == pytest.approx(here.sum().item(), rel=1e-6)


def test_init_from_an_export_starts_from_its_weights(trained, capsys, monkeypatch):
    monkeypatch.chdir(trained)
    monkeypatch.syspath_prepend(str(trained))
    export = trained / "run" / "export"
    args = ["train", "--dataset", "folder:pngs", "--arch", "ownnets:linear"]
    args += ["--latent-dim", "2", "--epochs", "1", "--batch-size", "16", "--no-progress"]
    assert main([*args, "--out", "tuned", "--init-from", str(export), "--lr", "1e-30"]) == 0
    tuned, source = latentgap.load(trained / "tuned"), latentgap.load(export)
    for key, value in source.state_dict().items():
        assert torch.allclose(tuned.state_dict()[key], value, atol=1e-20), key
    assert json.loads((trained / "tuned" / "config.json").read_text())["init_from"] == str(export)
    capsys.readouterr()
    bad = ["train", "--dataset", "folder:pngs", "--arch", "ownnets:linear", "--latent-dim", "3"]
    assert main([*bad, "--no-progress", "--out", "bad", "--init-from", str(export)]) == 2
    err = capsys.readouterr().err
    assert "--init-from" in err and "does not match" in err and len(err.strip().splitlines()) == 1
    assert main(["export", str(export)]) == 2
    assert "already an export" in capsys.readouterr().err
