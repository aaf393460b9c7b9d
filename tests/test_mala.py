"""MALA (VAEPP Section 4.3) against analytic targets. Tolerances come from standard errors:
the chains are independent, so the final states' sample mean has standard error
sqrt(var / n_chains), a sample covariance entry sqrt((Σ_ii Σ_jj + Σ_ij²) / n_chains), and a
side fraction sqrt(p (1 − p) / n_chains); every check allows 4 standard errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from latentgap.errors import ConfigError
from latentgap.samplers import MALAResult, mala, ula
from latentgap.samplers.mala import energy_and_grad, log_proposal, log_proposal_ratio

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: see conftest


N_CHAINS = 4000
MU = torch.tensor([1.0, -0.5], dtype=torch.float64)
SIGMA = torch.tensor([[1.0, 0.8], [0.8, 1.0]], dtype=torch.float64)  # eigenvalues 1.8, 0.2
PRECISION = torch.linalg.inv(SIGMA)


def gaussian_energy(z: Tensor) -> Tensor:
    """E(z) = ½ (z − μ)ᵀ Σ⁻¹ (z − μ): (n, 2) → (n,)."""
    d = z - MU  # (n, 2)
    return 0.5 * ((d @ PRECISION) * d).sum(1)


def gaussian_draws(n: int, seed: int) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    eps = torch.randn(n, 2, generator=g, dtype=torch.float64)
    return MU + eps @ torch.linalg.cholesky(SIGMA).T  # (n, 2)


def assert_moments(z: Tensor, mean: Tensor, cov: Tensor, n_se: float = 4.0) -> None:
    n = z.shape[0]
    se_mean = (cov.diagonal() / n).sqrt()
    assert ((z.mean(0) - mean).abs() < n_se * se_mean).all(), (z.mean(0), mean)
    var = cov.diagonal()
    se_cov = ((var[:, None] * var[None, :] + cov.square()) / n).sqrt()  # (2, 2)
    centred = z - mean  # the true mean: the estimator whose standard error is se_cov
    sample_cov = centred.T @ centred / n
    assert ((sample_cov - cov).abs() < n_se * se_cov).all(), (sample_cov, cov)


def test_gaussian_stays_invariant() -> None:
    z0 = gaussian_draws(N_CHAINS, seed=0)
    g = torch.Generator().manual_seed(1)
    result = mala(gaussian_energy, z0, n_steps=50, step_size=0.3, generator=g)
    assert isinstance(result, MALAResult)
    assert 0.3 < result.acceptance_rate < 0.98
    assert (result.samples - z0).abs().sum(1).gt(0).float().mean() > 0.9  # the chains moved
    assert_moments(result.samples, MU, SIGMA)


def test_unadjusted_langevin_is_biased_at_the_same_step() -> None:
    """Power check for the test above: without the MH step, α = 0.3 inflates the variance along
    the stiff eigenvector (precision λ = 5) from 0.2 to 1/(λ(1 − αλ/2)) ≈ 0.8."""
    z0 = gaussian_draws(N_CHAINS, seed=0)
    result = ula(gaussian_energy, z0, n_steps=50, step_size=0.3, generator=torch.Generator())
    assert result.acceptance_rate == 1.0
    stiff = torch.tensor([1.0, -1.0], dtype=torch.float64) / math.sqrt(2)
    var = ((result.samples - MU) @ stiff).var()
    se = 0.2 * math.sqrt(2 / N_CHAINS)
    assert var > 0.2 + 20 * se


def test_gaussian_reached_from_a_bad_start() -> None:
    z0 = torch.full((N_CHAINS, 2), 6.0, dtype=torch.float64)
    g = torch.Generator().manual_seed(2)
    result = mala(gaussian_energy, z0, n_steps=300, step_size=0.25, generator=g)
    assert_moments(result.samples, MU, SIGMA)


# Two-component mixture: weights (0.3, 0.7), means (∓1.2, 0), isotropic std 0.7.
W = torch.tensor([0.3, 0.7], dtype=torch.float64)
CENTRES = torch.tensor([[-1.2, 0.0], [1.2, 0.0]], dtype=torch.float64)
STD = 0.7


def mixture_energy(z: Tensor) -> Tensor:
    """E(z) = −log Σ_k w_k N(z; m_k, s² I) + const: (n, 2) → (n,)."""
    sq = (z[:, None, :] - CENTRES).square().sum(-1)  # (n, K)
    return -torch.logsumexp(W.log() - 0.5 * sq / STD**2, dim=1)


def test_mixture_stays_invariant() -> None:
    g = torch.Generator().manual_seed(3)
    comp = torch.multinomial(W, N_CHAINS, replacement=True, generator=g)  # (n,)
    z0 = CENTRES[comp] + STD * torch.randn(N_CHAINS, 2, generator=g, dtype=torch.float64)
    result = mala(mixture_energy, z0, n_steps=60, step_size=0.3, generator=g)
    mean = W @ CENTRES  # (2,)
    second = (
        W[:, None, None] * (STD**2 * torch.eye(2) + CENTRES[:, :, None] * CENTRES[:, None])
    ).sum(0)
    assert_moments(result.samples, mean, second - torch.outer(mean, mean))
    # fraction right of the axis: Σ_k w_k Φ(m_k1 / s)
    phi = 0.5 * (1 + torch.erf(CENTRES[:, 0] / (STD * math.sqrt(2))))
    p_right = (W * phi).sum().item()
    fraction = (result.samples[:, 0] > 0).double().mean().item()
    assert abs(fraction - p_right) < 4 * math.sqrt(p_right * (1 - p_right) / N_CHAINS)
    crossed = ((result.samples[:, 0] > 0) != (z0[:, 0] > 0)).double().mean()
    assert crossed > 0.02  # the chains do move between the modes


def standard_normal_energy(z: Tensor) -> Tensor:
    return 0.5 * z.square().sum(1)


def test_acceptance_decreases_with_the_step_size() -> None:
    z0 = torch.randn(1000, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    rates = [
        mala(standard_normal_energy, z0, n_steps=20, step_size=a, generator=torch.Generator())
        for a in (0.01, 0.1, 1.0)
    ]
    values = [r.acceptance_rate for r in rates]
    assert all(0 < v < 1 for v in values)
    assert values[0] > values[1] > values[2]
    assert rates[0].chain_acceptance.shape == (1000,)
    assert rates[0].chain_acceptance.mean().item() == pytest.approx(values[0])


def test_tiny_step_accepts_almost_everything() -> None:
    z0 = torch.randn(500, 2, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    result = mala(mixture_energy, z0, n_steps=10, step_size=1e-6, generator=torch.Generator())
    assert result.acceptance_rate > 0.999


def test_log_proposal_is_the_langevin_gaussian() -> None:
    """log q(z'|z) equals log N(z'; z − α∇E(z), 2α I) up to its normaliser (D/2)·log(4πα)."""
    g = torch.Generator().manual_seed(6)
    z, z_new = torch.randn(2, 3, 4, generator=g, dtype=torch.float64)  # two (3, 4) batches
    alpha = 0.37
    _, grad = energy_and_grad(standard_normal_energy, z)
    gauss = torch.distributions.MultivariateNormal(
        z - alpha * grad, covariance_matrix=2 * alpha * torch.eye(4, dtype=torch.float64)
    )
    expected = gauss.log_prob(z_new) + 0.5 * 4 * math.log(4 * math.pi * alpha)  # (3,)
    torch.testing.assert_close(log_proposal(z_new, z, grad, alpha), expected)
    torch.testing.assert_close(grad, z)  # ∇ ½‖z‖² = z


def test_log_proposal_ratio_matches_the_formula_and_is_accurate_in_float32() -> None:
    """The ratio MALA uses (from ε and the gradients) equals log q(z|z') − log q(z'|z) of the
    formula; in float32 at VAEPP's α = 1e-5 it stays within 1e-3 of the float64 value."""
    g = torch.Generator().manual_seed(7)
    z = 3 * torch.randn(16, 128, generator=g, dtype=torch.float64)  # (n, D)
    noise = torch.randn(16, 128, generator=g, dtype=torch.float64)
    for alpha in (0.3, 1e-5):
        _, grad = energy_and_grad(mixture_energy_nd, z)
        z_new = z - alpha * grad + math.sqrt(2 * alpha) * noise
        _, grad_new = energy_and_grad(mixture_energy_nd, z_new)
        exact = log_proposal(z, z_new, grad_new, alpha) - log_proposal(z_new, z, grad, alpha)
        torch.testing.assert_close(log_proposal_ratio(noise, grad, grad_new, alpha), exact)
    single = log_proposal_ratio(noise.float(), grad.float(), grad_new.float(), alpha)
    assert (single.double() - exact).abs().max() < 1e-3


def mixture_energy_nd(z: Tensor) -> Tensor:
    """A non-quadratic energy on R^D: −log(½N(z; 1, I) + ½N(z; −1, I)) + const."""
    return -torch.logaddexp(-0.5 * (z - 1).square().sum(1), -0.5 * (z + 1).square().sum(1))


def test_network_energy_leaves_parameter_grads_alone() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1))

    def energy(z: Tensor) -> Tensor:
        return net(z).squeeze(-1) + 0.5 * z.square().sum(1)  # (n,)

    z0 = torch.randn(64, 3)
    result = mala(energy, z0, n_steps=20, step_size=0.1, record_every=5)
    assert all(p.grad is None for p in net.parameters())
    assert not result.samples.requires_grad and result.samples.grad_fn is None
    assert result.trace is not None and result.trace.shape == (4, 64, 3)
    torch.testing.assert_close(result.trace[-1], result.samples)
    torch.testing.assert_close(result.energy, energy(result.samples).detach())
    with torch.no_grad():  # as inside a model's @torch.no_grad() sample()
        again = mala(energy, z0, n_steps=5, step_size=0.1)
    assert torch.isfinite(again.samples).all()


def test_same_generator_seed_reproduces_the_run() -> None:
    z0 = torch.randn(100, 2)
    runs = [
        mala(standard_normal_energy, z0, n_steps=10, generator=torch.Generator().manual_seed(9))
        for _ in range(2)
    ]
    torch.testing.assert_close(runs[0].samples, runs[1].samples, rtol=0, atol=0)


@pytest.mark.parametrize("start", [1e-3, 5.0])
def test_step_size_adaptation_reaches_the_target_acceptance(start: float) -> None:
    z0 = torch.randn(1000, 10, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    result = mala(
        standard_normal_energy,
        z0,
        n_steps=300,
        step_size=start,
        adapt_step_size=True,
        adapt_steps=250,
        generator=torch.Generator().manual_seed(8),
    )
    assert result.acceptance_rate == pytest.approx(0.574, abs=0.05)
    assert result.step_size != start
    # fixed α (no adaptation) leaves it unchanged
    fixed = mala(standard_normal_energy, z0, n_steps=2, step_size=start)
    assert fixed.step_size == pytest.approx(start)


def test_bad_options_and_shapes() -> None:
    z0 = torch.zeros(4, 2)
    with pytest.raises(ConfigError, match="step_size"):
        mala(standard_normal_energy, z0, step_size=0.0)
    with pytest.raises(ConfigError, match="n_steps"):
        mala(standard_normal_energy, z0, n_steps=-1)
    with pytest.raises(ConfigError, match="adjust"):
        mala(standard_normal_energy, z0, adapt_step_size=True, adjust=False)
    with pytest.raises(ValueError, match="energy must map"):
        mala(lambda z: z.sum(), z0)
    empty = mala(standard_normal_energy, z0, n_steps=0)
    assert math.isnan(empty.acceptance_rate)
    torch.testing.assert_close(empty.samples, z0)
