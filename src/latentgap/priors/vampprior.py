"""The VampPrior (Tomczak & Welling 2018): a uniform mixture of the encoder's posteriors at K
learnable pseudo-inputs u_1, …, u_K,

    p(z) = (1/K) Σ_k q(z | u_k),

the "variational mixture of posteriors" that approximates the aggregate posterior. So
log p(z) = logsumexp_k log q(z | u_k) − log K in closed form, and a draw picks k uniformly, then
z ~ q(z | u_k).

The pseudo-inputs are parameters of data shape (K, C, H, W). They are kept in the data range
[0, 1] by an output activation on an unconstrained parameter: ``hardtanh`` (clamp to [0, 1], the
paper's choice, whose gradient vanishes outside the interval) or ``sigmoid``. Initial values in
(0, 1) are stored so that the activation maps them back exactly.

The prior does not own the encoder: it takes the posterior as a callable (images → posterior
over (B, D)), so the same code serves a VAE's encoder and any test encoder.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from latentgap.posteriors import DiagonalGaussian, Posterior, upcast

ACTIVATIONS = ("hardtanh", "sigmoid")
# elements of the temporaries of one block of log_prob's rows
_BLOCK_ELEMENTS = 1 << 22
_LOG_2PI = math.log(2.0 * math.pi)


def diagonal_gaussian_log_probs(z: Tensor, loc: Tensor, log_scale: Tensor) -> Tensor:
    """log N(z_n; μ_k, diag σ_k²) for every code and component: z (N, D), loc and log_scale
    (K, D) → (N, K), in the dtype of z and loc.

    Expands Σ_d (z_d − μ_kd)²/σ_kd² = z² · λ_k − 2 z · (μ_k λ_k) + μ_k² · λ_k (λ = σ⁻²) into two
    (N, D) × (D, K) products instead of an (N, K, D) tensor. The expansion cancels terms as large
    as z²/σ² (≈ 10⁵ at σ = e⁻⁵), so it is evaluated in float64 (outside autocast), which keeps
    the result within float32 rounding of the direct form.
    """
    out_dtype = torch.promote_types(z.dtype, loc.dtype)
    with torch.autocast(z.device.type, enabled=False):
        z64, loc64, log_scale64 = z.double(), loc.double(), log_scale.double()
        inv_var = torch.exp(-2.0 * log_scale64)  # (K, D)
        quad = (
            z64.square() @ inv_var.T  # (N, K)
            - 2.0 * (z64 @ (loc64 * inv_var).T)
            + (loc64.square() * inv_var).sum(-1)  # (K,)
        )
        log_norm = log_scale64.sum(-1) + 0.5 * z.shape[-1] * _LOG_2PI  # (K,)
        return (-0.5 * quad - log_norm).to(out_dtype)


class VampPrior(nn.Module):
    """p(z) = (1/K) Σ_k q(z | u_k) for a posterior callable q and pseudo-inputs u (K, C, H, W).

    ``init`` holds the initial pseudo-inputs, values in [0, 1] ((0, 1) for ``sigmoid``).
    """

    def __init__(
        self,
        posterior: Callable[[Tensor], Posterior],
        init: Tensor,
        activation: str = "hardtanh",
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}"
            )
        if init.ndim < 2 or init.shape[0] < 1:
            raise ValueError(f"init must be (K, *data shape) with K ≥ 1, got {tuple(init.shape)}")
        low, high = (0.0, 1.0)
        known = init.device.type != "meta"  # a meta tensor (shapes only) has no values to check
        if known and not bool(((init >= low) & (init <= high)).all()):
            raise ValueError("initial pseudo-inputs must lie in [0, 1]")
        if known and activation == "sigmoid" and not bool(((init > low) & (init < high)).all()):
            raise ValueError("initial pseudo-inputs must lie in (0, 1) for the sigmoid activation")
        self.posterior = posterior  # a callable, not a submodule: its parameters are the caller's
        self.activation = activation
        raw = init if activation == "hardtanh" else torch.logit(init)
        self.raw_inputs = nn.Parameter(raw.detach().clone())

    @property
    def n_components(self) -> int:
        return self.raw_inputs.shape[0]

    def pseudo_inputs(self) -> Tensor:
        """u = activation(raw), in [0, 1]: (K, C, H, W)."""
        if self.activation == "hardtanh":
            return nn.functional.hardtanh(self.raw_inputs, 0.0, 1.0)
        return torch.sigmoid(self.raw_inputs)

    @torch.no_grad()
    def set_pseudo_inputs(self, values: Tensor) -> None:
        """Overwrite the pseudo-inputs with ``values`` (K, C, H, W) in the data range."""
        if values.shape != self.raw_inputs.shape:
            raise ValueError(
                f"expected pseudo-inputs of shape {tuple(self.raw_inputs.shape)}, "
                f"got {tuple(values.shape)}"
            )
        raw = values if self.activation == "hardtanh" else torch.logit(values)
        self.raw_inputs.copy_(raw)

    def components(self) -> Posterior:
        """The K mixture components q(z | u_k), a posterior over (K, D)."""
        return self.posterior(self.pseudo_inputs())

    def log_prob(self, z: Tensor) -> Tensor:
        """log p(z) = logsumexp_k log q(z | u_k) − log K: z (..., D) → (...).

        Differentiable in z, the pseudo-inputs and the encoder. For a diagonal Gaussian q the
        K component densities come from two matrix products (:func:`diagonal_gaussian_log_probs`);
        any other posterior family is scored by broadcasting, in blocks of rows so that the
        (rows, K, D) temporaries stay a few MB.
        """
        q = self.components()  # loc (K, D)
        k, d = q.loc.shape
        if z.shape[-1] != d:
            raise ValueError(f"expected latents with last dim {d}, got {tuple(z.shape)}")
        flat = upcast(z).reshape(-1, d)  # (N, D)
        gaussian = isinstance(q, DiagonalGaussian)
        # per row: K float64 values a few times over (Gaussian), else K·D values
        rows = max(1, _BLOCK_ELEMENTS // (k * (8 if gaussian else d)))
        parts = []
        for start in range(0, flat.shape[0], rows):
            block = flat[start : start + rows]  # (rows, D)
            if gaussian:
                log_qk = diagonal_gaussian_log_probs(block, q.loc, q.log_scale)  # (rows, K)
            else:
                log_qk = q.log_prob(block[:, None, :])  # (rows, K)
            parts.append(torch.logsumexp(log_qk, dim=-1))  # (rows,)
        log_p = torch.cat(parts) if parts else flat.new_zeros(0)
        return (log_p - math.log(k)).reshape(z.shape[:-1])

    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> Tensor:
        """n draws: k ~ U{1..K}, then z ~ q(z | u_k): (n, D). ``device`` must be the pseudo-inputs'
        (it is accepted for the StandardNormal interface)."""
        u = self.pseudo_inputs()  # (K, C, H, W)
        if device is not None and torch.device(device).type != u.device.type:
            raise ValueError(f"VampPrior lives on {u.device}, asked to sample on {device}")
        index = torch.randint(self.n_components, (n,), generator=generator, device=u.device)
        z = self.posterior(u[index]).sample(generator=generator)  # (n, D)
        return z if dtype is None else z.to(dtype)

    def extra_repr(self) -> str:
        shape = tuple(self.raw_inputs.shape[1:])
        return f"n_components={self.n_components}, shape={shape}, activation={self.activation}"
