"""Likelihoods p(x|z): exact values against scipy, normalisation, sampling frequencies."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy import stats

from latentgap.data.base import DataSpec
from latentgap.errors import ConfigError
from latentgap.likelihoods import (
    LIKELIHOODS,
    DiscretizedLogistic,
    Gaussian,
    build_likelihood,
    default_likelihood,
)

PIXEL = DataSpec("pixel", (1, 1, 1), "discrete8")
IMAGE = DataSpec("image", (3, 4, 5), "continuous")
LEVELS = torch.arange(256, dtype=torch.float64) / 255


def test_registry_and_defaults() -> None:
    assert set(LIKELIHOODS.names()) == {"bernoulli", "gaussian", "discretized-logistic"}
    expected = {
        "binary": "bernoulli",
        "continuous": "gaussian",
        "discrete8": "discretized-logistic",
    }
    for kind, name in expected.items():
        assert default_likelihood(DataSpec("d", (1, 2, 2), kind)) == name
    assert LIKELIHOODS.get("discretized-logistic").param_channels == 2
    with pytest.raises(ConfigError, match="unknown option"):
        build_likelihood("gaussian", IMAGE, sigma=1.0)
    with pytest.raises(ConfigError, match="mean_activation"):
        build_likelihood("gaussian", IMAGE, mean_activation="tanh")
    with pytest.raises(ConfigError, match="unknown likelihood"):
        build_likelihood("poisson", IMAGE)


def test_wrong_parameter_shape_is_rejected() -> None:
    lik = build_likelihood("discretized-logistic", IMAGE)
    with pytest.raises(ValueError, match=r"\(\.\.\., 6, 4, 5\)"):
        lik.log_prob(torch.zeros(2, 3, 4, 5), torch.zeros(2, 3, 4, 5))


# --- Bernoulli ------------------------------------------------------------------------------


def test_bernoulli_matches_scipy() -> None:
    g = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(2, 3, 3, 4, 5, generator=g, dtype=torch.float64)  # (K, B, C, H, W)
    x = torch.bernoulli(torch.full((3, 3, 4, 5), 0.4, dtype=torch.float64), generator=g)
    lik = build_likelihood("bernoulli", IMAGE)
    got = lik.log_prob(logits, x)  # (K, B)
    p = torch.sigmoid(logits).numpy()
    want = stats.bernoulli.logpmf(np.broadcast_to(x.numpy(), p.shape), p).sum(axis=(-3, -2, -1))
    assert got.shape == (2, 3)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-10)


def test_bernoulli_soft_target_is_expectation_over_binarisations() -> None:
    spec = DataSpec("three", (1, 1, 3), "binary")
    lik = build_likelihood("bernoulli", spec)
    logits = torch.tensor([[[[1.5, -0.3, 4.0]]]], dtype=torch.float64)
    e = torch.tensor([[[0.2, 0.7, 0.95]]], dtype=torch.float64)  # gray image
    expectation = 0.0
    for bits in itertools.product((0.0, 1.0), repeat=3):
        x = torch.tensor([[bits]], dtype=torch.float64)
        weight = torch.prod(torch.where(x == 1, e, 1 - e)).item()
        expectation += weight * lik.log_prob(logits, x).item()
    assert lik.log_prob(logits, e).item() == pytest.approx(expectation, rel=1e-12)


def test_bernoulli_is_stable_for_extreme_logits() -> None:
    spec = DataSpec("two", (1, 1, 2), "binary")
    lik = build_likelihood("bernoulli", spec)
    logits = torch.tensor([[[[100.0, -100.0]]]], requires_grad=True)
    agree = lik.log_prob(logits, torch.tensor([[[1.0, 0.0]]]))
    disagree = lik.log_prob(logits, torch.tensor([[[0.0, 1.0]]]))
    assert agree.item() == pytest.approx(0.0, abs=1e-6)
    assert disagree.item() == pytest.approx(-200.0, rel=1e-6)
    disagree.sum().backward()
    assert torch.isfinite(logits.grad).all()


# --- Gaussian -------------------------------------------------------------------------------


@pytest.mark.parametrize("activation", ["sigmoid", "identity"])
def test_gaussian_matches_scipy_with_learnt_gamma(activation: str) -> None:
    g = torch.Generator().manual_seed(1)
    lik = build_likelihood("gaussian", IMAGE, mean_activation=activation, log_gamma=-1.3).double()
    raw = torch.randn(4, 3, 4, 5, generator=g, dtype=torch.float64)
    x = torch.rand(4, 3, 4, 5, generator=g, dtype=torch.float64)
    got = lik.log_prob(raw, x)
    mean = torch.sigmoid(raw) if activation == "sigmoid" else raw
    log_gamma = lik.log_gamma.item()  # -1.3 rounded to float32 at construction
    sd = math.exp(log_gamma / 2)
    want = stats.norm.logpdf(x.numpy(), mean.numpy(), sd).sum(axis=(1, 2, 3))
    np.testing.assert_allclose(got.detach().numpy(), want, rtol=1e-10)
    # d/dlogγ Σ log N = ½ Σ (x − m)²/γ − n/2
    got.sum().backward()
    expected_grad = (0.5 * (x - mean).square().sum() / math.exp(log_gamma) - 0.5 * x.numel()).item()
    assert lik.log_gamma.grad.item() == pytest.approx(expected_grad, rel=1e-10)


def test_gaussian_fixed_gamma_and_floor() -> None:
    fixed = build_likelihood("gaussian", IMAGE, learn_gamma=False)
    assert list(fixed.parameters()) == [] and "log_gamma" in fixed.state_dict()
    floored = build_likelihood("gaussian", IMAGE, log_gamma=-30.0, min_log_gamma=-10.0)
    eff = floored.effective_log_gamma()
    assert eff.item() == pytest.approx(-10.0, abs=1e-6)
    eff.backward()
    assert floored.log_gamma.grad.item() > 0  # the soft floor keeps a gradient
    assert isinstance(floored, Gaussian)


# --- discretised logistic --------------------------------------------------------------------


def _level_log_probs(loc: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """log P(level j) for each (loc, log_scale) pair: (256, N)."""
    lik = build_likelihood("discretized-logistic", PIXEL)
    params = torch.stack([loc, log_scale], dim=1)[:, :, None, None]  # (N, 2, 1, 1)
    x = LEVELS.to(loc.dtype)[:, None, None, None, None]  # (256, 1, 1, 1, 1)
    return lik.log_prob(params, x)  # (256, N)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_discretized_logistic_normalises(dtype: torch.dtype) -> None:
    locs = torch.tensor([-3.0, -0.2, 0.0, 0.001, 0.37, 0.5, 0.999, 1.0, 1.4, 5.0])
    log_scales = torch.tensor([-10.0, -7.0, -5.0, -2.0, 0.0, 3.0, 8.0])
    loc, log_scale = (
        t.reshape(-1).to(dtype) for t in torch.meshgrid(locs, log_scales, indexing="ij")
    )
    lp = _level_log_probs(loc, log_scale)
    assert torch.isfinite(lp).all()
    total = torch.logsumexp(lp, dim=0).exp()
    torch.testing.assert_close(total, torch.ones_like(total), atol=1e-5, rtol=0)


def test_discretized_logistic_matches_scipy_cdf_differences() -> None:
    loc = torch.tensor([0.2, 0.5, 0.93, -0.1], dtype=torch.float64)
    log_scale = torch.tensor([-4.0, -2.0, -3.0, -1.0], dtype=torch.float64)
    lp = _level_log_probs(loc, log_scale).numpy()  # (256, 4)
    h = 0.5 / 255
    x = LEVELS.numpy()[:, None]
    dist = stats.logistic(loc=loc.numpy(), scale=np.exp(log_scale.numpy()))
    # Difference the CDF below the location and the survival function above it, so that
    # scipy's reference keeps its digits in both tails.
    below = dist.cdf(x + h) - dist.cdf(x - h)
    above = dist.sf(x - h) - dist.sf(x + h)
    p = np.where(x < loc.numpy(), below, above)
    p[0] = dist.cdf(h)
    p[-1] = dist.sf(1 - h)
    assert (p > 0).all()
    np.testing.assert_allclose(lp, np.log(p), rtol=1e-9)


def test_discretized_logistic_far_tail_does_not_underflow() -> None:
    # Level 10 is ~500 scales below the location: P ≈ e^{-506}, far below float32's range.
    loc, log_scale = torch.tensor([0.5]), torch.tensor([-7.0], requires_grad=True)
    lik = build_likelihood("discretized-logistic", PIXEL)
    params = torch.stack([loc.expand(1), log_scale], dim=1)[:, :, None, None]
    lp = lik.log_prob(params, torch.full((1, 1, 1, 1), 10 / 255))
    s, x, h = math.exp(-7.0), 10 / 255, 0.5 / 255
    b, w = (x + h - 0.5) / s, 2 * h / s  # σ(b) − σ(b − w) ≈ e^b (1 − e^{−w}) when b ≪ 0
    assert lp.item() == pytest.approx(b + math.log(-math.expm1(-w)), rel=1e-5)
    lp.sum().backward()
    assert torch.isfinite(log_scale.grad).all()


@pytest.mark.parametrize(("loc", "scale"), [(0.01, 3 / 255), (0.7, 1.5 / 255), (1.02, 4 / 255)])
def test_discretized_logistic_samples_follow_pmf(loc: float, scale: float) -> None:
    n = 200_000
    lik = build_likelihood("discretized-logistic", PIXEL)
    params = torch.tensor([loc, math.log(scale)]).reshape(1, 2, 1, 1).expand(n, 2, 1, 1)
    x = lik.sample(params, generator=torch.Generator().manual_seed(2))  # (n, 1, 1, 1)
    counts = torch.bincount(torch.round(x.reshape(-1) * 255).long(), minlength=256).double()
    pmf = _level_log_probs(
        torch.tensor([loc], dtype=torch.float64),
        torch.tensor([math.log(scale)], dtype=torch.float64),
    )[:, 0].exp()
    freq = counts / n
    se = (pmf * (1 - pmf) / n).sqrt().clamp(min=1 / n)
    assert ((freq - pmf).abs() / se).max() < 5
    keep = pmf * n > 5
    _, pvalue = stats.chisquare(counts[keep], pmf[keep] / pmf[keep].sum() * counts[keep].sum())
    assert pvalue > 1e-3


def test_discretized_logistic_mean_is_clamped_location() -> None:
    lik = DiscretizedLogistic(PIXEL)
    params = torch.tensor([[-0.5, 0.0], [0.3, -3.0], [1.7, 1.0]]).reshape(3, 2, 1, 1)
    assert lik.mean(params).reshape(-1).tolist() == pytest.approx([0.0, 0.3, 1.0])


# --- contract tests over the registry --------------------------------------------------------


def _support(name: str) -> tuple[torch.Tensor, float]:
    """Points covering the support of one pixel, and the quadrature weight of each."""
    if name == "bernoulli":
        return torch.tensor([0.0, 1.0], dtype=torch.float64), 1.0
    if name == "discretized-logistic":
        return LEVELS, 1.0
    if name == "gaussian":
        grid = torch.linspace(-30.0, 30.0, 600_001, dtype=torch.float64)
        return grid, (grid[1] - grid[0]).item()
    raise AssertionError(f"add the support of likelihood {name!r} to this test")


@pytest.mark.parametrize("name", LIKELIHOODS.names())
def test_every_likelihood_normalises(name: str) -> None:
    lik = build_likelihood(name, PIXEL).double()
    k = lik.param_channels
    params = torch.tensor([0.4, -1.0][:k] if k == 2 else [0.4], dtype=torch.float64)
    points, weight = _support(name)
    lp = lik.log_prob(params.reshape(1, k, 1, 1), points.reshape(-1, 1, 1, 1, 1))  # (P, 1)
    total = (torch.logsumexp(lp.reshape(-1), 0) + math.log(weight)).exp().item()
    assert total == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("name", LIKELIHOODS.names())
def test_every_likelihood_samples_with_right_shape_and_range(name: str) -> None:
    lik = build_likelihood(name, IMAGE)
    g = torch.Generator().manual_seed(3)
    params = torch.randn(2, 6, lik.param_channels * 3, 4, 5, generator=g)  # (K, B, k*C, H, W)
    x = lik.sample(params, generator=g)
    mean = lik.mean(params)
    assert x.shape == mean.shape == (2, 6, 3, 4, 5)
    assert torch.isfinite(x).all()
    assert ((mean >= 0) & (mean <= 1)).all()
    if name != "gaussian":  # a Gaussian draw is unbounded
        assert ((x >= 0) & (x <= 1)).all()
    if name == "bernoulli":
        assert set(x.unique().tolist()) <= {0.0, 1.0}
    if name == "discretized-logistic":
        levels = x * 255
        torch.testing.assert_close(levels, levels.round(), atol=1e-4, rtol=0)
    assert lik.log_prob(params, x).shape == (2, 6)
    assert lik.log_prob(params, x[0, 0]).shape == (2, 6)  # data broadcast over samples
