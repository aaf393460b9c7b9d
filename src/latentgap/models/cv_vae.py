"""The constant-variance VAE (CV-VAE; Ghosh et al. 2020), a baseline of the LDC-VAE
paper's Table 1, and presets for the plain VAE baseline on the same RAE networks.

The encoder predicts only the posterior mean; the posterior variance is one scalar shared by all
inputs and all latent dimensions:

    q(z|x) = N(z; μ(x), σ² I),   σ a single number.

Reading chosen here: σ is a model parameter (``learn_scale``, the default), learnt with the rest
by maximising the ELBO, Eq. (1) of the VAEPP paper, or a fixed constant (``learn_scale=False``;
the RAE authors' MNIST CV-VAE fixes σ = 0.7). Either way it does not depend on x, which removes
the encoder's per-input control of the noise: the "stochasticity reduction" the LDC-VAE paper
describes. Training, likelihood evaluation and sampling are those of :class:`~.vae.VAE`
(closed-form KL to N(0, I), prior sampling); only the posterior differs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from latentgap.data.base import DataSpec
from latentgap.errors import ConfigError
from latentgap.models.base import MODELS
from latentgap.models.vae import VAE, VAEConfig
from latentgap.nets import build_encoder
from latentgap.posteriors import POSTERIORS, Posterior
from latentgap.presets import PRESETS, Preset


@dataclass
class CVVAEConfig(VAEConfig):
    """Options of ``cv-vae``: the VAE's, plus the shared posterior scale σ (its initial value when
    learnt) and whether it is learnt. Defaults follow the LDC-VAE setting (RAE nets, z = 16)."""

    arch: str = "rae"
    latent_dim: int = 16
    posterior_scale: float = 1.0
    learn_scale: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        s = self.posterior_scale
        if (
            isinstance(s, bool)
            or not isinstance(s, (int, float))
            or not (math.isfinite(s) and s > 0)
        ):
            raise ConfigError(f"posterior_scale must be a finite number > 0, got {s!r}")
        if not isinstance(self.learn_scale, bool):
            raise ConfigError(f"learn_scale must be true or false, got {self.learn_scale!r}")


@MODELS.register("cv-vae")
class CVVAE(VAE):
    """VAE whose posterior variance is one scalar shared by all inputs and dims (Ghosh et al. 2020)."""

    config_class: ClassVar[type] = CVVAEConfig

    def __init__(self, config: CVVAEConfig, spec: DataSpec) -> None:
        super().__init__(config, spec)
        # The base class built an encoder with 2·D outputs (mean and log-scale); this model's
        # encoder predicts the mean only.
        self.encoder = build_encoder(
            config.arch, spec.shape, config.latent_dim, **config.arch_options
        )
        init = torch.tensor(math.log(config.posterior_scale))
        if config.learn_scale:
            self.log_scale = nn.Parameter(init)
        else:
            self.register_buffer("log_scale", init)

    @property
    def posterior_scale(self) -> Tensor:
        """σ, the shared posterior standard deviation (0-dim)."""
        return self.log_scale.clamp(min=self.config.min_log_scale).exp()

    def posterior(self, inputs: Tensor, name: str | None = None) -> Posterior:
        """q(z|x) = N(μ(x), σ² I) (or the chosen posterior family with scale σ) over (B, D)."""
        loc = self.encoder(inputs)  # (B, D)
        log_scale = self.log_scale.clamp(min=self.config.min_log_scale).expand_as(loc)  # (B, D)
        return POSTERIORS.get(name or self.config.posterior)(loc, log_scale)


# --- presets ----------------------------------------------------------------------------------
# LDC-VAE Table 1 (from Ghosh et al.): RAE nets, z = 16, batch 100, 100 epochs, continuous MNIST
# with a Gaussian likelihood of learnt variance γ. Adam with lr 1e-4, the RAE authors' setting
# for their VAE and CV-VAE; the CV-VAE fixes σ = 0.7 as in their MNIST configuration. The small
# versions use RAE nets of width 4, lr 1e-3 and 10 epochs for CPU runs.
def _vae_presets(model: str, label: str, extra: dict) -> None:
    options = {"arch": "rae", "latent_dim": 16, "likelihood": "gaussian", **extra}
    data = {"name": "mnist", "options": {"binarize": False}}
    PRESETS.add(
        f"{model}-rae-mnist" if model == "vae" else f"{model}-mnist",
        Preset(
            f"{label}, RAE nets, z = 16, Gaussian likelihood (learnt γ), continuous MNIST "
            "(LDC-VAE Table 1 baseline)",
            {
                "model": model,
                "model_options": options,
                "data": data,
                "train": {"epochs": 100, "batch_size": 100, "lr": 1e-4},
            },
        ),
    )
    PRESETS.add(
        f"{model}-rae-mnist-small" if model == "vae" else f"{model}-mnist-small",
        Preset(
            f"{label} on RAE nets of width 4, z = 16, Gaussian likelihood, continuous MNIST; "
            "~1 min an epoch on one CPU thread",
            {
                "model": model,
                "model_options": {**options, "arch_options": {"width": 4}},
                "data": data,
                "train": {"epochs": 10, "batch_size": 100, "lr": 1e-3},
            },
        ),
    )


_vae_presets("vae", "VAE", {})
_vae_presets("cv-vae", "CV-VAE (fixed σ = 0.7)", {"posterior_scale": 0.7, "learn_scale": False})

__all__ = ["CVVAE", "CVVAEConfig"]
