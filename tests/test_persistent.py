"""Persistent MALA chains (samplers/persistent.py) and the log Z gradient they give VAEPP's
training, against closed forms on a Gaussian pull-back prior. Tolerances are multiples of the
Monte Carlo error of the chains (autocorrelated, so a few times the iid error); seeds fixed."""

from __future__ import annotations

import math

import torch
from tests.test_partition import BETA, Quadratic

from latentgap.samplers.persistent import PersistentChains


def test_chains_reach_and_follow_a_gaussian_target() -> None:
    torch.manual_seed(0)
    mu, sd = torch.tensor([2.0, -1.0, 0.5]), torch.tensor([0.5, 1.0, 2.0])
    chains = PersistentChains(4000, 3, step_size=0.5)
    g = torch.Generator().manual_seed(1)

    def energy(z):
        return 0.5 * ((z - mu) / sd).square().sum(1)

    for _ in range(200):
        z = chains.update(energy, 2, generator=g)
    assert abs(float(chains.acceptance) - 0.574) < 0.08  # the step size adapted
    assert ((z.mean(0) - mu).abs() < 4 * 3 * sd / math.sqrt(4000)).all()
    assert ((z.std(0) / sd - 1).abs() < 0.06).all()
    # the target moves (as a prior does in training): the chains follow it
    mu2 = mu + 1.0
    for _ in range(100):
        z = chains.update(lambda z: 0.5 * ((z - mu2) / sd).square().sum(1), 2, generator=g)
    assert ((z.mean(0) - mu2).abs() < 4 * 3 * sd / math.sqrt(4000)).all()


def test_reinit_restarts_a_fraction_from_the_base() -> None:
    chains = PersistentChains(10_000, 2, step_size=1e-6, reinit=0.3, gain=0.0)
    chains.z.fill_(50.0)
    z = chains.update(lambda z: 0.5 * z.square().sum(1), 1, generator=torch.Generator())
    restarted = (z.abs() < 10).all(1).double().mean().item()
    assert abs(restarted - 0.3) < 4 * math.sqrt(0.3 * 0.7 / 10_000)


def test_log_z_gradient_from_the_chains_matches_the_closed_form() -> None:
    """∂ log Z/∂β = −E_{p_λ}[D(G(z))] for a linear decoder and quadratic critic (p_λ Gaussian):
    the surrogate VAEPP's persistent mode differentiates gives it within Monte Carlo error."""
    model = Quadratic(dim=3, seed=4)
    prior = model.prior
    xi = prior.xi.detach().clone().requires_grad_(True)

    def closed_form_log_z(xi_value):  # log Z as a differentiable function of ξ
        beta = prior.beta_bound * torch.sigmoid(xi_value)
        a, c, b, cc = model.A, model.C, model.b, model.c
        m_mat = a.T @ c @ a
        m = a.T @ (c @ b + cc)
        k0 = 0.5 * b @ c @ b + cc @ b
        p = torch.eye(3, dtype=torch.float64) + beta * m_mat
        return -0.5 * torch.logdet(p) + 0.5 * beta**2 * m @ torch.linalg.solve(p, m) - beta * k0

    (exact,) = torch.autograd.grad(closed_form_log_z(xi), xi)
    assert abs(prior.beta.item() - BETA) < 1e-12
    torch.manual_seed(5)
    chains = PersistentChains(20_000, 3, step_size=0.1).double()
    g = torch.Generator().manual_seed(6)
    for _ in range(150):
        z = chains.update(lambda z: prior.energy(z, model.d_of_g), 2, generator=g)
    surrogate = prior.log_weight(model.d_of_g(z)).mean()
    (estimate,) = torch.autograd.grad(surrogate, prior.xi)
    # error: sd of the per-chain gradient over √n, times a few for autocorrelation
    per_chain = -prior.beta_bound * torch.sigmoid(xi) * (1 - torch.sigmoid(xi)) * model.d_of_g(z)
    se = per_chain.std().item() / math.sqrt(len(z)) * 3
    assert abs(estimate.item() - exact.item()) < 4 * se, (estimate.item(), exact.item(), se)
