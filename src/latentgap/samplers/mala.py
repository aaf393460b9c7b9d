"""Metropolis-adjusted Langevin (MALA) on any energy, the sampler of Section 4.3 of the VAEPP
paper (there on E(z) = β·D(G(z)) + ½‖z‖², from the latent GAN's z₀).

The target is p(z) ∝ exp(−E(z)). One step from z with step size α:

    z' = z − α∇E(z) + √(2α)·ε,  ε ~ N(0, I)
    log q(z'|z) = −‖z' − z + α∇E(z)‖² / (4α)          (the Gaussian N(z − α∇E(z), 2α I),
                                                         up to a constant that cancels)
    accept with probability min(1, exp(−E(z') + E(z) + log q(z|z') − log q(z'|z)))

Each chain accepts or rejects on its own; all chains move together (one energy and gradient
evaluation per step for the whole batch; the only Python loop is over steps). Gradients come
from ``torch.autograd.grad(E(z).sum(), z)``, with respect to z only, so an energy that contains
network parameters never accumulates ``.grad`` into them, and every step is detached, so no
graph grows across steps. Works under ``torch.no_grad()`` (the gradient is taken in an
``enable_grad`` block).

Step-size adaptation (``adapt_step_size=True``, off by default so the paper's fixed α is used):
during the first ``adapt_steps`` steps (default half of ``n_steps``) one global log α follows a
Robbins–Monro recursion towards ``target_accept`` (0.574, the optimal MALA acceptance of Roberts
& Rosenthal 1998):

    log α ← log α + (t + 1)^(−0.6) · (ā_t − target_accept)

with ā_t the mean over chains of the acceptance probabilities min(1, ratio) at step t. The
adapted α is then frozen; as adaptation breaks detailed balance, the reported acceptance (and
the trace) then cover only the remaining, fixed-α steps.

``adjust=False`` (or :func:`ula`) skips the accept/reject step: the unadjusted Langevin algorithm,
biased by O(α) but cheaper to tune.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from latentgap.errors import ConfigError

Energy = Callable[[Tensor], Tensor]  # (n, D) → (n,), log density = −E + const

TARGET_ACCEPT = 0.574  # optimal MALA acceptance (Roberts & Rosenthal 1998)


@dataclass
class MALAResult:
    """What :func:`mala` returns.

    ``samples`` (n, D): the final states; ``energy`` (n,): E at them; ``acceptance_rate``: the
    fraction of accepted proposals over chains and (post-adaptation) steps, NaN if no step ran;
    ``chain_acceptance`` (n,): the same per chain; ``step_size``: the α used (after adaptation);
    ``trace`` (T, n, D): the states after every ``record_every``-th step, or ``None``.
    """

    samples: Tensor
    energy: Tensor
    acceptance_rate: float
    chain_acceptance: Tensor
    step_size: float
    trace: Tensor | None = None


def energy_and_grad(energy: Energy, z: Tensor) -> tuple[Tensor, Tensor]:
    """E(z) (n,) and ∇_z E(z) (n, D), both detached; gradients w.r.t. z only."""
    with torch.enable_grad():
        z = z.detach().requires_grad_(True)
        e = energy(z)  # (n,)
        if e.shape != (z.shape[0],):
            raise ValueError(
                f"the energy must map {tuple(z.shape)} to ({z.shape[0]},), got {tuple(e.shape)}"
            )
        (grad,) = torch.autograd.grad(e.sum(), z)
    return e.detach(), grad.detach()


def log_proposal(z_to: Tensor, z_from: Tensor, grad_from: Tensor, step_size: float) -> Tensor:
    """log q(z_to | z_from) = −‖z_to − z_from + α∇E(z_from)‖² / (4α), the Langevin proposal's
    log-density without its normaliser (which cancels in the MH ratio): (n, D) → (n,)."""
    diff = (z_to - z_from + step_size * grad_from).flatten(1)  # (n, D)
    return -diff.square().sum(1) / (4.0 * step_size)


def log_proposal_ratio(noise: Tensor, grad: Tensor, grad_new: Tensor, step_size: float) -> Tensor:
    """log q(z|z') − log q(z'|z) for the move z' = z − α∇E(z) + √(2α)·ε, from ε and the two
    gradients: (n, D) → (n,). Equal to the :func:`log_proposal` difference, but computed from
    the small quantities (ε, α∇E) instead of differences of nearly equal states, so it stays
    accurate in float32 at VAEPP's tiny steps (α = 1e-5):

        z' − z + α∇E(z) = √(2α)·ε                   ⇒ log q(z'|z) = −‖ε‖²/2
        z − z' + α∇E(z') = α(∇E(z) + ∇E(z')) − √(2α)·ε
    """
    back = (step_size * (grad + grad_new) - math.sqrt(2.0 * step_size) * noise).flatten(1)
    forward_sq = noise.flatten(1).square().sum(1)  # (n,)
    return 0.5 * forward_sq - back.square().sum(1) / (4.0 * step_size)  # (n,)


def _check(n_steps: int, step_size: float, record_every: int, adapt_steps: int | None) -> None:
    if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 0:
        raise ConfigError(f"n_steps must be a non-negative integer, got {n_steps!r}")
    if not (isinstance(step_size, (int, float)) and math.isfinite(step_size) and step_size > 0):
        raise ConfigError(f"step_size must be a positive number, got {step_size!r}")
    if isinstance(record_every, bool) or not isinstance(record_every, int) or record_every < 0:
        raise ConfigError(f"record_every must be a non-negative integer, got {record_every!r}")
    if adapt_steps is not None and not 0 <= adapt_steps < max(n_steps, 1):
        raise ConfigError(f"adapt_steps must be in [0, n_steps), got {adapt_steps!r}")


def mala(
    energy: Energy,
    z0: Tensor,
    *,
    n_steps: int = 100,
    step_size: float = 1e-2,
    generator: torch.Generator | None = None,
    progress: bool = False,
    record_every: int = 0,
    adapt_step_size: bool = False,
    target_accept: float = TARGET_ACCEPT,
    adapt_steps: int | None = None,
    adjust: bool = True,
) -> MALAResult:
    """Run ``n_steps`` MALA steps of size α = ``step_size`` from ``z0`` (n, D) on the target
    exp(−E(z)) (Section 4.3 of the VAEPP paper; see the module docstring for the update and the
    step-size adaptation). ``generator`` (on z0's device) makes the run reproducible;
    ``record_every = k > 0`` keeps every k-th state in ``trace``; ``adjust=False`` runs the
    unadjusted Langevin algorithm (every proposal accepted)."""
    _check(n_steps, step_size, record_every, adapt_steps if adapt_step_size else None)
    if z0.dim() < 2:
        raise ValueError(f"z0 must be a batch of chains (n, D), got shape {tuple(z0.shape)}")
    if adapt_step_size:
        if not adjust:
            raise ConfigError("adapt_step_size needs the Metropolis correction (adjust=True)")
        if not 0.0 < target_accept < 1.0:
            raise ConfigError(f"target_accept must be in (0, 1), got {target_accept!r}")
        n_adapt = n_steps // 2 if adapt_steps is None else adapt_steps
    else:
        n_adapt = 0

    z = z0.detach().clone()  # (n, D)
    n = z.shape[0]
    e, grad = energy_and_grad(energy, z)  # (n,), (n, D)
    log_alpha = math.log(step_size)
    accepted = torch.zeros(n, device=z.device, dtype=z.dtype)  # (n,) counts after adaptation
    trace: list[Tensor] = []

    steps: range | object = range(n_steps)
    if progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, desc="MALA" if adjust else "ULA", leave=False)
    for t in steps:  # type: ignore[attr-defined]
        alpha = math.exp(log_alpha)
        noise = torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype)
        proposal = z - alpha * grad + math.sqrt(2.0 * alpha) * noise  # (n, D)
        e_new, grad_new = energy_and_grad(energy, proposal)  # (n,), (n, D)
        if adjust:
            # (n,); NaN (non-finite energy or gradient) compares False below: rejected
            log_ratio = e - e_new + log_proposal_ratio(noise, grad, grad_new, alpha)
            log_u = torch.rand(n, generator=generator, device=z.device, dtype=z.dtype).log()
            accept = log_u < log_ratio  # (n,)
            keep = accept.view(n, *([1] * (z.dim() - 1)))  # (n, 1)
            z = torch.where(keep, proposal, z)
            grad = torch.where(keep, grad_new, grad)
            e = torch.where(accept, e_new, e)
        else:
            accept = torch.ones(n, dtype=torch.bool, device=z.device)
            z, e, grad = proposal, e_new, grad_new

        if t < n_adapt:
            mean_prob = log_ratio.clamp(max=0.0).exp().nan_to_num(0.0).mean().item()
            log_alpha += (t + 1) ** -0.6 * (mean_prob - target_accept)
            continue
        accepted += accept.to(z.dtype)
        if record_every and (t - n_adapt + 1) % record_every == 0:
            trace.append(z.clone())
        if progress and (t + 1) % 50 == 0:
            rate = accepted.mean().item() / (t + 1 - n_adapt)
            steps.set_postfix(accept=f"{rate:.3f}", alpha=f"{alpha:.2e}")  # type: ignore[attr-defined]

    counted = n_steps - n_adapt
    chain_acceptance = accepted / counted if counted else torch.full_like(accepted, math.nan)
    return MALAResult(
        samples=z,
        energy=e,
        acceptance_rate=chain_acceptance.mean().item(),
        chain_acceptance=chain_acceptance,
        step_size=math.exp(log_alpha),
        trace=torch.stack(trace) if trace else None,
    )


def ula(
    energy: Energy,
    z0: Tensor,
    *,
    n_steps: int = 100,
    step_size: float = 1e-2,
    generator: torch.Generator | None = None,
    progress: bool = False,
    record_every: int = 0,
) -> MALAResult:
    """Unadjusted Langevin: ``z ← z − α∇E(z) + √(2α)·ε`` without the Metropolis–Hastings
    correction (every proposal kept; ``acceptance_rate`` is 1). Same arguments as :func:`mala`."""
    return mala(
        energy,
        z0,
        n_steps=n_steps,
        step_size=step_size,
        generator=generator,
        progress=progress,
        record_every=record_every,
        adjust=False,
    )


__all__ = [
    "TARGET_ACCEPT",
    "Energy",
    "MALAResult",
    "energy_and_grad",
    "log_proposal",
    "log_proposal_ratio",
    "mala",
    "ula",
]
