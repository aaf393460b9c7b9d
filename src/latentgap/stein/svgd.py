"""Stein variational gradient descent (Liu & Wang 2016) as functions of particles, scores and a
kernel.

The SVGD direction (Eq. 10 of the LDC-VAE paper, and Eq. 15 for its encoder) moves each of n
particles z_i of q towards a target p:

    Φ*(z_i) = (1/n) Σ_j [ k(z_j, z_i) ∇_{z_j} log p(z_j) + ∇_{z_j} k(z_j, z_i) ],

the first term pulling particles up the (kernel-smoothed) score, the second pushing them apart.
Here every tensor has a leading batch dimension B of independent particle sets: the LDC-VAE
encoder runs one set of n particles per image. Φ* is the steepest-descent direction of
KL(q ‖ p) in the kernel's RKHS ball, so z ← z + εΦ*(z) lowers the KL for small ε.

For particles produced by a network, z = f_θ(ε), the chain rule (Eq. 16) gives the parameter
update θ ← θ + ε Σ_i (∂z_i/∂θ)ᵀ Φ*(z_i); :func:`svgd_surrogate_loss` is the scalar whose
gradient is minus that sum, so any optimiser that *descends* it moves the particles along Φ*.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from latentgap.stein.kernels import RadialKernel

ScoreFn = Callable[[Tensor], Tensor]


def _check(particles: Tensor, scores: Tensor) -> None:
    if particles.ndim != 3:
        raise ValueError(f"particles must be (B, n, D), got shape {tuple(particles.shape)}")
    if scores.shape != particles.shape:
        raise ValueError(
            f"scores {tuple(scores.shape)} must have the particles' shape {tuple(particles.shape)}"
        )


def svgd_direction(
    particles: Tensor, scores: Tensor, kernel: RadialKernel, leave_one_out: bool = False
) -> Tensor:
    """The SVGD direction Φ* (B, n, D) of Eq. (10)/(15) of the LDC-VAE paper.

    ``particles`` (B, n, D) are B independent sets of n particles; ``scores`` (B, n, D) hold
    ∇_z log p(z) at each particle (for set b, the score of that set's target). Returns

        Φ*[b, i] = (1/n) Σ_j ( K[b, j, i] · scores[b, j] + ∇_{z_j} k(z_j, z_i) ),

    computed with batched matrix products (no loop over particles or sets) and without building
    the (B, n, n, D) kernel-gradient tensor. Differentiable in ``particles`` and ``scores`` only
    through the kernel values; callers normally pass detached tensors.

    ``leave_one_out=True`` drops the j = i term and divides by n − 1. For *amortised* SVGD
    (particles drawn i.i.d. from a network, as in LDC-VAE) the j = i term k(z_i, z_i)∇log p(z_i)
    is a pure attraction with no matching repulsion (∇k(z, z) = 0); it biases the fixed point
    towards under-dispersion by O(1/(n·E[k])). Without it the estimate of the population
    direction E_q[k ∇log p + ∇k] is unbiased, whose fixed point is q = p.
    """
    _check(particles, scores)
    n = particles.shape[1]
    k, repulsion = kernel.kernel_and_repulsion(particles)  # (B, n, n), (B, n, D)
    if leave_one_out:
        if n < 2:
            raise ValueError("leave_one_out needs at least 2 particles")
        k = k * (1.0 - torch.eye(n, dtype=k.dtype, device=k.device))  # ∇k(z_i, z_i) = 0 anyway
    drive = torch.einsum("bji,bjd->bid", k, scores)  # (B, n, D): Σ_j k(z_j, z_i) ∇log p(z_j)
    return (drive + repulsion) / (n - 1 if leave_one_out else n)


def svgd_surrogate_loss(
    particles: Tensor, direction: Tensor, normalizer: float | None = None
) -> Tensor:
    """The scalar −Σ ⟨stop_grad(Φ*), z⟩ / normaliser whose gradient pushes Φ* into parameters.

    For particles z = f_θ(·) with a graph to θ, backpropagation gives

        ∂loss/∂θ = −(1/normaliser) Σ_{b,i} (∂z_{b,i}/∂θ)ᵀ Φ*(z_{b,i}),

    i.e. minus the chain-rule update of Eq. (16) of the LDC-VAE paper (where the paper writes
    Φ* as "the gradient of the KL", the KL *decreases* along +Φ*: Φ* is minus its functional
    gradient). A gradient-*descent* step on this loss therefore moves every z along +Φ*.

    ``normalizer`` defaults to the number of particles (B·n), making the update a mean over
    particles; Adam is invariant to this constant scale apart from its ε. The loss *value* is
    not a divergence and carries no meaning beyond its gradient.
    """
    if direction.shape != particles.shape:
        raise ValueError(
            f"direction {tuple(direction.shape)} must have the particles' shape "
            f"{tuple(particles.shape)}"
        )
    count = particles.shape[:-1].numel()
    norm = float(count if normalizer is None else normalizer)
    if not norm > 0:
        raise ValueError(f"normalizer must be positive, got {normalizer}")
    return -(direction.detach() * particles).sum() / norm


def score_of(log_prob: Callable[[Tensor], Tensor], z: Tensor) -> Tensor:
    """∇_z log p(z) by autograd for a log-density ``log_prob`` mapping (..., D) → (...).

    Only ``z`` is differentiated (parameters of ``log_prob`` receive no gradient); the result
    is detached and has ``z``'s shape. Works inside ``torch.no_grad()``.
    """
    with torch.enable_grad():
        zg = z.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(log_prob(zg).sum(), zg)
    return grad.detach()


def svgd_step(
    particles: Tensor,
    score: ScoreFn | Tensor,
    kernel: RadialKernel,
    step_size: float,
) -> tuple[Tensor, Tensor]:
    """One explicit SVGD update z ← z + step_size · Φ*(z) (Section 3.2 of the LDC-VAE paper).

    ``score`` is either the scores (B, n, D) at ``particles`` or a callable returning them.
    Returns the new particles and the direction Φ* used (both detached).
    """
    z = particles.detach()
    scores = score(z) if callable(score) else score
    phi = svgd_direction(z, scores.detach(), kernel)  # (B, n, D)
    return z + step_size * phi, phi


__all__ = ["ScoreFn", "score_of", "svgd_direction", "svgd_step", "svgd_surrogate_loss"]
