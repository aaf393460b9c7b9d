"""Annealed importance sampling of log Z against closed forms, including the cases where the
paper's Eq. (8) estimate is wrong. Tolerances: 4 standard errors of the chains' spread plus the
bias a finite schedule is allowed (0.15 nats at these settings, well above the ≈ 0.01–0.1 nats
measured; forward AIS is low-biased, reverse AIS high-biased). Seeds are fixed."""

from __future__ import annotations

import math

import pytest
import torch
from tests.test_partition import Quadratic, gaussian_posteriors, images

from latentgap.distributed import DistContext
from latentgap.priors import LogZEstimate, log_z_posterior_proposal
from latentgap.priors.ais import ais_log_z, temperature_schedule
from latentgap.samplers.hmc import HMCState, hmc_step

D = 13
BIAS = 0.15


def check_sandwich(r, exact: float) -> None:
    """Forward below (up to noise), reverse above (up to noise), both within BIAS of the truth."""
    assert r.log_z - 4 * r.std_err <= exact + 1e-9, (r.log_z, exact)
    assert r.log_z_reverse + 4 * r.reverse_std_err >= exact - 1e-9, (r.log_z_reverse, exact)
    assert abs(r.log_z - exact) < BIAS + 4 * r.std_err
    assert abs(r.log_z_reverse - exact) < BIAS + 4 * r.reverse_std_err
    assert r.agree


def test_schedules_run_from_zero_to_one() -> None:
    for kind in ("sigmoid", "linear", "geometric"):
        t = temperature_schedule(50, kind)
        assert t[0] == 0 and t[-1] == 1 and len(t) == 51 and (t.diff() > 0).all()
    with pytest.raises(ValueError, match="unknown schedule"):
        temperature_schedule(5, "cosine")


def test_linear_energy() -> None:
    """f = N(z)·exp(aᵀz): Z = exp(‖a‖²/2), the prior N(a, I)."""
    a = torch.randn(D, generator=torch.Generator().manual_seed(0))
    r = ais_log_z(lambda z: z @ a, D, n_chains=256, n_temps=200, n_leapfrog=3, seed=1)
    check_sandwich(r, 0.5 * a.square().sum().item())
    assert 0.5 < r.acceptance < 0.85  # the pilot steered the step sizes to the target 0.65
    assert r.samples.mean(0).sub(a).abs().max() < 0.4  # end states ~ N(a, I), 256 chains


def test_indefinite_quadratic_energy() -> None:
    """ℓ = −½ zᵀAz with A indefinite (eigenvalues −0.8 … 30): Z = det(I + A)^(−1/2)."""
    g = torch.Generator().manual_seed(2)
    q, _ = torch.linalg.qr(torch.randn(D, D, generator=g))
    eig = torch.linspace(-0.8, 30.0, D)
    a = q @ torch.diag(eig) @ q.T
    r = ais_log_z(
        lambda z: -0.5 * ((z @ a) * z).sum(1), D, n_chains=512, n_temps=400, n_leapfrog=3, seed=3
    )
    check_sandwich(r, -0.5 * torch.log1p(eig).sum().item())


def two_modes(c1: float, c2: float, s: float = 0.3):
    m1, m2 = torch.zeros(D), torch.zeros(D)
    m1[0], m2[0], m2[1] = 4.0, -4.0, 2.0
    log_2pi = math.log(2 * math.pi)

    def log_weight(z: torch.Tensor) -> torch.Tensor:
        def log_normal(m):
            return -0.5 * ((z - m) / s).square().sum(1) - D * math.log(s) - 0.5 * D * log_2pi

        log_f = torch.logsumexp(
            torch.stack([log_normal(m1) + math.log(c1), log_normal(m2) + math.log(c2)]), 0
        )
        return log_f + 0.5 * z.square().sum(1) + 0.5 * D * log_2pi  # log f − log N

    return log_weight


def test_two_mode_mixture_with_known_mode_masses() -> None:
    """f = c₁N(m₁, s²I) + c₂N(m₂, s²I), modes 8 apart: Z = c₁ + c₂; the weighted end states put
    mass c₁/(c₁ + c₂) on the first mode although the unweighted chains do not."""
    c1, c2 = 0.5, 3.0
    r = ais_log_z(two_modes(c1, c2), D, n_chains=1024, n_temps=600, n_leapfrog=3, seed=4)
    check_sandwich(r, math.log(c1 + c2))
    first = (r.samples[:, 0] > 0).double()
    weights = torch.softmax(r.log_weights, 0)
    share = (weights * first).sum().item()
    se = math.sqrt(share * (1 - share) / r.ess)
    assert abs(share - c1 / (c1 + c2)) < 4 * se
    assert abs(first.mean().item() - c1 / (c1 + c2)) > 10 * se  # the chains alone are off


def test_pullback_prior_of_a_linear_gaussian_vaepp_where_eq8_fails() -> None:
    """latentgap's own PullbackPrior with a linear decoder and quadratic critic (p_λ Gaussian,
    log Z closed form). Narrow truncated posteriors that miss p_λ's mass put Eq. (8) far below
    log Z, with a standard error that hides it; AIS finds log Z."""
    model = Quadratic(dim=D, seed=5, diagonal=True)
    sd = model.cov.diagonal().sqrt()
    loc, scale = model.mean + 1.5 * sd, 0.4 * sd
    eq8 = log_z_posterior_proposal(
        model.prior.log_f_fn(model.d_of_g),
        gaussian_posteriors(loc, scale),
        images(1),
        samples_per_image=20_000,
        generator=torch.Generator().manual_seed(6),
    )
    assert eq8.log_z < model.log_z - 10 and eq8.std_err < 0.25  # confidently wrong

    def log_weight(z: torch.Tensor) -> torch.Tensor:
        return model.prior.log_weight(model.d_of_g(z))

    r = ais_log_z(
        log_weight, D, n_chains=256, n_temps=300, n_leapfrog=3, seed=7, dtype=torch.float64
    )
    check_sandwich(r, model.log_z)


def test_disagreement_warns() -> None:
    """Far too few temperatures for separated modes: the forward/reverse gap exceeds the
    tolerance, and the user is told."""
    with pytest.warns(UserWarning, match="disagree"):
        r = ais_log_z(two_modes(0.02, 40.0, s=0.1), D, n_chains=128, n_temps=5, seed=8)
    assert r.agree is False and r.gap > r.tolerance


def test_shards_combine() -> None:
    """Each rank anneals its share of the chains with its own stream; the shards combine."""
    a = torch.linspace(-1, 1, D)
    shards = [
        ais_log_z(
            lambda z: z @ a,
            D,
            n_chains=300,
            n_temps=100,
            n_leapfrog=3,
            reverse=False,
            coarse_fraction=None,
            ctx=DistContext(rank=r, world_size=3),  # no process group: this rank's part only
        )
        for r in range(3)
    ]
    assert [s.n_chains for s in shards] == [100] * 3
    assert len({s.log_z for s in shards}) == 3  # different random streams
    merged = LogZEstimate.combine([s.estimate for s in shards])
    assert merged.n_samples == 300
    assert abs(merged.log_z - 0.5 * a.square().sum().item()) < BIAS + 4 * merged.std_err


def test_hmc_leaves_a_gaussian_invariant() -> None:
    """Chains started at exact samples of N(μ, diag σ²) stay distributed so after 20 steps."""
    mu, sd = torch.linspace(-2, 2, 4), torch.tensor([0.3, 1.0, 2.0, 0.5])

    def potential(z):
        return 0.5 * ((z - mu) / sd).square().sum(1), (z - mu) / sd**2, ()

    g = torch.Generator().manual_seed(9)
    state = HMCState.at(potential, mu + sd * torch.randn(20_000, 4, generator=g))
    for _ in range(20):
        state, prob = hmc_step(potential, state, 0.4, 4, g)
    se = sd / math.sqrt(20_000) * 3  # autocorrelated chains: a few times the iid error
    assert (state.z.mean(0) - mu).abs().le(4 * se).all()
    assert (state.z.std(0) / sd - 1).abs().max() < 0.05
    assert 0.3 < prob.mean() < 1.0
