"""The pull-back prior (Eq. 4 of the VAEPP paper) and its β-gradient (Eq. 6), against a
linear decoder and a quadratic critic, for which p_λ is Gaussian and log Z has a closed form."""

from __future__ import annotations

import math

import pytest
import torch

from latentgap.errors import ConfigError
from latentgap.priors import PullbackPrior, StandardNormal

F64 = torch.float64


class LinearQuadratic:
    """G(z) = A z + b, D(x) = ½ xᵀCx + cᵀx, so D(G(z)) = ½ zᵀMz + mᵀz + k0 and, with
    P = I + βM, Z(β) = det(P)^(−½)·exp(½β² mᵀP⁻¹m − βk0), p_λ = N(−βP⁻¹m, P⁻¹)."""

    def __init__(self, dim: int = 3, data_dim: int = 5, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.A = 0.5 * torch.randn(data_dim, dim, generator=g, dtype=F64)
        self.b = 0.3 * torch.randn(data_dim, generator=g, dtype=F64)
        L = torch.randn(data_dim, data_dim, generator=g, dtype=F64)
        self.C = L @ L.T / data_dim + 0.1 * torch.eye(data_dim, dtype=F64)
        self.c = 0.3 * torch.randn(data_dim, generator=g, dtype=F64)
        self.M = self.A.T @ self.C @ self.A
        self.m = self.A.T @ (self.C @ self.b + self.c)
        self.k0 = 0.5 * self.b @ self.C @ self.b + self.c @ self.b
        self.dim = dim

    def d_of_g(self, z: torch.Tensor) -> torch.Tensor:
        x = z @ self.A.T + self.b  # (..., X)
        return 0.5 * ((x @ self.C) * x).sum(-1) + x @ self.c  # (...)

    def log_z(self, beta: torch.Tensor) -> torch.Tensor:
        P = torch.eye(self.dim, dtype=F64) + beta * self.M
        quad = self.m @ torch.linalg.solve(P, self.m)
        return -0.5 * torch.logdet(P) + 0.5 * beta**2 * quad - beta * self.k0

    def p_lambda(self, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
        cov = torch.linalg.inv(torch.eye(self.dim, dtype=F64) + beta * self.M)
        return -beta * cov @ self.m, cov

    def expected_d(self, mean: torch.Tensor, cov: torch.Tensor) -> float:
        """E D(G(z)) for z ~ N(mean, cov)."""
        val = 0.5 * torch.trace(self.M @ cov) + 0.5 * mean @ self.M @ mean + self.m @ mean
        return (val + self.k0).item()


def test_beta_parametrisation() -> None:
    prior = PullbackPrior(dim=4, beta_bound=10.0)
    assert [name for name, _ in prior.named_parameters()] == ["xi"]
    assert list(prior.state_dict()) == ["xi"]
    assert prior.beta.item() == pytest.approx(5.0)  # w/2 at ξ = 0
    with torch.no_grad():
        prior.xi.fill_(50.0)
    assert prior.beta.item() <= 10.0
    prior.beta.backward()
    assert prior.xi.grad is not None
    with pytest.raises(ConfigError, match="beta_bound"):
        PullbackPrior(dim=4, beta_bound=0.0)
    with pytest.raises(ConfigError, match="dimension"):
        PullbackPrior(dim=0, beta_bound=1.0)


def test_density_terms() -> None:
    model = LinearQuadratic()
    prior = PullbackPrior(dim=3, beta_bound=4.0, init_logit=0.3).double()
    z = torch.randn(7, 2, 3, dtype=F64)  # (K, B, D)
    d = model.d_of_g(z)  # (K, B)
    beta = prior.beta.item()
    energy = prior.energy(z, d)
    assert energy.shape == (7, 2)
    torch.testing.assert_close(energy, 0.5 * z.square().sum(-1) + beta * d)
    log_f = prior.log_unnormalized(z, d)
    torch.testing.assert_close(log_f, StandardNormal(3).log_prob(z) - beta * d)
    torch.testing.assert_close(prior.log_unnormalized(z, model.d_of_g), log_f)  # callable form
    torch.testing.assert_close(prior.log_prob(z, d, 1.25), log_f - 1.25)
    torch.testing.assert_close(prior.energy_fn(model.d_of_g)(z), energy)
    torch.testing.assert_close(prior.log_f_fn(model.d_of_g)(z), log_f)
    torch.testing.assert_close(prior.log_weight_fn(model.d_of_g)(z[0]), -beta * d[0])
    with pytest.raises(ValueError, match="last dim"):
        prior.energy(torch.zeros(2, 4, dtype=F64), torch.zeros(2, dtype=F64))
    with pytest.raises(ValueError, match="critic values"):
        prior.energy(z, d[0])


def test_beta_zero_is_the_standard_normal() -> None:
    """At β → 0 the prior is N(0, I) and the exact log Z of Eq. (4) is 0."""
    model = LinearQuadratic()
    prior = PullbackPrior(dim=3, beta_bound=1.0, init_logit=-60.0).double()
    z = torch.randn(11, 3, dtype=F64)
    torch.testing.assert_close(
        prior.log_prob(z, model.d_of_g(z), model.log_z(prior.beta)), StandardNormal(3).log_prob(z)
    )


def test_eq6_beta_gradient_matches_autograd() -> None:
    """∂L/∂β = −E_q D(G(z)) + E_{p_λ} D(G(z)) (Eq. 6), with L(β) = E_q[log f_λ(z)] − log Z(β)
    differentiated by autograd through the exact log Z(β) and the prior's own log f_λ."""
    model = LinearQuadratic(seed=1)
    w = 3.0
    prior = PullbackPrior(dim=3, beta_bound=w, init_logit=0.4).double()
    g = torch.Generator().manual_seed(2)
    q_mean = torch.tensor([0.4, -0.3, 0.2], dtype=F64)
    q_scale = torch.tensor([0.6, 0.9, 0.5], dtype=F64)
    n = 20_000
    z = q_mean + q_scale * torch.randn(n, 3, generator=g, dtype=F64)  # (n, D) ~ q, fixed
    d_q = model.d_of_g(z)  # (n,)

    loss = prior.log_unnormalized(z, d_q).mean() - model.log_z(prior.beta)  # the ELBO's K term
    (grad_xi,) = torch.autograd.grad(loss, prior.xi)
    sig = torch.sigmoid(prior.xi).item()
    dl_dbeta = grad_xi.item() / (w * sig * (1.0 - sig))  # chain rule through β = w·sigmoid(ξ)

    beta = prior.beta.item()
    p_mean, p_cov = model.p_lambda(beta)
    e_p = model.expected_d(p_mean, p_cov)
    # Same samples for the q term: exact up to rounding.
    assert dl_dbeta == pytest.approx(-d_q.mean().item() + e_p, abs=1e-9)
    # Closed-form E_q D: within Monte Carlo error of the sample mean.
    e_q = model.expected_d(q_mean, torch.diag(q_scale**2))
    se = d_q.std().item() / math.sqrt(n)
    assert abs(dl_dbeta - (-e_q + e_p)) < 4 * se

    # The diagnostic estimate from critic values on q and on exact p_λ samples.
    chol = torch.linalg.cholesky(p_cov)
    z_p = p_mean + torch.randn(n, 3, generator=g, dtype=F64) @ chol.T  # (n, D) ~ p_λ
    d_p = model.d_of_g(z_p)
    est = prior.beta_gradient(d_q, d_p).item()
    se2 = math.sqrt(d_q.var().item() / n + d_p.var().item() / n)
    assert abs(est - (-e_q + e_p)) < 4 * se2
