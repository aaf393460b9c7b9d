"""A normalising-flow posterior for "VAEPP + flow" (Table 1 of the VAEPP paper).

The encoder's diagonal Gaussian sample z₀ ~ q₀(z₀|x) is pushed through an invertible map
z = f(z₀) built from RealNVP affine coupling layers (Dinh et al. 2017), so that

    log q(z|x) = log q₀(z₀|x) − log|det ∂f/∂z₀|,   z₀ = f⁻¹(z).

A coupling layer keeps the masked coordinates and transforms the others affinely,

    y = m ⊙ z + (1 − m) ⊙ (z ⊙ exp(s) + t),   (s, t) = NN(m ⊙ z, h),   log|det| = Σ (1 − m) ⊙ s,

with alternating masks m and log-scales bounded by s = c·tanh(ŝ/c). Every layer inverts in closed
form, so log q(z) is exact for any z, not only for the flow's own samples. ``h`` is an optional
context vector from the encoder (IAF-style conditioning on x, Kingma et al. 2016). The last
layer of every conditioner starts at zero, so a new flow is the identity.

The Eq. (8) estimate of Z needs q(z|e) with bounded weights: :meth:`FlowPosterior.truncated`
pushes a ±2σ truncated base through the same flow, which keeps the density exact.

Precision: under bf16 autocast the conditioner MLPs run in bf16, but a coupling layer upcasts
its input and the conditioner's outputs (s, t) to float32 (:func:`latentgap.posteriors.upcast`)
before the affine map and the log-determinant, so z and log|det| are float32 and consistent
with each other (the log-det is that of the map actually applied); float64 stays float64.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from latentgap.posteriors import DiagonalGaussian, Posterior, TruncatedNormal, upcast


class AffineCoupling(nn.Module):
    """One RealNVP affine coupling layer on R^dim with a fixed binary ``mask`` (dim,).

    The conditioner is an MLP (dim + context_dim → hidden → hidden → 2·dim) of the masked input
    and the context; log-scales are bounded to (−scale_bound, scale_bound).
    """

    def __init__(
        self,
        mask: Tensor,
        hidden: int = 64,
        context_dim: int = 0,
        scale_bound: float = 2.0,
    ) -> None:
        super().__init__()
        if mask.ndim != 1:
            raise ValueError(f"mask must be 1-D, got shape {tuple(mask.shape)}")
        if scale_bound <= 0:
            raise ValueError(f"scale_bound must be positive, got {scale_bound}")
        dim = mask.numel()
        self.dim = dim
        self.context_dim = int(context_dim)
        self.scale_bound = float(scale_bound)
        self.register_buffer("mask", mask.float())  # (D,)
        self.net = nn.Sequential(
            nn.Linear(dim + self.context_dim, hidden),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden, hidden),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden, 2 * dim),
        )
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def _shift_and_log_scale(self, z_kept: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        """(s, t), each (..., D), zero on the kept coordinates."""
        inp = z_kept
        if self.context_dim:
            if context is None:
                raise ValueError(
                    f"this flow is conditioned on a context of {self.context_dim} features"
                )
            ctx = context.to(z_kept.dtype).expand(*z_kept.shape[:-1], self.context_dim)
            inp = torch.cat([z_kept, ctx], dim=-1)  # (..., D + C)
        raw_s, t = upcast(self.net(inp)).chunk(2, dim=-1)  # (..., D) each, float32 or more
        free = 1.0 - self.mask.to(z_kept.dtype)
        s = self.scale_bound * torch.tanh(raw_s / self.scale_bound) * free
        return s, t * free

    def forward(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """y = m⊙z + (1−m)⊙(z·exp(s) + t) and log|det ∂y/∂z| = Σ s: (..., D), (...)."""
        z = upcast(z)
        mask = self.mask.to(z.dtype)
        s, t = self._shift_and_log_scale(z * mask, context)
        y = z * mask + (1.0 - mask) * (z * torch.exp(s) + t)
        return y, s.sum(-1)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """z = m⊙y + (1−m)⊙(y − t)·exp(−s) and log|det ∂z/∂y| = −Σ s: (..., D), (...)."""
        y = upcast(y)
        mask = self.mask.to(y.dtype)
        s, t = self._shift_and_log_scale(y * mask, context)  # m⊙y = m⊙z
        z = y * mask + (1.0 - mask) * (y - t) * torch.exp(-s)
        return z, -s.sum(-1)


class Flow(nn.Module):
    """A stack of ``n_layers`` affine couplings with alternating masks (even / odd coordinates).

    ``forward(z0, context)`` returns f(z₀) and log|det ∂f/∂z₀|; ``inverse(z, context)`` returns
    f⁻¹(z) and log|det ∂f⁻¹/∂z| (the negative of the forward log-determinant at f⁻¹(z)).
    Shapes: z (..., D), context (..., C) broadcastable to z's leading dims, log-det (...).
    """

    def __init__(
        self,
        dim: int,
        n_layers: int = 4,
        hidden: int = 64,
        context_dim: int = 0,
        scale_bound: float = 2.0,
    ) -> None:
        super().__init__()
        if dim <= 0 or n_layers <= 0 or hidden <= 0 or context_dim < 0:
            raise ValueError("dim, n_layers and hidden must be positive, context_dim ≥ 0")
        self.dim = int(dim)
        self.context_dim = int(context_dim)
        parity = torch.arange(dim) % 2  # (D,)
        self.layers = nn.ModuleList(
            AffineCoupling(
                (parity == i % 2).float(),
                hidden=hidden,
                context_dim=context_dim,
                scale_bound=scale_bound,
            )
            for i in range(n_layers)
        )

    def forward(self, z0: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if z0.shape[-1] != self.dim:
            raise ValueError(f"expected last dim {self.dim}, got {tuple(z0.shape)}")
        z = upcast(z0)
        log_det = torch.zeros(z.shape[:-1], dtype=z.dtype, device=z.device)  # (...)
        for layer in self.layers:
            z, ld = layer(z, context)
            log_det = log_det + ld
        return z, log_det

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if z.shape[-1] != self.dim:
            raise ValueError(f"expected last dim {self.dim}, got {tuple(z.shape)}")
        z = upcast(z)
        log_det = torch.zeros(z.shape[:-1], dtype=z.dtype, device=z.device)  # (...)
        for layer in reversed(self.layers):
            z, ld = layer.inverse(z, context)
            log_det = log_det + ld
        return z, log_det

    def extra_repr(self) -> str:
        return f"dim={self.dim}, n_layers={len(self.layers)}, context_dim={self.context_dim}"


class FlowPosterior:
    """q(z|x): the base posterior q₀ (B, D) pushed through ``flow``, exact log-density.

    Same interface as :mod:`latentgap.posteriors` objects where it makes sense: ``rsample(k)``
    gives (B, D) or (K, B, D), ``log_prob(z)`` maps (..., B, D) to (..., B). Prefer
    :meth:`rsample_and_log_prob`, which reuses the forward pass (no inversion). ``context``
    (B, C) conditions the flow on the encoder (None for an unconditional flow). The entropy and
    KL have no closed form: estimate them with samples, e.g. E_q[log q(z) − log p(z)].
    """

    def __init__(self, base: Posterior, flow: Flow, context: Tensor | None = None) -> None:
        if base.dim != flow.dim:
            raise ValueError(f"base posterior has dim {base.dim}, flow has dim {flow.dim}")
        self.base = base
        self.flow = flow
        self.context = context  # (B, C) or None

    @classmethod
    def from_encoder_output(
        cls,
        h: Tensor,
        flow: Flow,
        context: Tensor | None = None,
        min_log_scale: float = -5.0,
    ) -> FlowPosterior:
        """A diagonal Gaussian base from h (B, 2D) (see :class:`Posterior`) and ``flow``."""
        return cls(DiagonalGaussian.from_encoder_output(h, min_log_scale), flow, context)

    @property
    def dim(self) -> int:
        return self.base.dim

    @property
    def loc(self) -> Tensor:
        """The base location μ (B, D) (not the mean of q)."""
        return self.base.loc

    @property
    def log_scale(self) -> Tensor:
        """The base log-scale (B, D)."""
        return self.base.log_scale

    def rsample_and_log_prob(
        self, k: int | None = None, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Reparameterised z = f(z₀), z₀ ~ q₀, and log q(z) = log q₀(z₀) − log|det ∂f/∂z₀|:
        ((B, D), (B,)), or ((K, B, D), (K, B)) when ``k`` is given."""
        z0 = self.base.rsample(k, generator=generator)  # (K, B, D) or (B, D)
        log_q0 = self.base.log_prob(z0)  # (K, B) or (B,)
        z, log_det = self.flow(z0, self.context)
        return z, log_q0 - log_det

    def rsample(self, k: int | None = None, generator: torch.Generator | None = None) -> Tensor:
        """Reparameterised draws: (B, D), or (K, B, D) when ``k`` is given."""
        z0 = self.base.rsample(k, generator=generator)
        return self.flow(z0, self.context)[0]

    def sample(self, k: int | None = None, generator: torch.Generator | None = None) -> Tensor:
        """Like :meth:`rsample` but detached from the graph."""
        with torch.no_grad():
            return self.rsample(k, generator)

    def log_prob(self, z: Tensor) -> Tensor:
        """log q(z) = log q₀(f⁻¹(z)) + log|det ∂f⁻¹/∂z| for any z (..., B, D) → (..., B)."""
        z0, log_det_inv = self.flow.inverse(z, self.context)
        return self.base.log_prob(z0) + log_det_inv

    def truncated(self, bound: float = 2.0) -> FlowPosterior:
        """The same flow on the base restricted to ±``bound``·σ (for Eq. 8's Ẑ): still exact."""
        if isinstance(self.base, TruncatedNormal):
            return self
        return FlowPosterior(
            TruncatedNormal(self.base.loc, self.base.log_scale, bound=bound),
            self.flow,
            self.context,
        )

    def __repr__(self) -> str:
        return f"FlowPosterior(base={self.base!r}, flow={self.flow.extra_repr()})"
