"""Hamiltonian Monte Carlo on any potential, one transition for a batch of chains at a time.

The target is π(z) ∝ exp(−U(z)). One transition from z with step size ε and L leapfrog steps:

    p ~ N(0, I);  p ← p − (ε/2)∇U(z)
    L times:      z ← z + ε·p;  p ← p − ε∇U(z)   (the last momentum update is a half step)
    accept (z', p') with probability min(1, exp(H(z, p) − H(z', p'))),  H = U + ½‖p‖²

Every chain accepts or rejects on its own; all chains move together (one potential and gradient
evaluation per leapfrog step for the whole batch). A non-finite energy or gradient is rejected.

The potential returns ``(U, ∇U, aux)``: ``aux`` is a tuple of per-chain tensors (leading dim n)
that travel with the state and are selected with it on acceptance. Annealed importance sampling
(:mod:`latentgap.priors.ais`) keeps the network's log-weight and its gradient there, so that
changing the temperature re-weights the cached values instead of calling the network again.

``step_size`` is a float or a per-chain tensor (n,): per-chain steps let one call serve chains
that sit at different temperatures or in differently scaled regions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

Potential = Callable[[Tensor], tuple[Tensor, Tensor, tuple[Tensor, ...]]]
"""z (n, D) ↦ (U (n,), ∇U (n, D), aux): the potential, its gradient and per-chain extras."""

TARGET_ACCEPT = 0.65  # a common HMC target (Neal 2011; Beskos et al. 2013 give ≈ 0.651)


@dataclass
class HMCState:
    """A batch of chains: positions ``z`` (n, D), ``u`` = U(z) (n,), ``grad`` = ∇U(z) (n, D) and
    the potential's ``aux`` tensors at z."""

    z: Tensor
    u: Tensor
    grad: Tensor
    aux: tuple[Tensor, ...] = ()

    @classmethod
    def at(cls, potential: Potential, z: Tensor) -> HMCState:
        """The state at positions z, evaluating the potential once."""
        u, grad, aux = potential(z)
        return cls(z.detach(), u.detach(), grad.detach(), tuple(a.detach() for a in aux))


def _select(mask: Tensor, new: Tensor, old: Tensor) -> Tensor:
    return torch.where(mask.view(-1, *([1] * (new.dim() - 1))), new, old)


def hmc_step(
    potential: Potential,
    state: HMCState,
    step_size: float | Tensor,
    n_leapfrog: int = 5,
    generator: torch.Generator | None = None,
) -> tuple[HMCState, Tensor]:
    """One HMC transition of every chain (module docstring); leaves π ∝ exp(−U) invariant.

    Returns the new state and the per-chain acceptance probabilities min(1, exp(−ΔH)) (n,)
    (0 where the proposal was not finite), the quantity step-size adaptation steers.
    """
    if n_leapfrog < 1:
        raise ValueError(f"n_leapfrog must be at least 1, got {n_leapfrog}")
    z0 = state.z
    eps = step_size
    if isinstance(eps, Tensor):
        eps = eps.to(z0.dtype).view(-1, *([1] * (z0.dim() - 1)))  # (n, 1)
    p = torch.randn(z0.shape, generator=generator, device=z0.device, dtype=z0.dtype)  # (n, D)
    h0 = state.u + 0.5 * p.flatten(1).square().sum(1)  # (n,)
    z, grad = z0, state.grad
    p = p - 0.5 * eps * grad
    for step in range(n_leapfrog):
        z = z + eps * p
        u, grad, aux = potential(z)
        p = p - (eps if step < n_leapfrog - 1 else 0.5 * eps) * grad
    h1 = u + 0.5 * p.flatten(1).square().sum(1)  # (n,)
    log_ratio = (h0 - h1).nan_to_num(nan=-torch.inf)  # (n,); NaN ⇒ reject
    finite = torch.isfinite(grad.flatten(1)).all(1) & torch.isfinite(u)
    log_ratio = torch.where(finite, log_ratio, torch.full_like(log_ratio, -torch.inf))
    log_u = torch.rand(log_ratio.shape, generator=generator, device=z0.device).log()
    accept = log_u < log_ratio.to(log_u.dtype)  # (n,)
    new = HMCState(
        _select(accept, z.detach(), z0),
        torch.where(accept, u.detach(), state.u),
        _select(accept, grad.detach(), state.grad),
        tuple(_select(accept, a.detach(), b) for a, b in zip(aux, state.aux, strict=True)),
    )
    return new, log_ratio.clamp(max=0.0).exp()


__all__ = ["TARGET_ACCEPT", "HMCState", "Potential", "hmc_step"]
