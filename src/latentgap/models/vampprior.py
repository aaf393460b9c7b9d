"""The VAE with a VampPrior (Tomczak & Welling 2018), the learnable-prior baseline of the VAEPP
paper's likelihood tables.

Everything but the prior is the :class:`~.vae.VAE`: the same networks, likelihood, posterior and
options, so ``--model vampprior`` on a VAE preset compares the two on identical nets. The prior is
:class:`~latentgap.priors.VampPrior`, p(z) = (1/K) Σ_k q(z | u_k) with K = ``n_pseudo`` learnable
pseudo-inputs u_k (500 in the paper's MNIST experiments). Training maximises the single-sample
ELBO

    L(x) = log p(x|z) + log p(z) − log q(z|x),   z ~ q(z|x),

the KL term being a one-sample Monte Carlo estimate (it has no closed form under a mixture prior).
``kl_weight`` scales it as in the VAE; there is no warm-up, as the VAE has none.

Pseudo-input initialisation (``pseudo_init``): the paper's code draws them from N(−0.05, 0.01²)
before a hardtanh to [0, 1], which starts every pixel at 0, where hardtanh passes no gradient;
its alternative is random training images. Here ``"data"`` (the default) takes K random training
images (gray levels) plus N(0, ``pseudo_init_std``²) noise, and ``"normal"`` draws
N(0.5, ``pseudo_init_std``²) per pixel; both are clamped to [0.01, 0.99] so that hardtanh passes
gradients at the start. A model built without training data starts from ``"normal"``; the
``"data"`` values are written once, when training first starts (:meth:`prepare_training`), from a
seed drawn at construction, so every data-parallel rank picks the same images and a resumed run
keeps its learnt pseudo-inputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from latentgap.data.base import Batch, DataSpec, ImageSet
from latentgap.errors import ConfigError
from latentgap.models.base import MODELS, ModelOutput
from latentgap.models.vae import LatentVAEBase, VAEConfig
from latentgap.presets import PRESETS, Preset
from latentgap.priors.vampprior import ACTIVATIONS, VampPrior

_INITS = ("data", "normal")
_MARGIN = 0.01  # initial pseudo-inputs lie in [margin, 1 − margin]


@dataclass
class VampPriorConfig(VAEConfig):
    """Options of ``vampprior``: the VAE's, plus the number of pseudo-inputs and their set-up."""

    n_pseudo: int = 500
    pseudo_init: str = "data"
    pseudo_init_std: float = 0.01
    pseudo_activation: str = "hardtanh"

    def __post_init__(self) -> None:
        super().__post_init__()
        k = self.n_pseudo
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ConfigError(f"n_pseudo must be a positive integer, got {k!r}")
        if self.pseudo_init not in _INITS:
            raise ConfigError(
                f"pseudo_init must be one of {', '.join(_INITS)}, got {self.pseudo_init!r}"
            )
        s = self.pseudo_init_std
        if (
            isinstance(s, bool)
            or not isinstance(s, (int, float))
            or not (math.isfinite(s) and s >= 0)
        ):
            raise ConfigError(f"pseudo_init_std must be a finite number ≥ 0, got {s!r}")
        if self.pseudo_activation not in ACTIVATIONS:
            raise ConfigError(
                f"pseudo_activation must be one of {', '.join(ACTIVATIONS)}, "
                f"got {self.pseudo_activation!r}"
            )


@MODELS.register("vampprior")
class VampPriorVAE(LatentVAEBase):
    """A VAE whose prior is the VampPrior over its own encoder (Tomczak & Welling 2018)."""

    config_class: ClassVar[type] = VampPriorConfig

    def __init__(self, config: VampPriorConfig, spec: DataSpec) -> None:
        super().__init__(config, spec)
        shape = (config.n_pseudo, *spec.shape)
        init = (0.5 + config.pseudo_init_std * torch.randn(shape)).clamp(_MARGIN, 1 - _MARGIN)
        self.prior = VampPrior(self.posterior, init, config.pseudo_activation)
        # the seed of the data initialisation, from the global RNG like every initial weight
        seed = torch.randint(0, 2**62, ()) if config.pseudo_init == "data" else torch.tensor(0)
        self.register_buffer("pseudo_seed", seed)
        self.register_buffer("pseudo_ready", torch.tensor(config.pseudo_init != "data"))

    def prepare_training(self, train: ImageSet) -> None:
        """Initialise the pseudo-inputs from K random training images plus noise (once)."""
        if bool(self.pseudo_ready):
            return
        g = torch.Generator().manual_seed(int(self.pseudo_seed))
        k, n = self.config.n_pseudo, len(train)
        index = (
            torch.randperm(n, generator=g)[:k] if k <= n else torch.randint(n, (k,), generator=g)
        )
        images = train.gray(index.to(train.device)).to(self.prior.raw_inputs)  # (K, C, H, W)
        noise = torch.randn(images.shape, generator=g).to(images)
        init = (images + self.config.pseudo_init_std * noise).clamp(_MARGIN, 1 - _MARGIN)
        self.prior.set_pseudo_inputs(init)
        self.pseudo_ready.fill_(True)

    def forward(self, step: str, batch: Batch) -> ModelOutput:
        # the KL to a mixture prior has no closed form: the one-sample estimate
        return self.elbo_output(batch, closed_form_kl=False)


PRESETS.add(
    "vampprior-mnist-small",
    Preset(
        "VAE with a VampPrior (K = 500 pseudo-inputs) on vae-mnist-small's nets: MLP 784-500-500, "
        "z = 40, Bernoulli, dynamically binarised MNIST",
        {
            "model": "vampprior",
            "model_options": {"arch": "mlp", "latent_dim": 40, "n_pseudo": 500},
            "data": {"name": "mnist"},
            "train": {"epochs": 10, "batch_size": 100, "lr": 1e-3},
        },
    ),
)

__all__ = ["VampPriorConfig", "VampPriorVAE"]
