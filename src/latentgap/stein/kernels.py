"""Positive-definite kernels for Stein variational gradient descent (SVGD).

Every kernel here is radial, k(z, z') = κ(‖z − z'‖²), so its gradient in the first argument is

    ∇_{z_j} k(z_j, z_i) = 2 κ'(‖z_j − z_i‖²) (z_j − z_i),

computed analytically (no autograd). A kernel object has one job: given particle sets
z (B, n, D) (one set of n particles per leading batch element) it returns

- :meth:`RadialKernel.__call__`: ``K`` (B, n, n) with ``K[b, j, i] = k(z_j, z_i)`` and
  ``grad_K`` (B, n, n, D) with ``grad_K[b, j, i] = ∇_{z_j} k(z_j, z_i)``;
- :meth:`RadialKernel.kernel_and_repulsion`: ``K`` and the summed "repulsive" term
  ``R[b, i] = Σ_j ∇_{z_j} k(z_j, z_i)`` (B, n, D) without the (B, n, n, D) tensor, which is what
  :func:`latentgap.stein.svgd.svgd_direction` needs (Eq. 10 of the LDC-VAE paper).

Kernels (registered in :data:`KERNELS`):

- ``rbf-paper``: k = exp(−‖z − z'‖² / h) with the median heuristic h = med² / log n, med the
  median of the pairwise distances of the n particles (Section 5.1 of the LDC-VAE paper).
- ``rbf-liu``: k = exp(−‖z − z'‖² / (2h²)) with h = sqrt(0.5 · median(d²) / log(n + 1)), the
  parametrisation of Liu & Wang's reference SVGD code. Both are the median heuristic; they differ
  in the log n vs log(n + 1) factor (and in whether the median is of d or of d²). The reference
  numpy code takes the median over the full n × n matrix including the n zero diagonal entries;
  here both rules take it over the n(n − 1)/2 distinct pairs i < j.
- ``imq``: inverse multiquadric k = (c² + ‖z − z'‖²)^β with β = −1/2 by default.

The median bandwidth is computed per particle set and detached: it is a constant of the update,
never differentiated.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import Tensor

from latentgap.errors import ConfigError
from latentgap.registry import Registry


def pairwise_sq_dists(z: Tensor) -> Tensor:
    """Squared Euclidean distances ``d²[b, j, i] = ‖z_j − z_i‖²``: (B, n, D) → (B, n, n).

    Uses ‖a‖² + ‖b‖² − 2a·b on particles centred per set (distances are translation invariant;
    centring limits cancellation), clamped at 0 with an exact zero diagonal: O(B n² + B n D)
    memory instead of the O(B n² D) of explicit differences.
    """
    zc = z - z.mean(-2, keepdim=True)  # (B, n, D)
    sq = zc.pow(2).sum(-1)  # (B, n)
    d2 = sq.unsqueeze(-1) + sq.unsqueeze(-2) - 2.0 * zc @ zc.transpose(-1, -2)  # (B, n, n)
    d2 = d2.clamp_min(0.0)
    d2.diagonal(dim1=-2, dim2=-1).zero_()  # exact zeros, in place (no extra n² pass)
    return d2


def median_of_pairs(sq_dists: Tensor, squared: bool) -> Tensor:
    """Median over the distinct pairs i < j of each particle set: (B, n, n) → (B,).

    ``squared=False`` takes the median of the distances d, ``True`` of the squared distances d².
    For an even number of pairs the two middle values are averaged (numpy's convention).
    """
    n = sq_dists.shape[-1]
    rows, cols = torch.triu_indices(n, n, offset=1, device=sq_dists.device)
    values = sq_dists[..., rows, cols]  # (B, P) with P = n(n − 1)/2
    if not squared:
        values = values.clamp_min(0).sqrt()
    lower = values.median(dim=-1).values  # (B,): torch takes the lower middle value
    if values.shape[-1] % 2:
        return lower
    upper = -(-values).median(dim=-1).values  # the upper middle value
    return 0.5 * (lower + upper)


class RadialKernel:
    """A kernel k(z, z') = κ(‖z − z'‖²); subclasses define :meth:`profile`."""

    name = "radial"

    def profile(self, sq_dists: Tensor) -> tuple[Tensor, Tensor]:  # pragma: no cover - abstract
        """κ(d²) and κ'(d²) = dκ/d(d²) for squared distances (B, n, n); each (B, n, n)."""
        raise NotImplementedError

    @staticmethod
    def _batched(z: Tensor) -> tuple[Tensor, bool]:
        if z.ndim == 2:
            return z.unsqueeze(0), True
        if z.ndim != 3:
            raise ValueError(f"particles must be (n, D) or (B, n, D), got {tuple(z.shape)}")
        return z, False

    def __call__(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """``K`` (B, n, n) and ``grad_K`` (B, n, n, D), ``grad_K[b, j, i] = ∇_{z_j} k(z_j, z_i)``.

        ``z`` may also be a single set (n, D); the outputs then have no batch dimension.
        Memory is O(B n² D): for large sets use :meth:`kernel_and_repulsion`.
        """
        zb, single = self._batched(z)
        k, dk = self.profile(pairwise_sq_dists(zb))  # (B, n, n) each
        diff = zb.unsqueeze(-2) - zb.unsqueeze(-3)  # (B, n, n, D): z_j − z_i
        grad = 2.0 * dk.unsqueeze(-1) * diff  # (B, n, n, D)
        return (k[0], grad[0]) if single else (k, grad)

    def kernel_and_repulsion(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """``K`` (B, n, n) and ``R`` (B, n, D), ``R[b, i] = Σ_j ∇_{z_j} k(z_j, z_i)``.

        With w = 2κ'(d²): R_i = Σ_j w_ji (z_j − z_i) = (wᵀ Z)_i − z_i Σ_j w_ji, two batched
        matrix products instead of the (B, n, n, D) gradient tensor.
        """
        zb, single = self._batched(z)
        k, dk = self.profile(pairwise_sq_dists(zb))  # (B, n, n)
        w = 2.0 * dk  # (B, n, n), symmetric
        r = torch.einsum("bji,bjd->bid", w, zb) - zb * w.sum(-2).unsqueeze(-1)  # (B, n, D)
        return (k[0], r[0]) if single else (k, r)


class RBFKernel(RadialKernel):
    """Gaussian kernel exp(−‖z − z'‖² / τ) with a median-heuristic (or fixed) bandwidth.

    ``rule="paper"``: τ = h with h = med² / log n (LDC-VAE, Section 5.1); a fixed ``bandwidth``
    is that h. ``rule="liu"``: τ = 2h² with h = sqrt(0.5 · median(d²) / log(n + 1)) (Liu & Wang's
    SVGD code); a fixed ``bandwidth`` is that h. ``scale`` multiplies the median rule's τ (1: the
    rule itself). ``min_scale`` floors τ so that a set of identical particles (median 0) gives
    K = 1 rather than a division by zero.
    """

    def __init__(
        self,
        rule: Literal["paper", "liu"] = "paper",
        bandwidth: float | None = None,
        min_scale: float = 1e-12,
        scale: float = 1.0,
    ) -> None:
        if rule not in ("paper", "liu"):
            raise ConfigError(f"RBF bandwidth rule must be 'paper' or 'liu', got {rule!r}")
        if bandwidth is not None and not bandwidth > 0:
            raise ConfigError(f"RBF bandwidth must be positive, got {bandwidth}")
        if not scale > 0:
            raise ConfigError(f"RBF scale must be positive, got {scale}")
        self.rule = rule
        self.bandwidth = bandwidth
        self.min_scale = min_scale
        self.factor = float(scale)
        self.name = f"rbf-{rule}"

    def scale(self, sq_dists: Tensor) -> Tensor:
        """τ in exp(−d²/τ) per particle set: (B, n, n) → (B,), detached."""
        batch, n = sq_dists.shape[0], sq_dists.shape[-1]
        if self.bandwidth is not None:
            h = sq_dists.new_full((batch,), float(self.bandwidth))
            tau = h if self.rule == "paper" else 2.0 * h * h
        elif self.rule == "paper":
            if n < 2:
                raise ValueError("the median bandwidth med²/log n needs at least 2 particles")
            med = median_of_pairs(sq_dists.detach(), squared=False)  # (B,)
            tau = med.pow(2) / math.log(n)
        else:
            if n < 2:
                raise ValueError("the median bandwidth needs at least 2 particles")
            med2 = median_of_pairs(sq_dists.detach(), squared=True)  # (B,)
            tau = med2 / math.log(n + 1)  # 2h² with h² = 0.5·med(d²)/log(n + 1)
        if self.bandwidth is None:
            tau = tau * self.factor
        return tau.detach().clamp_min(self.min_scale)

    def h(self, z: Tensor) -> Tensor:
        """The bandwidth h of this rule's parametrisation for particles (B, n, D) → (B,)."""
        zb, _ = self._batched(z)
        tau = self.scale(pairwise_sq_dists(zb))
        return tau if self.rule == "paper" else (tau / 2).sqrt()

    def profile(self, sq_dists: Tensor) -> tuple[Tensor, Tensor]:
        tau = self.scale(sq_dists)[:, None, None]  # (B, 1, 1)
        k = torch.exp(-sq_dists / tau)  # (B, n, n)
        return k, -k / tau


class IMQKernel(RadialKernel):
    """Inverse multiquadric kernel (c² + ‖z − z'‖²)^β, β < 0 (default −1/2)."""

    def __init__(self, c: float = 1.0, beta: float = -0.5) -> None:
        if not c > 0:
            raise ConfigError(f"IMQ kernel c must be positive, got {c}")
        if not beta < 0:
            raise ConfigError(f"IMQ kernel beta must be negative, got {beta}")
        self.c = float(c)
        self.beta = float(beta)
        self.name = "imq"

    def profile(self, sq_dists: Tensor) -> tuple[Tensor, Tensor]:
        base = self.c**2 + sq_dists  # (B, n, n)
        k = base.pow(self.beta)
        return k, self.beta * k / base


KERNELS: Registry[Callable[..., RadialKernel]] = Registry("Stein kernel")
KERNELS.add("rbf-paper", lambda **options: RBFKernel("paper", **options))
KERNELS.add("rbf-liu", lambda **options: RBFKernel("liu", **options))
KERNELS.add("imq", IMQKernel)


def build_kernel(name: str, **options: Any) -> RadialKernel:
    """The registered kernel ``name`` (``rbf-paper``, ``rbf-liu``, ``imq``) with its options."""
    factory = KERNELS.get(name)
    try:
        return factory(**options)
    except TypeError as err:
        raise ConfigError(f"kernel {name!r}: {err}") from None


__all__ = [
    "KERNELS",
    "IMQKernel",
    "RBFKernel",
    "RadialKernel",
    "build_kernel",
    "median_of_pairs",
    "pairwise_sq_dists",
]
