"""The importance-sampled NLL against the exact log-likelihood of a linear-Gaussian model.

Probabilistic PCA: z ~ N(0, I_D), x | z ~ N(Wz + b, σ² I_d), so p(x) = N(x; b, WWᵀ + σ²I) exactly.
With orthogonal columns of W the exact posterior is a diagonal Gaussian, which the encoder can
represent: then every importance weight equals p(x) and the estimate is exact. With a mismatched
encoder the estimate must agree within its standard error.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from latentgap.data.base import DataSpec, ImageSet
from latentgap.metrics.nll import evaluate_nll, log_likelihood
from latentgap.models.vae import VAE, VAEConfig

D_LATENT, D_DATA, SIGMA = 3, 6, 0.5


def ppca_model(posterior_scale: float = 1.0, posterior_shift: float = 0.0) -> tuple[VAE, dict]:
    torch.manual_seed(0)
    spec = DataSpec("ppca", (1, 1, D_DATA), "continuous")
    config = VAEConfig(
        arch="mlp",
        latent_dim=D_LATENT,
        likelihood="gaussian",
        min_log_scale=-20.0,
        likelihood_options={
            "mean_activation": "identity",
            "learn_gamma": False,
            "log_gamma": math.log(SIGMA**2),
        },
    )
    model = VAE(config, spec)
    q, _ = torch.linalg.qr(torch.randn(D_DATA, D_LATENT, dtype=torch.float64))
    w = q * torch.tensor([2.0, 1.0, 0.5], dtype=torch.float64)  # orthogonal columns
    b = torch.randn(D_DATA, dtype=torch.float64)
    model.decoder = nn.Sequential(nn.Linear(D_LATENT, D_DATA), nn.Unflatten(1, (1, 1, D_DATA)))
    model.decoder[0].weight.data = w.float()
    model.decoder[0].bias.data = b.float()
    # exact posterior: N(M⁻¹Wᵀ(x − b), σ² M⁻¹), M = WᵀW + σ²I (diagonal here)
    m = (w.T @ w).diagonal() + SIGMA**2  # (D,)
    a = w.T / m[:, None]  # (D, d)
    enc = nn.Sequential(nn.Flatten(), nn.Linear(D_DATA, 2 * D_LATENT))
    weight = torch.zeros(2 * D_LATENT, D_DATA, dtype=torch.float64)
    bias = torch.zeros(2 * D_LATENT, dtype=torch.float64)
    weight[:D_LATENT] = a
    bias[:D_LATENT] = -a @ b + posterior_shift
    bias[D_LATENT:] = torch.log(SIGMA / m.sqrt() * posterior_scale)
    enc[1].weight.data, enc[1].bias.data = weight.float(), bias.float()
    model.encoder = enc
    return model, {"w": w, "b": b}


def exact_log_px(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    from scipy.stats import multivariate_normal

    cov = (w @ w.T + SIGMA**2 * torch.eye(D_DATA, dtype=torch.float64)).numpy()
    return multivariate_normal(b.numpy(), cov).logpdf(x.reshape(len(x), -1).double().numpy())


def sample_data(params: dict, n: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    z = torch.randn(n, D_LATENT, generator=g, dtype=torch.float64)
    x = (
        z @ params["w"].T
        + params["b"]
        + SIGMA * torch.randn(n, D_DATA, generator=g, dtype=torch.float64)
    )
    return x.float().reshape(n, 1, 1, D_DATA)


def test_exact_posterior_gives_exact_log_likelihood():
    model, params = ppca_model()
    x = sample_data(params, 64)
    data = ImageSet(x, spec=model.spec)
    batch = next(data.batches(64))
    log_px, elbo = log_likelihood(model, batch, k=50)
    exact = exact_log_px(x, params["w"], params["b"])
    np.testing.assert_allclose(log_px.double().numpy(), exact, atol=2e-4)
    # with the exact posterior the ELBO is tight too
    np.testing.assert_allclose(elbo.double().numpy(), exact, atol=2e-4)


def test_mismatched_posterior_within_standard_error():
    model, params = ppca_model(posterior_scale=1.4, posterior_shift=0.3)
    x = sample_data(params, 32)
    batch = next(ImageSet(x, spec=model.spec).batches(32))
    k = 4000
    torch.manual_seed(3)
    with torch.no_grad():
        log_w = model.log_importance_weights(batch, k).double()  # (K, B)
    estimate = torch.logsumexp(log_w, 0) - math.log(k)
    w = torch.exp(log_w - log_w.max(0).values)
    se = w.std(0) / (w.mean(0) * math.sqrt(k))  # delta-method standard error of log p̂
    exact = torch.from_numpy(exact_log_px(x, params["w"], params["b"]))
    err = estimate - exact
    assert torch.all(err.abs() < 5 * se + 1e-4), (err, se)
    # the single-sample ELBO is a strict lower bound when q is wrong
    assert torch.all(log_w.mean(0) < exact)


def test_evaluate_nll_matches_exact_mean_and_reports_fields():
    model, params = ppca_model()
    x = sample_data(params, 50)
    data = ImageSet(x, spec=model.spec)
    res = evaluate_nll(model, data, k=20, repeats=3, batch_size=16)
    exact = -exact_log_px(x, params["w"], params["b"]).mean()
    assert res.n_examples == 50 and res.iw_samples == 20 and res.repeats == 3
    assert res.nll_nats == pytest.approx(exact, abs=1e-3)
    assert res.nll_std < 1e-3
    assert res.bits_per_dim == pytest.approx(res.nll_nats / (D_DATA * math.log(2)))


def test_chunking_over_samples_is_exact():
    """Merging chunks of K with log-sum-exp gives the same answer as one big call."""
    model, params = ppca_model(posterior_scale=1.3)
    batch = next(ImageSet(sample_data(params, 8), spec=model.spec).batches(8))
    torch.manual_seed(5)
    one, _ = log_likelihood(model, batch, k=64, max_rows=10_000)
    torch.manual_seed(5)
    chunked, _ = log_likelihood(model, batch, k=64, max_rows=8 * 64)  # exactly one chunk
    torch.testing.assert_close(one, chunked)
    torch.manual_seed(5)
    split, _ = log_likelihood(model, batch, k=64, max_rows=8 * 16)  # four chunks of 16
    torch.manual_seed(5)
    with torch.no_grad():
        parts = torch.cat([model.log_importance_weights(batch, 16) for _ in range(4)])  # (64, 8)
    ref = torch.logsumexp(parts, 0) - math.log(64)
    torch.testing.assert_close(split, ref)
