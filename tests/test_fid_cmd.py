"""``latentgap fid A B``: folders, arrays, runs and dataset names; ≈ 0 between a set and
itself; the same number as an independent computation (pytorch-fid's formula with scipy's
sqrtm); statistics cached by content; the announcement of the work."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from latentgap.cli.main import main

PIXELS = ["--extractor", "pixels", "--no-progress"]


def fid(capsys, *args) -> tuple[dict, str]:
    code = main(["fid", *map(str, args), *PIXELS])
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out), err


def reference_fid(a: np.ndarray, b: np.ndarray) -> float:
    """FID of (N, 32, 32) gray images in [0, 1] on 16×16 block means, as pytorch-fid's
    calculate_frechet_distance computes it (scipy.linalg.sqrtm of Σ₁Σ₂)."""
    from scipy import linalg

    def feats(x):
        return x.reshape(len(x), 16, 2, 16, 2).mean(axis=(2, 4)).reshape(len(x), -1)

    fa, fb = feats(a.astype(np.float64)), feats(b.astype(np.float64))
    mu1, mu2 = fa.mean(0), fb.mean(0)
    s1, s2 = np.cov(fa, rowvar=False), np.cov(fb, rowvar=False)
    covmean = np.real(linalg.sqrtm(s1.dot(s2)))
    diff = mu1 - mu2
    return float(diff.dot(diff) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


@pytest.fixture
def sets(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (300, 32, 32), dtype=np.uint8)
    b = np.clip(a[::-1].astype(int) // 2 + rng.integers(0, 60, a.shape), 0, 255).astype(np.uint8)
    (tmp_path / "pngs").mkdir()
    for i, image in enumerate(b):
        Image.fromarray(image).save(tmp_path / "pngs" / f"{i:03d}.png")
    np.save(tmp_path / "a.npy", a)
    return tmp_path, a / 255.0, b / 255.0


def test_fid_matches_an_independent_computation_and_caches(sets, capsys):
    root, a, b = sets
    cache = root / "cache"
    got, err = fid(capsys, root / "a.npy", root / "pngs", "--cache-dir", cache)
    assert "600 images through pixels16" in err
    assert got["fid"] == pytest.approx(reference_fid(a, b), rel=1e-6)
    assert got["a"] == {"source": f"{root / 'a.npy'} (arrays)", "images": 300, "cached": False}
    assert 0 <= got["precision"] <= 1 and got["pr_images"] == 300
    again, err = fid(capsys, root / "a.npy", root / "pngs", "--cache-dir", cache)
    assert again["a"]["cached"] and again["b"]["cached"] and "0 images through" in err
    assert again["fid"] == got["fid"] and again["recall"] == got["recall"]
    changed = (a * 255).astype(np.uint8)
    changed[0, 0, 0] ^= 1  # one pixel: another content hash, no stale statistics
    np.save(root / "a.npy", changed)
    third, _ = fid(capsys, root / "a.npy", root / "pngs", "--cache-dir", cache)
    assert not third["a"]["cached"] and third["b"]["cached"]


def test_a_set_against_itself_is_zero(sets, capsys):
    root, _, _ = sets
    got, _ = fid(capsys, root / "a.npy", root / "a.npy", "--cache-dir", root / "c")
    assert abs(got["fid"]) < 1e-6 and got["precision"] == got["recall"] == 1.0


def test_run_samples_and_dataset_names(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    from latentgap.config import ExperimentConfig
    from latentgap.train.run import train

    config = ExperimentConfig.from_dict(
        {
            "model_options": {"latent_dim": 2, "arch_options": {"hidden": [8]}},
            "data": {"name": "toy-images", "limit_train": 64, "limit_test": 16},
            "train": {"epochs": 1, "batch_size": 32, "progress": False},
        }
    )
    train(config, tmp_path / "run")
    got, _ = fid(capsys, "toy-images:test", tmp_path / "run", "--num", "50")
    assert got["a"]["images"] == 128 and got["b"]["images"] == 50 and got["pr_images"] == 50
    assert got["fid"] > 0


def test_bad_sets_are_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    (tmp_path / "empty").mkdir()
    for a, message in [
        ("nonexistent-set", "is no folder, array file or run, nor a dataset"),
        (str(tmp_path / "empty"), "no PNG or JPEG images"),
        ("toy-images:valid", "has no valid split"),
    ]:
        assert main(["fid", a, "toy-images", *PIXELS]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
