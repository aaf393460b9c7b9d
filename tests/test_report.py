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
    # curves, β/log Ẑ, the persistent chains' acceptance, samples.png, 4 fresh sampler grids,
    # reconstructions, t-SNE
    assert image_count(page) == 2 + 1 + 1 + 4 + 1 + 1


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


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory) -> Path:
    """A one-epoch VAE on the toy images, with an eval.json of a small FID and two repeats."""
    from latentgap.cli.main import main as cli

    out = tmp_path_factory.mktemp("compare") / "vae-run"
    args = ["train", "--out", str(out), "--dataset", "toy-images", "--latent-dim", "2"]
    args += ["--epochs", "2", "--batch-size", "32", "--no-progress", "--log-every", "2"]
    assert cli([*args, "--set", "model_options.arch_options.hidden=[16]"]) == 0
    metrics = {"run": str(out), "dataset": "toy-images", "nll_nats": 30.25, "nll_std": 0.5}
    metrics.update(repeats=2, per_repeat=[29.75, 30.75], n_examples=128, iw_samples=100)
    metrics.update(fid_sample=180.0, fid_samples=200, fid_reference_size=512)
    metrics.update(fid_reference="train", fid_extractor="inception")
    (out / "eval.json").write_text(json.dumps(metrics))
    return out


def test_metrics_are_grouped_with_units_sizes_and_caveats(vaepp_run, vae_run, tmp_path):
    from latentgap.report.metrics import group_metrics

    groups = {g.title: g for g in group_metrics(json.loads((vae_run / "eval.json").read_text()))}
    assert list(groups) == ["Likelihood", "Sample quality"]
    nll = {r.key: r for r in groups["Likelihood"].rows}
    assert list(nll) == ["nll_nats", "nll_std"] and nll["nll_nats"].unit == "nats"
    assert nll["nll_nats"].basis == "128 test images × 100 importance samples × 2 repeats"
    assert "FID of 200 images" in groups["Sample quality"].caveats[0]
    assert (
        groups["Sample quality"].rows[0].basis
        == "200 images vs 512 train images (inception features)"
    )
    one = group_metrics({"nll_nats": 1.0, "nll_std": 0.0, "repeats": 1, "per_repeat": [1.0]})
    assert [r.key for g in one for r in g.rows] == ["nll_nats"]  # no std of one repeat
    text = build_report(vaepp_run, tmp_path / "r").read_text()
    assert (
        "per_repeat" not in text and "<h4>Likelihood</h4>" in text and "<h4>Training</h4>" in text
    )
    assert "Provenance (provenance.json)" in text and "Report written" in text


def test_comparison_report_has_every_section(vaepp_run, vae_run, tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(["report", str(vaepp_run), str(vae_run), "--out", str(out)]) == 0
    page = out / "index.html"
    assert json.loads(capsys.readouterr().out) == {"report": str(page)}
    text = page.read_text()
    for heading in ("Comparison of 2 runs", "<h2>Runs</h2>", "<h2>Metrics</h2>"):
        assert heading in text
    for heading in ("<h2>Training curves</h2>", "<h2>Samples</h2>", "<h2>Provenance</h2>"):
        assert heading in text
    assert "Run run</h2>" in text and "Run vae-run</h2>" in text  # then a section per run
    assert "<td>vaepp</td><td>vae</td>" in text  # models side by side
    assert "12.5<br>" in text and "30.25<br>" in text  # the two NLLs in one row
    assert "vae-run: FID of 200 images" in text
    assert (out / "compare-curves.png").exists() and text.count("latentgap train") >= 1
    assert '<div class="row">' in text and text.count("samples.png</figcaption>") >= 2


@pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="headless check needs /usr/bin/chromium (apt-get install chromium)",
)
def test_comparison_report_renders_in_headless_chromium(vaepp_run, vae_run, tmp_path):
    page = build_report([vaepp_run, vae_run], tmp_path / "cmp")
    n = image_count(page)
    assert n >= 1 + 2 + 2 and rendered_images(page, tmp_path) == f"{n}/{n}"


def test_plot_training_curves(vaepp_run, vae_run, tmp_path, capsys):
    one = tmp_path / "one.png"
    assert main(["plot", str(vae_run), "--curves", str(one), "--terms", "kl,rec"]) == 0
    assert json.loads(capsys.readouterr().out)["terms"] == ["kl", "rec"] and one.exists()
    both = tmp_path / "both.png"
    assert main(["plot", str(vaepp_run), str(vae_run), "--curves", str(both)]) == 0
    assert both.stat().st_size > 1000
    capsys.readouterr()
    assert main(["plot", str(vae_run), "--curves", str(one), "--terms", "nope"]) == 2
    assert "no run logged 'nope'; logged terms:" in capsys.readouterr().err
    assert main(["plot", str(vae_run)]) == 2


def test_save_figure_is_atomic(tmp_path):
    """A figure replaces its file whole: a failing savefig leaves the old file and no temp file."""
    from latentgap.report import figures

    plt = figures.pyplot()
    path = tmp_path / "curves.png"
    path.write_bytes(b"old")

    class Broken:
        def savefig(self, f, **kwargs):
            f.write(b"\x89PNG half")
            raise RuntimeError("renderer died")

    with pytest.raises(RuntimeError, match="renderer died"):
        figures.save_figure(Broken(), path, dpi=90)
    assert path.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == [path.name]
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    figures.save_figure(fig, path, dpi=50)
    plt.close(fig)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
