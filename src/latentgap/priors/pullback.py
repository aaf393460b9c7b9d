"""VAEPP's pull-back prior, Eq. (4) of the VAEPP paper:

    p_λ(z) = f_λ(z) / Z,   f_λ(z) = N(z; 0, I) · exp(−β·D(G(z))),   Z = ∫ f_λ(z) dz,

with G the decoder mean and D a critic on data space (smaller D(x) means "more like real data").
β = w·sigmoid(ξ) with ξ one learnable scalar initialised to 0, so β starts at w/2 and never
exceeds the fixed bound w (the paper's "β is limited by a hyper-parameter"; w = 10 for MNIST,
1000 for CIFAR-10). The energy used by samplers (MALA) is

    E(z) = −log f_λ(z) + const = ½‖z‖² + β·D(G(z)).

The prior owns only ξ. The decoder G and the critic D belong to the model (so the prior shares no
submodule with it and its state dict is one scalar); every method takes the critic values
``d_of_g`` = D(G(z)), shape (...), for latents z of shape (..., D), or a callable z ↦ D(G(z)).
The partition function Z is estimated by :mod:`latentgap.priors.partition`.

Precision: under bf16 autocast the critic (and the decoder in G) run in bf16, but every method
here upcasts bf16/fp16 latents and critic values to float32 before combining them
(:func:`latentgap.posteriors.upcast`), so log f_λ, the energy and the log-weights are float32
(float64 inputs stay float64). ξ is a float32 parameter and is never cast down.

Learning β (Eq. 6 of the VAEPP paper). With the ELBO term E_q[log f_λ(z)] − log Z,

    ∂L/∂β = −E_{q(z)}[D(G(z))] + E_{p_λ(z)}[D(G(z))],                      (6)

because ∂ log Z/∂β = −E_{p_λ}[D(G(z))]. Autograd through a log Ẑ that is an importance-sampling
estimate of log Z gives the self-normalised estimate of the second term; at the optimum the critic
cannot tell reconstructions (q) from prior samples (p_λ). :meth:`PullbackPrior.beta_gradient`
evaluates Eq. (6) from critic values on both, a diagnostic worth logging.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from latentgap.errors import ConfigError
from latentgap.posteriors import upcast

_LOG_2PI = math.log(2.0 * math.pi)

CriticValues = Tensor | Callable[[Tensor], Tensor]
"""D(G(z)) for latents z (..., D): either the values (...) or a callable z ↦ (...)."""


class PullbackPrior(nn.Module):
    """The pull-back prior p_λ(z) ∝ N(z; 0, I)·exp(−β·D(G(z))), Eq. (4) of the VAEPP paper.

    Args:
        dim: latent dimension D.
        beta_bound: the fixed bound w in β = w·sigmoid(ξ) (β ∈ (0, w)).
        init_logit: initial ξ (0 gives β = w/2, the reference setting).
    """

    def __init__(self, dim: int, beta_bound: float, init_logit: float = 0.0) -> None:
        super().__init__()
        if dim <= 0:
            raise ConfigError(f"latent dimension must be positive, got {dim}")
        if not (math.isfinite(beta_bound) and beta_bound > 0):
            raise ConfigError(f"beta_bound (w) must be a finite number > 0, got {beta_bound}")
        self.dim = int(dim)
        self.beta_bound = float(beta_bound)
        self.xi = nn.Parameter(torch.tensor(float(init_logit)))  # () the logit ξ

    @property
    def beta(self) -> Tensor:
        """β = w·sigmoid(ξ), a differentiable 0-dim tensor in (0, w)."""
        return self.beta_bound * torch.sigmoid(self.xi)

    def _values(self, z: Tensor, d_of_g: CriticValues) -> Tensor:
        """D(G(z)) as a tensor of shape z.shape[:-1], checked, bf16/fp16 upcast to float32."""
        if z.shape[-1] != self.dim:
            raise ValueError(f"expected latents with last dim {self.dim}, got {tuple(z.shape)}")
        d = d_of_g(z) if callable(d_of_g) else d_of_g
        if d.shape != z.shape[:-1]:
            raise ValueError(
                f"critic values D(G(z)) must have shape {tuple(z.shape[:-1])} (z without its "
                f"last dim), got {tuple(d.shape)}"
            )
        return upcast(d)

    def log_weight(self, d_of_g: Tensor) -> Tensor:
        """log f_λ(z) − log N(z; 0, I) = −β·D(G(z)): (...) → (...).

        The importance log-weight of the p_N proposal, Z = E_{ε~N(0, I)} exp(−β·D(G(ε))).
        """
        d = upcast(d_of_g)
        return -self.beta.to(d.dtype) * d

    def energy(self, z: Tensor, d_of_g: CriticValues) -> Tensor:
        """E(z) = ½‖z‖² + β·D(G(z)) = −log f_λ(z) − (D/2)·log 2π: z (..., D) → (...)."""
        d = self._values(z, d_of_g)  # float32 (or float64)
        z = upcast(z)
        return 0.5 * z.square().sum(-1) + self.beta.to(d.dtype) * d

    def log_unnormalized(self, z: Tensor, d_of_g: CriticValues) -> Tensor:
        """log f_λ(z) = log N(z; 0, I) − β·D(G(z)) (Eq. 4 without Z): z (..., D) → (...).

        Includes the −(D/2)·log 2π of the standard normal, so log Z is that of Eq. (4) exactly
        (log Z = 0 when β = 0).
        """
        return -self.energy(z, d_of_g) - 0.5 * self.dim * _LOG_2PI

    def log_prob(self, z: Tensor, d_of_g: CriticValues, log_z: Tensor | float) -> Tensor:
        """log p_λ(z) = log f_λ(z) − log Z, Eq. (4): z (..., D) → (...).

        ``log_z`` is an estimate from :mod:`latentgap.priors.partition`; pass the differentiable
        training estimate (a 0-dim tensor) to learn β through Eq. (6), or a fixed float at
        evaluation. With an upper bound Ẑ ≥ Z the result is a lower bound of log p_λ(z).
        """
        if isinstance(log_z, Tensor):
            log_z = upcast(log_z)
        return self.log_unnormalized(z, d_of_g) - log_z

    def energy_fn(self, d_of_g_fn: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
        """The energy as a callable z (..., D) ↦ E(z) (...), e.g. for a MALA sampler."""
        return lambda z: self.energy(z, d_of_g_fn)

    def log_f_fn(self, d_of_g_fn: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
        """log f_λ as a callable z (..., D) ↦ (...), the ``log_f_fn`` of
        :func:`latentgap.priors.partition.log_z_posterior_proposal`."""
        return lambda z: self.log_unnormalized(z, d_of_g_fn)

    def log_weight_fn(self, d_of_g_fn: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
        """ε (n, D) ↦ −β·D(G(ε)) (n,), the ``log_weight_fn`` of
        :func:`latentgap.priors.partition.log_z_normal_proposal`."""
        return lambda eps: self.log_weight(self._values(eps, d_of_g_fn))

    @staticmethod
    def beta_gradient(d_of_g_q: Tensor, d_of_g_p: Tensor) -> Tensor:
        """Eq. (6): ∂L/∂β ≈ −mean D(G(z_q)) + mean D(G(z_p)), z_q ~ q(z), z_p ~ p_λ(z).

        ``d_of_g_q`` are critic values on posterior samples (reconstructions), ``d_of_g_p`` on
        prior samples (e.g. from MALA); a positive value means the ELBO would grow with β.
        """
        return upcast(d_of_g_p).mean() - upcast(d_of_g_q).mean()

    def extra_repr(self) -> str:
        return f"dim={self.dim}, beta_bound={self.beta_bound:g}"
