"""The two-stage VAE (Dai & Wipf 2019, "Diagnosing and enhancing VAE models"), a baseline of the
LDC-VAE paper's Table 1.

Stage 1 is a VAE on images with a Gaussian decoder of learnt scalar variance γ; as γ → 0 the
reconstructions sharpen and the aggregate posterior q(z) = E_x q(z|x) drifts away from N(0, I),
so prior samples decode poorly. Stage 2 is a second VAE (an MLP, also with learnt γ) fitted to
stage-1 latents z ~ q(z|x), whose own aggregate posterior is close to N(0, I) (Dai &
Wipf). Generation runs both decoders:

    u ~ N(0, I)  →  z = E_p2[z|u] (stage-2 decoder mean)  →  x = E_p1[x|z] (stage-1 decoder mean).

Training is two phases of the trainer: ``stage1`` optimises the stage-1 ELBO, ``stage2`` the
stage-2 ELBO with stage 1 frozen. The trainer serves image batches in both phases; a stage-2 step
encodes its batch with the frozen stage-1 encoder (eval mode, no gradient) and takes a fresh
posterior sample (``stage2_latents="sample"``, as Dai & Wipf's code does each epoch) or the
posterior mean (``"mean"``) as stage-2 data, so no code cache is needed. The epochs are split by
``stage2_epochs`` or, when that is None, ``stage2_fraction``.

The stage-1 ELBO bounds the likelihood of the stage-1 model with a N(0, I) prior, not of the
two-stage generator, so this model reports no likelihood (``has_likelihood`` is false).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor

from latentgap.data.base import Batch, DataSpec
from latentgap.errors import ConfigError
from latentgap.models.base import MODELS, GenerativeModel, ModelOutput, Phase, Step
from latentgap.models.vae import VAE, VAEConfig
from latentgap.presets import PRESETS, Preset


@dataclass
class TwoStageVAEConfig(VAEConfig):
    """Options of ``two-stage-vae``: the VAE options configure stage 1 (Gaussian likelihood with
    learnt γ required); ``stage2_*`` configure the stage-2 MLP VAE and the epoch split."""

    arch: str = "rae"
    latent_dim: int = 16
    likelihood: str | None = "gaussian"
    stage2_latent_dim: int | None = None  # None: the stage-1 latent_dim (Dai & Wipf)
    stage2_hidden: tuple[int, ...] = (1024, 1024, 1024)
    stage2_latents: Literal["sample", "mean"] = "sample"
    stage2_epochs: int | None = None
    stage2_fraction: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.likelihood != "gaussian" or self.likelihood_options.get("learn_gamma") is False:
            raise ConfigError(
                "two-stage-vae: stage 1 needs the gaussian likelihood with a learnt γ "
                f"(got likelihood={self.likelihood!r}, options={self.likelihood_options})"
            )
        d2 = self.stage2_latent_dim
        if d2 is not None and (isinstance(d2, bool) or not isinstance(d2, int) or d2 < 1):
            raise ConfigError(f"stage2_latent_dim must be a positive integer or null, got {d2!r}")
        self.stage2_hidden = tuple(self.stage2_hidden)
        if self.stage2_latents not in ("sample", "mean"):
            raise ConfigError(
                f"stage2_latents must be 'sample' or 'mean', got {self.stage2_latents!r}"
            )
        e2 = self.stage2_epochs
        if e2 is not None and (isinstance(e2, bool) or not isinstance(e2, int) or e2 < 1):
            raise ConfigError(f"stage2_epochs must be a positive integer or null, got {e2!r}")
        if not (0.0 < self.stage2_fraction < 1.0):
            raise ConfigError(f"stage2_fraction must lie in (0, 1), got {self.stage2_fraction}")


@MODELS.register("two-stage-vae")
class TwoStageVAE(GenerativeModel):
    """Two-stage VAE (Dai & Wipf 2019): a second VAE learns the first one's latent distribution."""

    config_class: ClassVar[type] = TwoStageVAEConfig

    def __init__(self, config: TwoStageVAEConfig, spec: DataSpec) -> None:
        super().__init__(config, spec)
        stage1_options = {f.name: getattr(config, f.name) for f in dataclasses.fields(VAEConfig)}
        self.stage1 = VAE(VAEConfig(**stage1_options), spec)
        d1 = config.latent_dim
        d2 = config.stage2_latent_dim or d1
        self.latent_spec = DataSpec(f"{spec.name}-stage1-latents", (1, 1, d1), "continuous")
        stage2_config = VAEConfig(
            arch="mlp",
            latent_dim=d2,
            likelihood="gaussian",
            likelihood_options={"mean_activation": "identity"},
            arch_options={"hidden": config.stage2_hidden},
        )
        self.stage2 = VAE(stage2_config, self.latent_spec)
        # Set by the first stage-2 training step; picks the default sampler; saved in checkpoints.
        self.register_buffer("stage2_trained", torch.tensor(False))

    # --- training contract -----------------------------------------------------------------
    def parameter_groups(self) -> dict[str, list[torch.nn.Parameter]]:
        return {
            "stage1": [p for p in self.stage1.parameters() if p.requires_grad],
            "stage2": [p for p in self.stage2.parameters() if p.requires_grad],
        }

    def stage_epochs(self, epochs: int) -> tuple[int, int]:
        """(stage-1 epochs, stage-2 epochs) for a run of ``epochs`` epochs."""
        cfg = self.config
        stage2 = cfg.stage2_epochs
        if stage2 is None:
            stage2 = int(math.floor(cfg.stage2_fraction * epochs + 0.5))
        stage1 = epochs - stage2
        if stage1 < 1 or stage2 < 1:
            raise ConfigError(
                f"two-stage-vae needs at least one epoch per stage; {epochs} epochs give "
                f"stage 1 {stage1} and stage 2 {stage2} (set stage2_epochs or train longer)"
            )
        return stage1, stage2

    def phases(self, epochs: int) -> list[Phase]:
        stage1, _ = self.stage_epochs(epochs)
        return [
            Phase("stage1", (Step("stage1", "stage1"),), epochs=stage1),
            Phase("stage2", (Step("stage2", "stage2"),), epochs=None),
        ]

    @torch.no_grad()
    def stage1_latents(self, batch: Batch) -> Tensor:
        """Stage-2 training data for a batch of images: stage-1 posterior samples or means,
        (B, D₁), computed with stage 1 in eval mode (its batch-norm statistics stay frozen)."""
        was_training = self.stage1.training
        self.stage1.eval()
        try:
            q = self.stage1.posterior(self.stage1.encoder_input(batch))
        finally:
            self.stage1.train(was_training)
        return q.sample() if self.config.stage2_latents == "sample" else q.mean

    def forward(self, step: str, batch: Batch) -> ModelOutput:
        if step == "stage1":
            return self.stage1("loss", batch)
        if step == "stage2":
            if self.training:
                self.stage2_trained.fill_(True)
            z = self.stage1_latents(batch)  # (B, D₁)
            z_img = z.reshape(z.shape[0], *self.latent_spec.shape)  # (B, 1, 1, D₁)
            return self.stage2("loss", Batch(z_img, z_img))
        raise ValueError(f"two-stage-vae has losses 'stage1' and 'stage2', not {step!r}")

    # --- generation ------------------------------------------------------------------------
    def samplers(self) -> tuple[str, ...]:
        return ("two-stage", "prior")

    @torch.no_grad()
    def sample(
        self, n: int, generator: torch.Generator | None = None, sampler: str | None = None, **_: Any
    ) -> Tensor:
        """``"two-stage"`` (the default once stage 2 is trained): u ~ N(0, I) through both
        decoders; ``"prior"`` (the default before): z ~ N(0, I) through the stage-1 decoder."""
        if sampler is None:
            sampler = "two-stage" if bool(self.stage2_trained) else "prior"
        if sampler not in self.samplers():
            raise ConfigError(
                f"two-stage-vae has no sampler {sampler!r}; choose one of: "
                f"{', '.join(self.samplers())}"
            )
        if sampler == "prior":
            return self.stage1.sample(n, generator=generator)
        u = self.stage2.sample_latents(n, generator=generator)  # (n, D₂)
        z = self.stage2.likelihood.mean(self.stage2.decode(u))  # (n, 1, 1, D₁)
        z = z.reshape(n, -1)  # (n, D₁)
        return self.stage1.likelihood.mean(self.stage1.decode(z)).clamp(0, 1)

    @torch.no_grad()
    def reconstruct(self, batch: Batch) -> Tensor:
        return self.stage1.reconstruct(batch)

    @torch.no_grad()
    def latent_codes(self, batch: Batch, generator: torch.Generator | None = None) -> Tensor:
        return self.stage1.latent_codes(batch, generator)

    @torch.no_grad()
    def generation_codes(
        self, n: int, generator: torch.Generator | None = None, sampler: str | None = None
    ) -> Tensor:
        """Stage-1 codes generation decodes: the stage-2 VAE's output means (or N(0, I))."""
        if sampler is None:
            sampler = "two-stage" if bool(self.stage2_trained) else "prior"
        if sampler == "prior":
            return self.stage1.sample_latents(n, generator=generator)
        u = self.stage2.sample_latents(n, generator=generator)  # (n, D₂)
        return self.stage2.likelihood.mean(self.stage2.decode(u)).reshape(n, -1)  # (n, D₁)


# --- presets ----------------------------------------------------------------------------------
# Stage 1 on the RAE nets as the other LDC-VAE baselines (z = 16, batch 100, continuous MNIST):
# 100 stage-1 epochs as in the RAE protocol, then 200 stage-2 epochs (twice as many, as Dai &
# Wipf; a stage-2 epoch costs one stage-1 encoder pass plus the MLP VAE, about 1/8 of a stage-1
# epoch on the small nets); Adam, lr 5e-4. Stage 2 is Dai & Wipf's MLP of three 1024-unit
# layers. The small version: width-4 RAE nets, a 256-256 stage-2 MLP, 10 + 10 epochs.
PRESETS.add(
    "two-stage-vae-mnist",
    Preset(
        "Two-stage VAE (Dai & Wipf), RAE nets, z = 16, learnt γ, continuous MNIST "
        "(LDC-VAE Table 1 baseline)",
        {
            "model": "two-stage-vae",
            "model_options": {"arch": "rae", "latent_dim": 16, "stage2_epochs": 200},
            "data": {"name": "mnist", "options": {"binarize": False}},
            "train": {"epochs": 300, "batch_size": 100, "lr": 5e-4},
        },
    ),
)
PRESETS.add(
    "two-stage-vae-mnist-small",
    Preset(
        "Two-stage VAE on RAE nets of width 4 and a 256-256 stage-2 MLP, z = 16, continuous "
        "MNIST; ~1 min an epoch on one CPU thread",
        {
            "model": "two-stage-vae",
            "model_options": {
                "arch": "rae",
                "latent_dim": 16,
                "arch_options": {"width": 4},
                "stage2_hidden": [256, 256],
                "stage2_epochs": 10,
            },
            "data": {"name": "mnist", "options": {"binarize": False}},
            "train": {"epochs": 20, "batch_size": 100, "lr": 1e-3},
        },
    ),
)

__all__ = ["TwoStageVAE", "TwoStageVAEConfig"]
