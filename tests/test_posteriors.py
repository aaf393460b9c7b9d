"""Posteriors q(z|x) and the standard normal prior, against scipy and Monte Carlo truth."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from latentgap.errors import ConfigError
from latentgap.posteriors import (
    POSTERIORS,
    DiagonalGaussian,
    Posterior,
    TruncatedNormal,
    build_posterior,
)
from latentgap.priors import StandardNormal

F64 = torch.float64


def _params(b: int = 3, d: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    loc = torch.randn(b, d, generator=g, dtype=F64)
    log_scale = 0.5 * torch.randn(b, d, generator=g, dtype=F64) - 0.3
    return loc, log_scale


def test_registry_and_builder() -> None:
    assert set(POSTERIORS.names()) == {"gaussian", "truncated-normal"}
    h = torch.cat([torch.zeros(2, 3), torch.tensor([[-9.0, 0.0, 1.0]] * 2)], dim=1)  # (B, 2D)
    q = build_posterior("truncated-normal", h, bound=1.5, min_log_scale=-4.0)
    assert isinstance(q, TruncatedNormal) and q.bound == 1.5
    assert q.log_scale[0].tolist() == [-4.0, 0.0, 1.0]
    assert build_posterior("gaussian", h).log_scale.min().item() == -5.0
    with pytest.raises(ConfigError, match="unknown option"):
        build_posterior("gaussian", h, bound=2.0)
    with pytest.raises(ConfigError, match="bound"):
        build_posterior("truncated-normal", h, bound=-1.0)
    with pytest.raises(ConfigError, match="unknown posterior"):
        build_posterior("laplace", h)
    with pytest.raises(ValueError, match="2·D"):
        DiagonalGaussian.from_encoder_output(torch.zeros(2, 5))


@pytest.mark.parametrize("name", POSTERIORS.names())
def test_shapes_with_and_without_k(name: str) -> None:
    q = build_posterior(name, torch.randn(5, 6))  # B = 5, D = 3
    g = torch.Generator().manual_seed(0)
    assert q.rsample(generator=g).shape == (5, 3)
    z = q.rsample(7, generator=g)
    assert z.shape == (7, 5, 3)
    assert q.log_prob(z).shape == (7, 5)
    assert torch.isfinite(q.log_prob(z)).all()
    assert q.entropy().shape == q.kl_standard_normal().shape == (5,)
    assert q.mean.shape == q.stddev.shape == (5, 3)
    assert not q.sample(2).requires_grad


# --- diagonal Gaussian ----------------------------------------------------------------------


def test_gaussian_log_prob_and_entropy_match_scipy() -> None:
    loc, log_scale = _params()
    q = DiagonalGaussian(loc, log_scale)
    z = q.rsample(6, generator=torch.Generator().manual_seed(1)) + 0.3  # (K, B, D)
    want = stats.norm.logpdf(z.numpy(), loc.numpy(), log_scale.exp().numpy()).sum(-1)
    np.testing.assert_allclose(q.log_prob(z).numpy(), want, rtol=1e-12)
    want_h = stats.norm.entropy(loc.numpy(), log_scale.exp().numpy()).sum(-1)
    np.testing.assert_allclose(q.entropy().numpy(), want_h, rtol=1e-12)
    torch.testing.assert_close(q.stddev, log_scale.exp())


def test_gaussian_kl_matches_monte_carlo_and_generic_formula() -> None:
    loc, log_scale = _params()
    q = DiagonalGaussian(loc, log_scale)
    prior = StandardNormal(4)
    z = q.rsample(40_000, generator=torch.Generator().manual_seed(2))  # (K, B, D)
    terms = q.log_prob(z) - prior.log_prob(z)  # (K, B)
    mc, se = terms.mean(0), terms.std(0) / math.sqrt(terms.shape[0])
    kl = q.kl_standard_normal()
    assert ((kl - mc).abs() < 4 * se).all(), (kl, mc, se)
    torch.testing.assert_close(kl, Posterior.kl_standard_normal(q))


# --- truncated normal -----------------------------------------------------------------------


def _truncnorm(q: TruncatedNormal):
    a = q.bound
    return stats.truncnorm(-a, a, loc=q.loc.numpy(), scale=q.scale.numpy())


def test_truncated_normal_mass_constant() -> None:
    q = TruncatedNormal(torch.zeros(1, 1), torch.zeros(1, 1))
    assert q.log_mass == pytest.approx(math.log(0.95449974), abs=1e-8)


def test_truncated_normal_log_prob_matches_scipy() -> None:
    loc, log_scale = _params()
    q = TruncatedNormal(loc, log_scale, bound=2.0)
    g = torch.Generator().manual_seed(3)
    z = loc + log_scale.exp() * (4 * torch.rand(5, 3, 4, generator=g, dtype=F64) - 2) * 0.999
    want = _truncnorm(q).logpdf(z.numpy()).sum(-1)
    np.testing.assert_allclose(q.log_prob(z).numpy(), want, rtol=1e-12)
    outside = z.clone()
    outside[:, :, 1] = loc[:, 1] + 2.01 * log_scale[:, 1].exp()
    assert torch.isneginf(q.log_prob(outside)).all()
    np.testing.assert_allclose(q.entropy().numpy(), _truncnorm(q).entropy().sum(-1), rtol=1e-12)
    np.testing.assert_allclose(q.variance.numpy(), _truncnorm(q).var(), rtol=1e-12)


@pytest.mark.parametrize("bound", [0.5, 2.0, 4.0])
def test_truncated_normal_integrates_to_one(bound: float) -> None:
    q = TruncatedNormal(torch.tensor([[0.7]], dtype=F64), torch.tensor([[-0.4]], dtype=F64), bound)
    half = bound * math.exp(-0.4)
    grid = torch.linspace(0.7 - half, 0.7 + half, 20_001, dtype=F64)  # exactly the support
    density = q.log_prob(grid[:, None, None]).exp()  # (P, 1)
    total = torch.trapezoid(density[:, 0], grid).item()
    assert total == pytest.approx(1.0, abs=1e-8)
    beyond = torch.tensor([0.7 - 1.001 * half, 0.7 + 1.001 * half], dtype=F64)
    assert (q.log_prob(beyond[:, None, None]) == -math.inf).all()


def test_truncated_normal_samples_match_moments() -> None:
    loc = torch.tensor([[0.0, 1.5, -3.0, 10.0]], dtype=F64)
    log_scale = torch.tensor([[0.0, -1.0, 0.7, -3.0]], dtype=F64)
    q = TruncatedNormal(loc, log_scale)
    n = 100_000
    z = q.rsample(n, generator=torch.Generator().manual_seed(4))[:, 0]  # (n, D)
    scale = log_scale.exp()[0]
    assert ((z - loc[0]).abs() <= 2 * scale).all()
    ref = _truncnorm(q)
    mean, var = z.mean(0), z.var(0)
    se_mean = (var / n).sqrt()
    se_var = ((z - mean).square().var(0) / n).sqrt()
    assert ((mean - torch.from_numpy(ref.mean()[0])).abs() < 4 * se_mean).all()
    assert ((var - torch.from_numpy(ref.var()[0])).abs() < 4 * se_var).all()


def test_truncated_normal_own_samples_have_finite_density_far_from_origin() -> None:
    # |μ| ≫ σ in float32: z = μ + σε rounds, and the box test must tolerate that.
    loc = torch.tensor([[1000.0, -50.0, 3.0]])
    log_scale = torch.tensor([[-5.0, -5.0, -5.0]])
    q = TruncatedNormal(loc, log_scale)
    z = q.rsample(20_000, generator=torch.Generator().manual_seed(5))
    assert torch.isfinite(q.log_prob(z)).all()


def test_truncated_normal_rsample_is_differentiable() -> None:
    loc = torch.tensor([[0.3, -1.0]], dtype=F64, requires_grad=True)
    log_scale = torch.tensor([[0.2, -0.5]], dtype=F64, requires_grad=True)
    q = TruncatedNormal(loc, log_scale)
    n = 50_000
    z = q.rsample(n, generator=torch.Generator().manual_seed(6))  # (n, 1, 2)
    # d/dμ E[z] = 1, and d/dlogσ E[(z − μ)²] = 2·Var z.
    (grad_loc,) = torch.autograd.grad(z.mean(0).sum(), loc, retain_graph=True)
    torch.testing.assert_close(grad_loc, torch.ones_like(loc))
    centred_sq = (z - loc.detach()).square()  # μ held fixed, gradient through z only
    (grad_ls,) = torch.autograd.grad(centred_sq.mean(0).sum(), log_scale)
    pathwise = 2 * centred_sq.detach()  # per-sample gradient, d/dlogσ (σε)² = 2(σε)²
    se = pathwise.std(0) / math.sqrt(n)
    assert ((grad_ls - 2 * q.variance.detach()).abs() < 4 * se).all()


def test_truncated_normal_kl_matches_monte_carlo() -> None:
    loc, log_scale = _params(seed=7)
    q = TruncatedNormal(loc, log_scale)
    z = q.rsample(40_000, generator=torch.Generator().manual_seed(8))
    terms = q.log_prob(z) - StandardNormal(4).log_prob(z)  # (K, B)
    mc, se = terms.mean(0), terms.std(0) / math.sqrt(terms.shape[0])
    assert ((q.kl_standard_normal() - mc).abs() < 4 * se).all()


def test_detach_keeps_the_distribution() -> None:
    loc, log_scale = (t.requires_grad_() for t in _params())
    q = TruncatedNormal(loc, log_scale, bound=1.0).detach()
    assert not q.loc.requires_grad and q.bound == 1.0
    torch.testing.assert_close(q.entropy(), TruncatedNormal(loc, log_scale, 1.0).entropy())


# --- standard normal prior --------------------------------------------------------------------


def test_standard_normal_prior() -> None:
    prior = StandardNormal(3)
    assert list(prior.parameters()) == []
    z = prior.sample(5, generator=torch.Generator().manual_seed(9), dtype=F64)
    assert z.shape == (5, 3)
    want = stats.multivariate_normal(np.zeros(3), np.eye(3)).logpdf(z.numpy())
    np.testing.assert_allclose(prior.log_prob(z).numpy(), want, rtol=1e-12)
    assert prior.log_prob(z.expand(2, 5, 3)).shape == (2, 5)
    with pytest.raises(ValueError, match="last dim 3"):
        prior.log_prob(torch.zeros(2, 4))
