"""``latentgap report``: the HTML page of a run and of a reproduced table, its figures, the lazy
matplotlib import, and that it renders in headless Chromium with every image loaded."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from latentgap.cli.main import main
from latentgap.config import ExperimentConfig
from latentgap.errors import ConfigError
from latentgap.report import build_report
from latentgap.train.images import save_image_grid

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--virtual-time-budget=5000",
]
# Written into a copy of the page: on load, the body records loaded/total images.
PROBE = """<script>window.addEventListener("load", function () {
  var imgs = Array.from(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; });
  document.body.dataset.loaded = ok.length + "/" + imgs.length;
});</script>"""


@pytest.fixture(scope="module")
def vaepp_run(tmp_path_factory) -> Path:
    """A two-epoch VAEPP run on the built-in toy images (VAE phase, then latent-GAN phase)."""
    from latentgap.train.run import train

    out = tmp_path_factory.mktemp("report") / "run"
    config = ExperimentConfig.from_dict(
        {
            "model": "vaepp",
            "model_options": {
                "arch": "mlp",
                "latent_dim": 2,
                "arch_options": {"hidden": [16]},
                "critic_options": {"hidden": [16]},
                "gan_epochs": 1,
                "gan_hidden": 8,
                "mala_steps": 3,
                "logz_normal_samples": 8,
            },
            "data": {"name": "toy-images", "limit_train": 128, "limit_test": 32},
            "train": {"epochs": 2, "batch_size": 32, "log_every": 1, "progress": False},
        }
    )
    torch.manual_seed(0)
    train(config, out)
    (out / "eval.json").write_text(json.dumps({"nll_nats": 12.5, "per_repeat": [12.5]}))
    save_image_grid(torch.rand(4, 3, 20, 20), out / "latent-tsne.png")
    return out


def image_count(page: Path) -> int:
    return len(re.findall(r"<img ", page.read_text()))


def test_run_report_has_every_section_and_figures_beside_it(vaepp_run, tmp_path):
    page = build_report(vaepp_run, tmp_path / "r", samples=True)
    assert page == tmp_path / "r" / "index.html"
    text = page.read_text()
    for heading in ("Configuration", "Metrics (eval.json)", "Training curves", "Samples"):
        assert heading in text
    assert "Reconstructions" in text and "Latent space" in text
    assert "sampler gan+mala (MALA acceptance rate" in text
    assert "&quot;vaepp&quot;" in text and "12.5" in text  # config JSON and eval.json
    assert 'src="data:image/png;base64,' in text and 'src="http' not in text
    names = {p.name for p in page.parent.glob("*.png")}
    assert {"loss.png", "vaepp-prior.png", "recon.png", "samples-gan+mala.png"} <= names
    # curves, β/log Ẑ, samples.png, 4 fresh sampler grids, reconstructions, t-SNE
    assert image_count(page) == 2 + 1 + 4 + 1 + 1


def test_table_report_shows_results_and_each_run(vaepp_run, tmp_path):
    folder = tmp_path / "table"
    folder.mkdir()
    shutil.copytree(vaepp_run, folder / "vaepp-mnist")
    results = {
        "table": "vaepp-table1",
        "title": "Test NLL",
        "source": "VAEPP paper, Table 1",
        "budget": "smoke",
        "cells": {
            "vaepp/mnist": {"status": "done", "value": 90.0},
            "vaepp/cifar10": {"status": "skipped", "reason": "dataset 'cifar10' is missing"},
        },
        "runs": {"vaepp-mnist": {"status": "trained"}},
        "machine": {"cpu": "TestCPU", "cores": 2, "torch": "2.x", "device": "cpu"},
    }
    (folder / "results.json").write_text(json.dumps(results))
    assert main(["report", str(folder)]) == 0
    text = (folder / "report" / "index.html").read_text()
    assert "<td>90.00</td><td>76.37</td>" in text and "skipped [1]" in text
    assert "dataset &#x27;cifar10&#x27; is missing" in text and "Run vaepp-mnist" in text
    assert (folder / "report" / "vaepp-mnist-loss.png").exists()


def test_report_errors_are_one_line(tmp_path, capsys, monkeypatch, vaepp_run):
    assert main(["report", str(tmp_path)]) == 2
    assert "neither config.json" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    with pytest.raises(ConfigError, match=r"pip install matplotlib"):
        build_report(vaepp_run, tmp_path / "r")


def rendered_images(page: Path, tmp_path: Path) -> str:
    """``loaded/total`` images of ``page`` as headless Chromium reports them."""
    probe = page.with_name("probe.html")
    probe.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    profile = tmp_path / "chromium-profile"
    cmd = [str(CHROMIUM), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom"]
    proc = subprocess.run(
        [*cmd, probe.as_uri()], capture_output=True, text=True, timeout=90, check=False
    )
    match = re.search(r'data-loaded="(\d+)/(\d+)"', proc.stdout)
    assert match, f"no probe result from chromium (rc {proc.returncode}): {proc.stderr[-500:]}"
    return f"{match[1]}/{match[2]}"


@pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="headless check needs /usr/bin/chromium (apt-get install chromium)",
)
def test_report_renders_in_headless_chromium(vaepp_run, tmp_path):
    page = build_report(vaepp_run, tmp_path / "r", samples=True)
    n = image_count(page)
    assert rendered_images(page, tmp_path) == f"{n}/{n}"
    # the probe can fail: a corrupt image is counted as not loaded
    broken = page.with_name("broken.html")
    bad = '<img src="data:image/png;base64,AAAA" alt="corrupt">'
    broken.write_text(page.read_text().replace("</body>", bad + "</body>"))
    assert rendered_images(broken, tmp_path) == f"{n}/{n + 1}"
