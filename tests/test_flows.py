"""The coupling-flow posterior: invertibility, exact log-determinants, a normalised density."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from latentgap.data.base import DataSpec, ImageSet
from latentgap.flows import AffineCoupling, Flow, FlowPosterior
from latentgap.posteriors import DiagonalGaussian, TruncatedNormal
from latentgap.priors import log_z_posterior_proposal

F64 = torch.float64


def random_flow(dim: int, context_dim: int = 0, seed: int = 0, std: float = 0.3, **kw) -> Flow:
    """A flow with random weights everywhere (a fresh flow is the identity)."""
    torch.manual_seed(seed)
    flow = Flow(dim, context_dim=context_dim, **kw).double()
    with torch.no_grad():
        for p in flow.parameters():
            p.normal_(0.0, std)
    return flow


def base(b: int, d: int, seed: int = 1) -> DiagonalGaussian:
    g = torch.Generator().manual_seed(seed)
    loc = 0.5 * torch.randn(b, d, generator=g, dtype=F64)
    return DiagonalGaussian(loc, 0.3 * torch.randn(b, d, generator=g, dtype=F64) - 0.2)


def test_fresh_flow_is_identity() -> None:
    flow = Flow(5, n_layers=3, hidden=8)
    z = torch.randn(4, 5)
    y, log_det = flow(z)
    assert torch.equal(y, z) and torch.equal(log_det, torch.zeros(4))
    q0 = base(4, 5).detach()
    q = FlowPosterior(DiagonalGaussian(q0.loc.float(), q0.log_scale.float()), flow)
    torch.testing.assert_close(q.log_prob(z), q.base.log_prob(z))


@pytest.mark.parametrize("context_dim", [0, 3])
def test_inverse_and_shapes(context_dim: int) -> None:
    flow = random_flow(6, context_dim, hidden=16)
    z0 = torch.randn(7, 4, 6, dtype=F64)  # (K, B, D)
    ctx = torch.randn(4, context_dim, dtype=F64) if context_dim else None  # (B, C)
    z, log_det = flow(z0, ctx)
    assert z.shape == (7, 4, 6) and log_det.shape == (7, 4)
    assert not torch.allclose(z, z0)
    back, log_det_inv = flow.inverse(z, ctx)
    torch.testing.assert_close(back, z0, rtol=0, atol=1e-10)
    torch.testing.assert_close(log_det_inv, -log_det, rtol=0, atol=1e-10)
    if context_dim:
        with pytest.raises(ValueError, match="context"):
            flow(z0)


@pytest.mark.parametrize("context_dim", [0, 2])
def test_log_det_matches_autograd_jacobian(context_dim: int) -> None:
    flow = random_flow(4, context_dim, seed=2, hidden=16, std=0.5)
    ctx = torch.randn(context_dim, dtype=F64) if context_dim else None
    for z0 in torch.randn(5, 4, dtype=F64):
        jac = torch.autograd.functional.jacobian(lambda v: flow(v, ctx)[0], z0)  # (D, D)
        _, log_det = flow(z0, ctx)
        assert log_det.item() == pytest.approx(torch.linalg.slogdet(jac)[1].item(), abs=1e-10)


def test_log_scales_are_bounded() -> None:
    layer = AffineCoupling(torch.tensor([1.0, 0.0, 1.0]), hidden=8, scale_bound=0.5).double()
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_(0.0, 5.0)
    _, log_det = layer(100 * torch.randn(50, 3, dtype=F64))
    assert log_det.abs().max() <= 0.5  # one free coordinate, |s| < 0.5


def test_density_integrates_to_one_in_2d() -> None:
    """Riemann sum of exp(log q(z)) on a grid, for a Gaussian and a ±2σ truncated base."""
    flow = random_flow(2, seed=3, hidden=16, std=0.3)  # keeps q inside the grid
    q0 = DiagonalGaussian(
        torch.tensor([[0.3, -0.2]], dtype=F64), torch.tensor([[-0.3, 0.1]]).double()
    )
    t = torch.linspace(-9, 9, 301, dtype=F64)
    grid = torch.stack(torch.meshgrid(t, t, indexing="ij"), -1).reshape(-1, 1, 2)  # (G, B=1, D)
    cell = (t[1] - t[0]).item() ** 2
    with torch.no_grad():
        mass = FlowPosterior(q0, flow).log_prob(grid).exp().sum().item() * cell
        mass_t = FlowPosterior(q0, flow).truncated(2.0).log_prob(grid).exp().sum().item() * cell
    assert mass == pytest.approx(1.0, abs=1e-4)
    assert mass_t == pytest.approx(1.0, abs=5e-3)  # the box edges limit the Riemann sum


@pytest.mark.parametrize("truncated", [False, True])
def test_rsample_and_log_prob_consistent(truncated: bool) -> None:
    q = FlowPosterior(base(3, 5), random_flow(5, 2, seed=4, hidden=16), torch.randn(3, 2).double())
    if truncated:
        q = q.truncated(2.0)
        assert isinstance(q.base, TruncatedNormal) and q.truncated() is q
    g = torch.Generator().manual_seed(0)
    z, log_q = q.rsample_and_log_prob(8, generator=g)
    assert z.shape == (8, 3, 5) and log_q.shape == (8, 3)
    torch.testing.assert_close(q.log_prob(z), log_q, rtol=0, atol=1e-9)
    z1, log_q1 = q.rsample_and_log_prob(generator=g)
    assert z1.shape == (3, 5) and log_q1.shape == (3,)
    assert q.rsample(2).shape == (2, 3, 5) and not q.sample(2).requires_grad


def test_gradients_reach_encoder_and_flow() -> None:
    flow = random_flow(4, seed=5, hidden=8)
    h = torch.randn(3, 8, dtype=F64, requires_grad=True)  # encoder output (B, 2D)
    q = FlowPosterior.from_encoder_output(h, flow)
    z, log_q = q.rsample_and_log_prob(2)
    (z.square().sum() + log_q.sum()).backward()
    assert h.grad is not None and torch.isfinite(h.grad).all() and h.grad.abs().sum() > 0
    assert all(p.grad is not None for p in flow.parameters())
    with pytest.raises(ValueError, match="dim"):
        FlowPosterior(base(2, 3), flow)


def test_flow_posterior_in_the_eq8_estimator() -> None:
    """With N = 1 the Eq. (8) estimate through a flow posterior is unbiased for Z. Target
    f(z) = e^c·N(z; m, s²I), so Z = e^c exactly."""
    c, m, s = 0.7, torch.tensor([0.2, -0.4, 0.1], dtype=F64), 0.8
    target = torch.distributions.Normal(m, s)
    flow = random_flow(3, seed=6, hidden=8, std=0.1)
    data = ImageSet(torch.zeros(1, 1, 1, 1), spec=DataSpec("pixel", (1, 1, 1), "continuous"))

    def posterior_fn(batch) -> FlowPosterior:
        loc = m.expand(len(batch), 3)
        return FlowPosterior(DiagonalGaussian(loc, torch.full_like(loc, math.log(1.3))), flow)

    est = log_z_posterior_proposal(
        lambda z: c + target.log_prob(z).sum(-1),
        posterior_fn,
        data,
        samples_per_image=40_000,
        truncated=False,
        generator=torch.Generator().manual_seed(0),
    )
    assert abs(est.log_z - c) < 4 * est.std_err and est.std_err < 0.02
    trunc = log_z_posterior_proposal(
        lambda z: c + target.log_prob(z).sum(-1),
        posterior_fn,
        data,
        samples_per_image=1000,
        generator=torch.Generator().manual_seed(1),
    )
    assert trunc.method == "posterior-proposal-truncated" and math.isfinite(trunc.log_z)
    # The ±2σ base box (±2.6 around m, wider than f's sd 0.8) misses < 1 % of f's mass.
    assert c - 0.01 - 4 * trunc.std_err < trunc.log_z < c + 4 * trunc.std_err


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError):
        Flow(0)
    with pytest.raises(ValueError, match="last dim"):
        Flow(3)(torch.zeros(2, 4))
    with pytest.raises(ValueError, match="mask"):
        AffineCoupling(torch.ones(2, 2))
    assert isinstance(Flow(3).layers[0], nn.Module)
