"""The standard normal prior p(z) = N(0, I), the VAE default and the base density p_N of
VAEPP's pull-back prior p_λ(z) ∝ p_N(z)·exp(−β·D(G(z))) (Eq. 4 of the VAEPP paper).

``log_prob`` upcasts bf16/fp16 latents to float32 (:func:`latentgap.posteriors.upcast`), so it is
float32 under bf16 autocast; float64 stays float64."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from latentgap.posteriors import upcast

_LOG_2PI = math.log(2.0 * math.pi)


class StandardNormal(nn.Module):
    """N(0, I) on R^dim; no parameters, normalised exactly (log Z = 0)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        if dim <= 0:
            raise ValueError(f"latent dimension must be positive, got {dim}")
        self.dim = int(dim)

    def log_prob(self, z: Tensor) -> Tensor:
        """log N(z; 0, I) = −½‖z‖² − (D/2)·log 2π: z (..., D) → (...)."""
        if z.shape[-1] != self.dim:
            raise ValueError(f"expected latents with last dim {self.dim}, got {tuple(z.shape)}")
        return -0.5 * (upcast(z).square().sum(-1) + self.dim * _LOG_2PI)

    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> Tensor:
        """n draws: (n, D)."""
        return torch.randn(n, self.dim, generator=generator, device=device, dtype=dtype)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"
