"""log Z estimators of the pull-back prior (Eq. 8 of the VAEPP paper) against closed forms.

With a linear decoder G(z) = A z + b and a quadratic critic D(x) = ½ xᵀCx + cᵀx, D(G(z)) is
quadratic in z, so p_λ is Gaussian and Z = ∫ N(z; 0, I)·exp(−β·D(G(z))) dz is a Gaussian integral.
Tolerances are multiples of the estimators' own standard errors; seeds are fixed.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from latentgap.data.base import DataSpec, ImageSet
from latentgap.distributed import DistContext
from latentgap.posteriors import DiagonalGaussian
from latentgap.priors import (
    LogZEstimate,
    PullbackPrior,
    log_z_normal_proposal,
    log_z_posterior_proposal,
    log_z_training_mixture,
    posterior_log_weights,
)

F64 = torch.float64
BETA = 1.5


class Quadratic:
    """D(G(z)) = ½ zᵀMz + mᵀz + k0 from G(z) = A z + b, D(x) = ½ xᵀCx + cᵀx; with
    P = I + βM: log Z = −½ log det P + ½β² mᵀP⁻¹m − βk0 and p_λ = N(−βP⁻¹m, P⁻¹)."""

    def __init__(self, dim: int = 3, seed: int = 0, diagonal: bool = False) -> None:
        g = torch.Generator().manual_seed(seed)
        x_dim = dim if diagonal else dim + 2
        if diagonal:  # diagonal M, so p_λ factorises over dimensions
            self.A = torch.diag(0.5 + torch.rand(dim, generator=g, dtype=F64))
            self.C = torch.diag(0.5 + torch.rand(dim, generator=g, dtype=F64))
        else:
            self.A = 0.6 * torch.randn(x_dim, dim, generator=g, dtype=F64)
            L = torch.randn(x_dim, x_dim, generator=g, dtype=F64)
            self.C = L @ L.T / x_dim + 0.1 * torch.eye(x_dim, dtype=F64)
        self.b = 0.3 * torch.randn(x_dim, generator=g, dtype=F64)
        self.c = 0.5 * torch.randn(x_dim, generator=g, dtype=F64)
        self.dim = dim
        self.prior = PullbackPrior(dim, beta_bound=2 * BETA).double()  # β = w/2 = BETA
        M = self.A.T @ self.C @ self.A
        m = self.A.T @ (self.C @ self.b + self.c)
        k0 = 0.5 * self.b @ self.C @ self.b + self.c @ self.b
        P = torch.eye(dim, dtype=F64) + BETA * M
        self.cov = torch.linalg.inv(P)  # p_λ
        self.mean = -BETA * self.cov @ m
        self.log_z = (-0.5 * torch.logdet(P) + 0.5 * BETA**2 * m @ self.cov @ m - BETA * k0).item()

    def d_of_g(self, z: torch.Tensor) -> torch.Tensor:
        x = z @ self.A.T + self.b  # (..., X)
        return 0.5 * ((x @ self.C) * x).sum(-1) + x @ self.c  # (...)

    def box_log_mass(self, lo: torch.Tensor, hi: torch.Tensor) -> float:
        """log P_{p_λ}(lo ≤ z ≤ hi) for a diagonal p_λ."""
        sd = self.cov.diagonal().sqrt()
        a = ((lo - self.mean) / sd).numpy()
        b = ((hi - self.mean) / sd).numpy()
        return float(np.log(stats.norm.cdf(b) - stats.norm.cdf(a)).sum())


def images(n: int) -> ImageSet:
    """n one-pixel "images" with gray levels j/n, j = 0..n−1: e tells posterior_fn which image."""
    values = (torch.arange(n, dtype=torch.float32) / n).reshape(n, 1, 1, 1)
    return ImageSet(values, spec=DataSpec("pixels", (1, 1, 1), "continuous"))


def gaussian_posteriors(loc: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor | None = None):
    """posterior_fn: q(z|e) = N(loc + e·shift, diag scale²), e the image's gray level."""

    def posterior_fn(batch) -> DiagonalGaussian:
        b = len(batch)
        e = batch.e.reshape(b, 1).double()  # (B, 1)
        offset = 0 if shift is None else e * shift  # (B, D)
        mu = loc.expand(b, -1) + offset
        return DiagonalGaussian(mu, scale.log().expand(b, -1).clone())

    return posterior_fn


def test_closed_form_log_z_by_quadrature() -> None:
    """The test's own truth: Z of a 2-D model by a Riemann sum on a grid."""
    model = Quadratic(dim=2, seed=3)
    t = torch.linspace(-10, 10, 1001, dtype=F64)
    z = torch.stack(torch.meshgrid(t, t, indexing="ij"), -1).reshape(-1, 2)
    log_f = model.prior.log_unnormalized(z, model.d_of_g(z))
    quad = (torch.logsumexp(log_f, 0) + 2 * math.log(t[1] - t[0])).item()
    assert quad == pytest.approx(model.log_z, abs=1e-6)


def test_normal_proposal_and_its_standard_error() -> None:
    model = Quadratic()
    fn = model.prior.log_weight_fn(model.d_of_g)
    g = torch.Generator().manual_seed(0)
    est = log_z_normal_proposal(fn, 3, 200_000, 50_000, generator=g, dtype=F64)
    assert est.method == "normal-proposal" and est.n_samples == 200_000
    assert abs(est.log_z - model.log_z) < 4 * est.std_err
    assert 0 < est.std_err < 0.05 and 1 <= est.ess <= est.n_samples
    # The reported standard error matches the spread of independent repeats.
    repeats = [log_z_normal_proposal(fn, 3, 2000, generator=g, dtype=F64) for _ in range(60)]
    spread = np.std([r.log_z for r in repeats], ddof=1)
    reported = np.mean([r.std_err for r in repeats])
    assert 1 / 1.5 < spread / reported < 1.5


def test_standard_error_formula() -> None:
    log_w = torch.randn(5000, dtype=F64).mul(0.7)
    est = LogZEstimate.from_log_weights(log_w)
    w = log_w.exp().numpy()
    assert est.log_z == pytest.approx(math.log(w.mean()), abs=1e-12)
    assert est.std_err == pytest.approx(w.std(ddof=1) / (math.sqrt(w.size) * w.mean()), rel=1e-9)
    # Constant weights: exactly zero error, huge offsets stay finite (log space throughout).
    flat = LogZEstimate.from_log_weights(torch.full((100,), -3000.0, dtype=F64))
    assert flat.log_z == pytest.approx(-3000.0) and flat.std_err == pytest.approx(0.0, abs=1e-6)
    assert LogZEstimate.from_log_weights(torch.zeros(1)).std_err == math.inf
    with pytest.raises(ValueError, match="not finite"):
        LogZEstimate.from_log_weights(torch.tensor([0.0, math.nan]))


@pytest.mark.parametrize("truncated", [False, True])
def test_posterior_proposal_one_image_is_unbiased(truncated: bool) -> None:
    """N = 1: q̂ = q exactly. q is wider than p_λ in every direction (bounded weights); with
    truncation its ±2σ box spans ≥ 5 sd of every marginal of p_λ, so the box misses < 2e-6 of
    p_λ's mass and the estimate targets Z itself."""
    model = Quadratic()
    width = torch.linalg.eigvalsh(model.cov).max().sqrt()
    scale = (2.5 if truncated else 1.5) * width * torch.ones(3, dtype=F64)
    g = torch.Generator().manual_seed(1)
    est = log_z_posterior_proposal(
        model.prior.log_f_fn(model.d_of_g),
        gaussian_posteriors(model.mean, scale),
        images(1),
        samples_per_image=50_000,
        passes=2,
        truncated=truncated,
        max_rows=20_000,
        generator=g,
    )
    assert est.n_samples == 100_000
    assert est.method == ("posterior-proposal-truncated" if truncated else "posterior-proposal")
    assert abs(est.log_z - model.log_z) < 4 * est.std_err
    assert est.std_err < 0.02


def test_truncated_box_that_misses_mass_gives_the_box_integral() -> None:
    """A narrow, offset truncated q estimates ∫_box f_λ = Z·P_{p_λ}(box), not Z."""
    model = Quadratic(diagonal=True)
    sd = model.cov.diagonal().sqrt()
    loc, scale = model.mean + 0.5 * sd, 0.7 * sd
    g = torch.Generator().manual_seed(2)
    est = log_z_posterior_proposal(
        model.prior.log_f_fn(model.d_of_g),
        gaussian_posteriors(loc, scale),
        images(1),
        samples_per_image=50_000,
        generator=g,
    )
    exact = model.log_z + model.box_log_mass(loc - 2 * scale, loc + 2 * scale)
    assert exact < model.log_z - 0.3
    assert abs(est.log_z - exact) < 4 * est.std_err


def test_posterior_proposal_upper_bound_with_several_images() -> None:
    """N = 4 overlapping posteriors: E Ẑ = Σ_j ∫_{supp q_j} f_λ ≥ Z (N·Z for plain normals)."""
    model = Quadratic(diagonal=True)
    sd = model.cov.diagonal().sqrt()
    shift = 0.4 * sd
    loc, scale = model.mean - 0.6 * sd, 1.2 * sd
    data = images(4)  # gray levels j/4 → locs loc + (j/4)·shift: offsets 0, 0.1, 0.2, 0.3 sd
    fn = gaussian_posteriors(loc, scale, shift)
    log_f = model.prior.log_f_fn(model.d_of_g)
    g = torch.Generator().manual_seed(3)
    trunc = log_z_posterior_proposal(
        log_f, fn, data, samples_per_image=20_000, batch_size=3, generator=g
    )
    plain = log_z_posterior_proposal(
        log_f, fn, data, samples_per_image=20_000, batch_size=3, truncated=False, generator=g
    )
    assert trunc.n_samples == plain.n_samples == 80_000
    boxes = [
        model.box_log_mass(loc + j / 4 * shift - 2 * scale, loc + j / 4 * shift + 2 * scale)
        for j in range(4)
    ]
    exact_trunc = model.log_z + float(np.logaddexp.reduce(boxes))
    assert abs(trunc.log_z - exact_trunc) < 4 * trunc.std_err
    assert abs(plain.log_z - (model.log_z + math.log(4))) < 4 * plain.std_err
    assert trunc.log_z > model.log_z - 4 * trunc.std_err  # the upper-bound property
    assert plain.log_z > model.log_z


def test_truncation_reduces_weight_variance() -> None:
    """A posterior narrower than p_λ has heavy-tailed plain-normal weights; truncation bounds
    them (section 3.4: 0.000967 vs 0.809 on MNIST)."""
    model = Quadratic(diagonal=True)
    sd = model.cov.diagonal().sqrt()
    fn = gaussian_posteriors(model.mean, 0.6 * sd)
    log_f = model.prior.log_f_fn(model.d_of_g)
    kwargs = {"samples_per_image": 20_000, "generator": torch.Generator().manual_seed(4)}
    trunc = log_z_posterior_proposal(log_f, fn, images(1), **kwargs)
    plain = log_z_posterior_proposal(log_f, fn, images(1), truncated=False, **kwargs)
    assert trunc.relative_variance < 0.5 * plain.relative_variance


def test_combine_equals_unsharded() -> None:
    g = torch.Generator().manual_seed(5)
    log_w = 3.0 * torch.randn(10_000, generator=g, dtype=F64) - 50.0
    whole = LogZEstimate.from_log_weights(log_w, "x")
    parts = [LogZEstimate.from_log_weights(c, "x") for c in log_w.split([1, 999, 4000, 5000])]
    merged = LogZEstimate.combine(parts)
    assert merged.n_samples == whole.n_samples
    for field in ("log_z", "std_err", "log_sum_w", "log_sum_w2"):
        assert getattr(merged, field) == pytest.approx(getattr(whole, field), rel=1e-12, abs=1e-12)
    assert LogZEstimate.from_dict(merged.to_dict()) == merged
    with pytest.raises(ValueError, match="different methods"):
        LogZEstimate.combine([parts[0], LogZEstimate.from_log_weights(log_w, "y")])


def test_sharded_sweep_combines() -> None:
    """Rank shards of the dataset cover it once; their combination is a valid estimate."""
    model = Quadratic()
    scale = 1.5 * torch.linalg.eigvalsh(model.cov).max().sqrt() * torch.ones(3, dtype=F64)
    log_f, fn = model.prior.log_f_fn(model.d_of_g), gaussian_posteriors(model.mean, scale)
    g = torch.Generator().manual_seed(6)
    shards = [
        log_z_posterior_proposal(
            log_f,
            fn,
            images(1).subset(indices=torch.zeros(6, dtype=torch.long)),
            n_train=1,
            samples_per_image=2000,
            batch_size=2,
            ctx=DistContext(rank=r, world_size=3),  # no process group: this rank's part only
            generator=g,
            truncated=False,
        )
        for r in range(3)
    ]
    merged = LogZEstimate.combine(shards)
    assert [s.n_samples for s in shards] == [4000] * 3 and merged.n_samples == 12_000
    assert abs(merged.log_z - model.log_z) < 4 * merged.std_err


def test_training_mixture_is_log_mean_exp_and_differentiable() -> None:
    g = torch.Generator().manual_seed(7)
    a = torch.randn(128, generator=g, dtype=F64).requires_grad_()  # (a) fresh ε
    b = (torch.randn(4, 16, generator=g, dtype=F64) - 1.0).requires_grad_()  # (b) (K, B)
    out = log_z_training_mixture(a, b)
    assert out.shape == ()
    expected = math.log(0.5 * (a.detach().exp().mean() + b.detach().exp().mean()).item())
    assert out.item() == pytest.approx(expected, abs=1e-12)
    out.backward()
    z_hat = math.exp(expected)
    torch.testing.assert_close(a.grad, 0.5 * a.detach().exp() / 128 / z_hat)
    torch.testing.assert_close(b.grad, 0.5 * b.detach().exp() / 64 / z_hat)
    # The −20 floor of the reference code (and no gradient below it).
    low = torch.full((8,), -40.0, requires_grad=True)
    floored = log_z_training_mixture(low, low.detach() - 5)
    assert floored.item() == -20.0
    floored.backward()
    assert low.grad.abs().sum() == 0
    assert log_z_training_mixture(low, low, floor=None).item() == pytest.approx(-40.0)


def test_posterior_log_weights() -> None:
    log_f, log_q = torch.tensor([-1.0, -2.0]), torch.tensor([0.5, 0.25])
    torch.testing.assert_close(
        posterior_log_weights(log_f, log_q, 60_000), log_f - log_q + math.log(60_000)
    )
    with pytest.raises(ValueError, match="n_train"):
        posterior_log_weights(log_f, log_q, 0)
