"""The VAE baseline (Kingma & Welling 2014) on any registered network, likelihood and posterior.

Training maximises the ELBO, Eq. (1) of the VAEPP paper,

    L(x) = E_q(z|x)[log p(x|z)] − KL(q(z|x) ‖ N(0, I)),

with the KL in closed form for a diagonal Gaussian q (Monte Carlo otherwise). With
``condition_on="e"`` the encoder sees the gray image e and the reconstruction term is the expected
Bernoulli log-likelihood of e (Eq. 7 of the VAEPP paper), the form VAEPP builds on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor

from latentgap.data.base import Batch, DataSpec
from latentgap.errors import ConfigError
from latentgap.likelihoods import build_likelihood, default_likelihood
from latentgap.models.base import MODELS, GenerativeModel, ModelOutput
from latentgap.nets import build_decoder, build_encoder
from latentgap.posteriors import POSTERIORS, build_posterior
from latentgap.priors import StandardNormal


@dataclass
class VAEConfig:
    """Options of :class:`VAE` (and the base of models built on it)."""

    arch: str = "mlp"
    latent_dim: int = 40
    likelihood: str | None = None  # None: chosen from the data kind
    posterior: str = "gaussian"
    condition_on: Literal["x", "e"] = "x"
    min_log_scale: float = -5.0
    kl_weight: float = 1.0
    arch_options: dict[str, Any] = field(default_factory=dict)
    likelihood_options: dict[str, Any] = field(default_factory=dict)

    _conditions = ("x", "e")  # class attribute, not a field

    def __post_init__(self) -> None:
        if self.latent_dim <= 0:
            raise ConfigError(f"latent_dim must be a positive integer, got {self.latent_dim}")
        if self.condition_on not in self._conditions:
            valid = " or ".join(repr(c) for c in self._conditions)
            raise ConfigError(f"condition_on must be {valid}, got {self.condition_on!r}")
        if self.posterior not in POSTERIORS:
            POSTERIORS.get(self.posterior)  # raises ConfigError listing the valid names
        if self.kl_weight < 0:
            raise ConfigError(f"kl_weight must be ≥ 0, got {self.kl_weight}")


class LatentVAEBase(GenerativeModel):
    """Encoder q(z|·), decoder p(x|z) and a standard normal prior: shared by VAE-family models."""

    has_likelihood = True

    def __init__(self, config: VAEConfig, spec: DataSpec) -> None:
        super().__init__(config, spec)
        likelihood = config.likelihood or default_likelihood(spec)
        self.likelihood = build_likelihood(likelihood, spec, **config.likelihood_options)
        self.encoder = build_encoder(
            config.arch, spec.shape, 2 * config.latent_dim, **config.arch_options
        )
        self.decoder = build_decoder(
            config.arch,
            config.latent_dim,
            spec.shape,
            self.likelihood.param_channels,
            **config.arch_options,
        )
        self.prior = StandardNormal(config.latent_dim)

    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

    def encoder_input(self, batch: Batch) -> Tensor:
        return batch.e if self.config.condition_on == "e" else batch.x

    def reconstruction_target(self, batch: Batch) -> Tensor:
        return batch.e if self.config.condition_on == "e" else batch.x

    def posterior(self, inputs: Tensor, name: str | None = None):
        """q(z | inputs) as a distribution object over (B, D)."""
        h = self.encoder(inputs)  # (B, 2D)
        return build_posterior(
            name or self.config.posterior, h, min_log_scale=self.config.min_log_scale
        )

    def decode(self, z: Tensor) -> Tensor:
        """Likelihood parameters for latents of any leading shape: (..., D) → (..., k·C, H, W)."""
        lead = z.shape[:-1]
        params = self.decoder(z.reshape(-1, z.shape[-1]))
        return params.reshape(*lead, *params.shape[1:])

    def log_prior(self, z: Tensor) -> Tensor:
        """log p(z) for (..., D) → (...)."""
        return self.prior.log_prob(z)

    def elbo_output(self, batch: Batch, closed_form_kl: bool = False) -> ModelOutput:
        """The single-sample ELBO log p(x|z) − KL, loss −(rec − kl_weight·KL). With
        ``closed_form_kl`` and a posterior that has ``kl_standard_normal`` the KL to N(0, I) is
        analytic; otherwise it is the one-sample estimate log q(z|x) − log p(z)."""
        q = self.posterior(self.encoder_input(batch))
        z = q.rsample()  # (B, D)
        rec = self.likelihood.log_prob(self.decode(z), self.reconstruction_target(batch))  # (B,)
        if closed_form_kl and hasattr(q, "kl_standard_normal"):
            kl = q.kl_standard_normal()  # (B,)
        else:
            kl = q.log_prob(z) - self.log_prior(z)  # (B,)
        elbo = rec - kl
        loss = -(rec - self.config.kl_weight * kl).mean()
        return ModelOutput(
            loss,
            {
                "elbo": elbo.mean(),
                "rec": rec.mean(),
                "kl": kl.mean(),
                "bpd": -elbo.mean() / (self.spec.dim * math.log(2)),
            },
        )

    # --- generation ----------------------------------------------------------------------
    def sample_latents(self, n: int, generator: torch.Generator | None = None, **options) -> Tensor:
        return self.prior.sample(n, generator=generator, device=self.device)

    @torch.no_grad()
    def latent_codes(self, batch: Batch, generator: torch.Generator | None = None) -> Tensor:
        return self.posterior(self.encoder_input(batch)).sample()

    @torch.no_grad()
    def generation_codes(
        self, n: int, generator: torch.Generator | None = None, sampler: str | None = None
    ) -> Tensor:
        options = {} if sampler is None else {"sampler": sampler}
        return self.sample_latents(n, generator=generator, **options)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, **options) -> Tensor:
        z = self.sample_latents(n, generator=generator, **options)
        return self.likelihood.mean(self.decode(z)).clamp(0, 1)

    @torch.no_grad()
    def reconstruct(self, batch: Batch) -> Tensor:
        q = self.posterior(self.encoder_input(batch))
        return self.likelihood.mean(self.decode(q.mean)).clamp(0, 1)

    # --- likelihood ----------------------------------------------------------------------
    def log_importance_weights(self, batch: Batch, k: int) -> Tensor:
        """log p(x|z) + log p(z) − log q(z|·) with z ~ q, K per example: (K, B).

        ``batch.x`` is always scored (a fresh binarisation at test time), whatever the encoder
        is conditioned on: q(z|e) is a valid proposal for p(x) because e is observed with x.
        """
        q = self.posterior(self.encoder_input(batch))
        z = q.rsample(k)  # (K, B, D)
        log_px_z = self.likelihood.log_prob(self.decode(z), batch.x)  # (K, B)
        return log_px_z + self.log_prior(z) - q.log_prob(z)


@MODELS.register("vae")
class VAE(LatentVAEBase):
    """The Kingma & Welling VAE with a standard normal prior."""

    config_class = VAEConfig

    def forward(self, step: str, batch: Batch) -> ModelOutput:
        return self.elbo_output(batch, closed_form_kl=True)
