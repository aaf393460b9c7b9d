"""Persistent MCMC chains of a prior that changes while it is trained (Tieleman 2008).

Training an energy prior p(z) = f(z)/Z needs ∇ log Z = E_p[∇ log f(z)], an expectation under the
current prior. Short-run chains from noise (Pang et al. 2020) need tens of Langevin steps per
update; persistent chains keep their states between updates and move a few MALA steps each time,
so they follow the prior as its parameters drift. Their states are a buffer (checkpointed with the
model, so a resumed run continues the same chains).

The MALA step size adapts across updates toward the optimal acceptance 0.574 (one global log-step,
a Robbins–Monro step per update with a constant gain, as the target keeps moving), and a fraction
``reinit`` of the chains restarts from N(0, I) at every update, which keeps modes the chains have
abandoned reachable.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from latentgap.samplers.mala import TARGET_ACCEPT, Energy, mala


class PersistentChains(nn.Module):
    """``n_chains`` persistent MALA chains in D dimensions, started at N(0, I).

    Args:
        n_chains: number of chains (each update returns all of them).
        dim: latent dimension D.
        step_size: initial MALA step size α.
        reinit: fraction of chains restarted from N(0, I) at each update.
        gain: Robbins–Monro gain of the step-size adaptation (0: fixed α).
    """

    def __init__(
        self,
        n_chains: int,
        dim: int,
        step_size: float = 1e-2,
        reinit: float = 0.0,
        gain: float = 0.05,
    ) -> None:
        super().__init__()
        if n_chains <= 0 or dim <= 0 or not step_size > 0 or not 0.0 <= reinit < 1.0:
            raise ValueError("need n_chains, dim, step_size > 0 and 0 ≤ reinit < 1")
        self.reinit, self.gain = float(reinit), float(gain)
        self.register_buffer("z", torch.randn(n_chains, dim))
        self.register_buffer("log_step", torch.tensor(math.log(step_size)))
        self.register_buffer("acceptance", torch.tensor(float("nan")))

    @property
    def step_size(self) -> float:
        return float(self.log_step.exp())

    @torch.no_grad()
    def update(
        self, energy: Energy, n_steps: int, generator: torch.Generator | None = None
    ) -> Tensor:
        """Move every chain ``n_steps`` MALA steps on exp(−E) and return the states (n, D),
        detached. ``energy`` maps (n, D) to (n,); gradients are taken w.r.t. z only."""
        z = self.z
        if self.reinit > 0:
            fresh = torch.rand(z.shape[0], generator=generator, device=z.device) < self.reinit
            noise = torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype)
            z = torch.where(fresh[:, None], noise, z)
        result = mala(energy, z, n_steps=n_steps, step_size=self.step_size, generator=generator)
        self.z.copy_(result.samples)
        rate = result.acceptance_rate
        if math.isfinite(rate):
            self.acceptance.fill_(rate)
            self.log_step.add_(self.gain * (rate - TARGET_ACCEPT))
        return self.z.clone()


__all__ = ["PersistentChains"]
