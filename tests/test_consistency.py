"""The latent-consistency numbers: MMD² and its permutation test, the classifier test."""

from __future__ import annotations

import pytest
import torch

from latentgap.metrics.consistency import classifier_accuracy, mmd_test


def test_mmd_matches_hand_computation():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(5, 2, generator=g), torch.randn(5, 2, generator=g) + 1
    mmd2, _ = mmd_test(x, y, permutations=10)
    pooled = torch.cat([x, y]).double()
    d2 = ((pooled[:, None] - pooled[None]) ** 2).sum(-1)
    h = d2[torch.triu(torch.ones(10, 10), 1) > 0].median()
    k = torch.exp(-d2 / h)
    expected = k[:5, :5].mean() + k[5:, 5:].mean() - 2 * k[:5, 5:].mean()
    assert mmd2 == pytest.approx(float(expected), rel=1e-6)  # cdist vs direct sums


def test_same_distribution_is_not_rejected_and_shift_is():
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(300, 4, generator=g), torch.randn(300, 4, generator=g)
    _, p_same = mmd_test(a, b, permutations=200)
    _, p_shift = mmd_test(a, b + 0.5, permutations=200)
    assert p_same > 0.01  # a level-0.01 test; seed fixed
    assert p_shift == pytest.approx(1 / 201)  # nothing in the permutation null reaches it
    assert 0.4 < classifier_accuracy(a, b) < 0.6
    assert classifier_accuracy(a, b + 2.0) > 0.8


def test_plot_latent_tsne_and_evaluate_consistency(tmp_path, capsys):
    import json

    from latentgap.cli.main import main

    runs = []
    for model in ("vae", "rae-l2", "ldc-vae"):
        out = tmp_path / model
        args = [
            "train",
            "--model",
            model,
            "--dataset",
            "toy-images",
            "--out",
            str(out),
            "--epochs",
            "1",
            "--batch-size",
            "32",
            "--limit-train",
            "128",
            "--limit-test",
            "64",
            "--arch",
            "mlp",
            "--latent-dim",
            "3",
            "--no-progress",
            "--set",
            "model_options.arch_options.hidden=[16]",
            "--set",
            "data.options.binarize=false",
        ]
        if model == "ldc-vae":
            args += [
                "--set",
                "model_options.sampler_net=mlp",
                "--set",
                "model_options.feature_dim=16",
                "--set",
                "model_options.sampler_hidden=[16]",
            ]
        assert main(args) == 0, capsys.readouterr().err
        runs.append(str(out))
    capsys.readouterr()
    png = tmp_path / "tsne.png"
    assert main(["plot", *runs, "--latent-tsne", str(png), "--num", "64"]) == 0
    assert png.exists() and png.stat().st_size > 1000
    result = json.loads(capsys.readouterr().out)
    for numbers in result["runs"].values():
        assert 0 < numbers["consistency_mmd_p"] <= 1 and 0 <= numbers["consistency_c2st"] <= 1
    assert main(["evaluate", runs[0], "--consistency"]) == 0
    assert "consistency_mmd2" in json.loads(capsys.readouterr().out)
    # LDC-VAE: particle spread, the encoder-gmm reference's two-sample numbers and its FID
    args = ["evaluate", runs[2], "--consistency", "--fid", "--fid-extractor", "pixels"]
    assert main([*args, "--fid-samples", "32", "--no-progress"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["consistency_within_spread"] > 0 and out["consistency_between_spread"] > 0
    ratio = out["consistency_within_spread"] / out["consistency_between_spread"]
    assert out["consistency_spread_ratio"] == pytest.approx(ratio)
    assert out["consistency_gmm_mmd2"] >= 0 and 0 <= out["consistency_gmm_c2st"] <= 1
    assert out["fid_sample_encoder_gmm"] > 0 and "fid_sample" in out
