"""Regularised autoencoders (RAE; Ghosh et al. 2020, "From variational to deterministic
autoencoders"): the LDC-VAE paper's strongest Table 1 baselines.

A deterministic encoder z = E(x) and decoder x̂ = D(z) = sigmoid(decoder(z)) minimise the RAE
objective of Ghosh et al., with the normalisations of the authors' code,

    L = mean_pixels ‖x − x̂‖²  +  β_z · mean_d z_d²  +  λ · L_REG

averaged over the batch: the per-pixel squared error (summed over channels, averaged over
pixels), the code penalty averaged over the latent dimensions (the paper writes ½‖z‖²; the
published weights belong to the code's normalisation), and a decoder regulariser:

- ``rae``: none (β_z = 0.5e-3 on MNIST);
- ``rae-l2``: L2 weight decay, L_REG = Σ ‖W‖² over the decoder's weight tensors
  (β_z = 1e-4, λ = 1e-7);
- ``rae-gp``: a gradient penalty on the decoder output w.r.t. z (β_z = 1e-4, λ = 0.5e-7),
  see :func:`decoder_gradient_penalty`;
- ``rae-sn``: spectral normalisation of every decoder weight, no loss term (β_z = 0.009).
  The RAE conv nets keep a batch norm after every normalised layer, which rescales its output.
  A decoder without normalisation layers (the ``mlp`` arch) becomes ¼-Lipschitz (sigmoid
  output): images ‖x − x′‖ ≈ 10 apart need codes ≈ 40 apart, which the code penalty forbids,
  and the MLP RAE-SN of the LDC-VAE table at cpu-long decoded the mean image for every code
  (reconstruction FID 349; docs/results.md). Such a decoder draws a warning.

New images come from ex-post density estimation: after training, a 10-component
full-covariance Gaussian mixture is fitted to the training codes
(:class:`~latentgap.samplers.gmm.GaussianMixture`, fitted in :meth:`RAE.end_phase`) and its
draws are decoded. The mixture is part of the model's state, so checkpoints carry it.

:class:`DeterministicAutoencoder` is the shared skeleton (also used by WAE-MMD).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from latentgap.data.base import Batch, DataSpec, ImageSet
from latentgap.errors import ConfigError
from latentgap.models.base import MODELS, GenerativeModel, ModelOutput
from latentgap.nets import build_decoder, build_encoder
from latentgap.nets.mlp import positive_int, spectral_normalize
from latentgap.presets import PRESETS, Preset
from latentgap.samplers.gmm import GaussianMixture

GradientPenaltyForm = Literal["reference", "jacobian"]
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm, nn.InstanceNorm2d)


def pixel_squared_error(x_hat: Tensor, x: Tensor) -> Tensor:
    """Per-pixel squared error: (B, C, H, W) → (B,), summed over C and averaged over H, W."""
    return (x_hat - x).square().sum(-3).mean((-2, -1))


def decoder_gradient_penalty(
    x_hat: Tensor,
    z: Tensor,
    form: GradientPenaltyForm = "reference",
    generator: torch.Generator | None = None,
    create_graph: bool = True,
) -> Tensor:
    """The RAE-GP decoder regulariser for outputs ``x_hat`` (B, C, H, W) computed from ``z`` (B, D).

    - ``"reference"``: what the RAE authors' code computes for the paper's ‖∇_z D(z)‖²: the
      gradient of the batch's summed *squared* outputs, squared and averaged over batch and
      latent dims, ``mean_{b,d} (∂ Σ_i x̂_{b,i}² / ∂z_{b,d})²`` (the weight 0.5e-7 was tuned for
      it). For a linear decoder x̂ = Wz + c this is mean_{b,d} (2 Wᵀ x̂_b)_d².
    - ``"jacobian"``: the squared Frobenius norm of the decoder Jacobian, ‖∂x̂_b/∂z_b‖²_F averaged
      over the batch, estimated without bias by Hutchinson's trick with one Gaussian probe per
      example, ‖J_bᵀ v_b‖², v_b ~ N(0, I) (drawn with ``generator``).

    Returns a 0-dim tensor; with ``create_graph`` it can be back-propagated (double backprop).
    Decoders that couple a batch (batch norm in training mode) couple the penalty likewise.
    """
    if form == "reference":
        target, grad_outputs = x_hat.square().sum(), None
    elif form == "jacobian":
        probe = torch.randn(
            x_hat.shape, generator=generator, device=x_hat.device, dtype=x_hat.dtype
        )  # (B, C, H, W)
        target, grad_outputs = x_hat, probe
    else:
        raise ConfigError(f"gradient penalty form must be 'reference' or 'jacobian', got {form!r}")
    (grad,) = torch.autograd.grad(target, z, grad_outputs, create_graph=create_graph)  # (B, D)
    if form == "reference":
        return grad.square().mean()
    return grad.square().sum(-1).mean()


def check_weight(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0):
        raise ConfigError(f"{name} must be a number ≥ 0, got {value!r}")


class DeterministicAutoencoder(GenerativeModel):
    """Encoder E: images → codes (B, D) and decoder D: codes → images in [0, 1] (a sigmoid on the
    decoder's single output map). Generation decodes N(0, I) draws (``"prior"`` sampler)."""

    def __init__(self, config: Any, spec: DataSpec) -> None:
        super().__init__(config, spec)
        self.encoder = build_encoder(
            config.arch, spec.shape, config.latent_dim, **config.arch_options
        )
        self.decoder = build_decoder(
            config.arch, config.latent_dim, spec.shape, 1, **config.arch_options
        )

    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

    def encode(self, x: Tensor) -> Tensor:
        """Codes z = E(x): (B, C, H, W) → (B, D)."""
        return self.encoder(x)

    def decode(self, z: Tensor) -> Tensor:
        """Images x̂ = sigmoid(D(z)) in [0, 1]: (B, D) → (B, C, H, W)."""
        return torch.sigmoid(self.decoder(z))

    def check_sampler(self, sampler: str | None) -> str:
        names = self.samplers()
        sampler = sampler or names[0]
        if sampler not in names:
            raise ConfigError(
                f"{type(self).__name__} has no sampler {sampler!r}; choose one of: {', '.join(names)}"
            )
        return sampler

    def sample_latents(self, n: int, generator: torch.Generator | None, sampler: str) -> Tensor:
        return torch.randn(n, self.latent_dim, generator=generator, device=self.device)

    @torch.no_grad()
    def sample(
        self, n: int, generator: torch.Generator | None = None, sampler: str | None = None, **_
    ) -> Tensor:
        z = self.sample_latents(n, generator, self.check_sampler(sampler))  # (n, D)
        return self.decode(z).clamp(0, 1)

    @torch.no_grad()
    def reconstruct(self, batch: Batch) -> Tensor:
        return self.decode(self.encode(batch.x)).clamp(0, 1)

    @torch.no_grad()
    def latent_codes(self, batch: Batch, generator: torch.Generator | None = None) -> Tensor:
        return self.encode(batch.x)

    @torch.no_grad()
    def generation_codes(
        self, n: int, generator: torch.Generator | None = None, sampler: str | None = None
    ) -> Tensor:
        return self.sample_latents(n, generator, self.check_sampler(sampler))

    @torch.no_grad()
    def encode_dataset(self, images: ImageSet, batch_size: int = 500) -> Tensor:
        """Codes of every image of ``images`` in order, in eval mode (batch norm frozen): (N, D)."""
        was_training = self.training
        self.eval()
        try:
            codes = [self.encode(b.x.to(self.device)) for b in images.batches(batch_size)]
        finally:
            self.train(was_training)
        return torch.cat(codes)


@dataclass
class RAEConfig:
    """Options of ``rae`` (no decoder regulariser); the subclasses' configs add theirs."""

    arch: str = "rae"
    latent_dim: int = 16
    embedding_weight: float = 0.5e-3  # β_z
    gmm_components: int = 10
    gmm_seed: int = 0
    arch_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        positive_int("latent_dim", self.latent_dim)
        positive_int("gmm_components", self.gmm_components)
        check_weight("embedding_weight", self.embedding_weight)
        if "spectral_norm" in self.arch_options:
            raise ConfigError("arch_options.spectral_norm is not an RAE option; use model 'rae-sn'")


@dataclass
class RAEL2Config(RAEConfig):
    """Options of ``rae-l2``: ``decoder_weight`` is λ of the decoder's L2 weight decay."""

    embedding_weight: float = 1e-4
    decoder_weight: float = 1e-7

    def __post_init__(self) -> None:
        super().__post_init__()
        check_weight("decoder_weight", self.decoder_weight)


@dataclass
class RAEGPConfig(RAEConfig):
    """Options of ``rae-gp``: ``decoder_weight`` is λ of the gradient penalty, ``penalty_form``
    its definition (see :func:`decoder_gradient_penalty`)."""

    embedding_weight: float = 1e-4
    decoder_weight: float = 0.5e-7
    penalty_form: GradientPenaltyForm = "reference"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_weight("decoder_weight", self.decoder_weight)
        if self.penalty_form not in ("reference", "jacobian"):
            raise ConfigError(
                f"penalty_form must be 'reference' or 'jacobian', got {self.penalty_form!r}"
            )


@dataclass
class RAESNConfig(RAEConfig):
    """Options of ``rae-sn`` (spectrally normalised decoder)."""

    embedding_weight: float = 0.009


@MODELS.register("rae")
class RAE(DeterministicAutoencoder):
    """Regularised autoencoder (Ghosh et al. 2020), code penalty only; ex-post GMM sampling."""

    config_class: ClassVar[type] = RAEConfig
    regularizer: ClassVar[str] = "none"

    def __init__(self, config: RAEConfig, spec: DataSpec) -> None:
        super().__init__(config, spec)
        if self.regularizer == "sn":
            spectral_normalize(self.decoder)
            if not any(isinstance(m, _NORMS) for m in self.decoder.modules()):
                warnings.warn(
                    "rae-sn: the decoder has no normalisation layer, so spectral normalisation "
                    "bounds its Lipschitz constant by 1 and it cannot separate images at the "
                    "code scale the penalty allows (it decodes the mean image); use a net with "
                    "batch norm, such as arch 'rae'",
                    stacklevel=2,
                )
        self.density = GaussianMixture(config.gmm_components, config.latent_dim)
        self._train_set: ImageSet | None = None  # for on-demand refits; not saved
        self._density_stale = False

    def samplers(self) -> tuple[str, ...]:
        return ("gmm", "prior")

    # --- training --------------------------------------------------------------------------
    def decoder_regularizer(self, x_hat: Tensor, z: Tensor) -> dict[str, Tensor]:
        """Named unweighted decoder-regulariser terms (empty for ``rae`` and ``rae-sn``)."""
        return {}

    def forward(self, step: str, batch: Batch) -> ModelOutput:
        if self.training:
            self._density_stale = True
        x = batch.x
        z = self.encode(x)  # (B, D)
        x_hat = self.decode(z)  # (B, C, H, W)
        rec = pixel_squared_error(x_hat, x).mean()
        embedding = z.square().mean()
        loss = rec + self.config.embedding_weight * embedding
        terms = {"rec": rec, "embedding": embedding}
        for name, value in self.decoder_regularizer(x_hat, z).items():
            loss = loss + self.config.decoder_weight * value
            terms[name] = value
        return ModelOutput(loss, terms)

    def attach_training_set(self, train: ImageSet) -> None:
        self._train_set = train

    def end_phase(self, phase: str, train: ImageSet) -> None:
        """Training is over: fit the ex-post GMM to the codes of the whole training set."""
        self.fit_density(train)

    # --- ex-post density -------------------------------------------------------------------
    def fit_density(self, train: ImageSet) -> dict[str, Any]:
        """Encode ``train`` (eval mode, batched) and fit the GMM to the codes; diagnostics."""
        codes = self.encode_dataset(train)  # (N, D)
        info = self.density.fit(codes, seed=self.config.gmm_seed)
        self._density_stale = False
        return info

    def sample_latents(self, n: int, generator: torch.Generator | None, sampler: str) -> Tensor:
        """``"gmm"``: draws from the ex-post mixture. It is (re)fitted on demand when it is
        missing or older than the weights and the trainer has handed over a training set
        (per-epoch sample grids); without one an unfitted mixture raises ConfigError."""
        if sampler == "prior":
            return super().sample_latents(n, generator, sampler)
        if self._train_set is not None and (self._density_stale or not self.density.is_fitted):
            self.fit_density(self._train_set)
        if not self.density.is_fitted:
            raise ConfigError(
                "the ex-post GMM has not been fitted yet: train the model to the end (the trainer "
                "fits it then), call model.fit_density(train_set), or use sampler='prior'"
            )
        return self.density.sample(n, generator=generator)


@MODELS.register("rae-l2")
class RAEL2(RAE):
    """RAE with L2 weight decay on the decoder (Ghosh et al. 2020); ex-post GMM sampling."""

    config_class = RAEL2Config
    regularizer = "l2"

    def decoder_regularizer(self, x_hat: Tensor, z: Tensor) -> dict[str, Tensor]:
        """Σ ‖W‖² over the decoder's weight tensors (dims ≥ 2: dense and conv kernels; biases and
        batch-norm scales are not decayed). The authors' Keras code decays only the transposed
        convolutions' kernels; here the dense layer's kernel is decayed too."""
        weights = [p for p in self.decoder.parameters() if p.ndim >= 2]
        return {"decoder_l2": torch.stack([w.square().sum() for w in weights]).sum()}


@MODELS.register("rae-gp")
class RAEGP(RAE):
    """RAE with a gradient penalty on the decoder (Ghosh et al. 2020); ex-post GMM sampling."""

    config_class = RAEGPConfig
    regularizer = "gp"
    compile_unsupported = (
        "its decoder gradient penalty differentiates a gradient through the decoder (double "
        "backward), which torch.compile cannot do"
    )

    def forward(self, step: str, batch: Batch) -> ModelOutput:
        # The penalty differentiates through the decoder, also when the trainer evaluates the
        # test loss under no_grad.
        with torch.enable_grad():
            return super().forward(step, batch)

    def decoder_regularizer(self, x_hat: Tensor, z: Tensor) -> dict[str, Tensor]:
        if not z.requires_grad:  # frozen encoder: differentiate w.r.t. a leaf copy instead
            z = z.detach().requires_grad_(True)
            x_hat = self.decode(z)
        return {"gradient_penalty": decoder_gradient_penalty(x_hat, z, self.config.penalty_form)}


@MODELS.register("rae-sn")
class RAESN(RAE):
    """RAE with a spectrally normalised decoder (Ghosh et al. 2020); ex-post GMM sampling."""

    config_class = RAESNConfig
    regularizer = "sn"


# --- presets ----------------------------------------------------------------------------------
# Paper settings (LDC-VAE Table 1, from Ghosh et al.): RAE nets (width 128), z = 16, batch 100,
# Adam with lr 5e-4 (the RAE authors' code), 100 epochs, continuous MNIST, MNIST weights from
# the authors' configuration. The small versions use width 4 (the authors' "tiny" MNIST net).
_WEIGHTS = {
    "rae": ("no decoder regulariser", {"embedding_weight": 0.5e-3}),
    "rae-l2": ("decoder L2", {"embedding_weight": 1e-4, "decoder_weight": 1e-7}),
    "rae-gp": ("decoder gradient penalty", {"embedding_weight": 1e-4, "decoder_weight": 0.5e-7}),
    "rae-sn": ("spectrally normalised decoder", {"embedding_weight": 0.009}),
}


def _register_presets() -> None:
    for name, (what, weights) in _WEIGHTS.items():
        options = {"arch": "rae", "latent_dim": 16, **weights}
        PRESETS.add(
            f"{name}-mnist",
            Preset(
                f"{name.upper()} ({what}), RAE nets, z = 16, continuous MNIST, ex-post 10-GMM "
                "(LDC-VAE Table 1 baseline)",
                {
                    "model": name,
                    "model_options": options,
                    "data": {"name": "mnist", "options": {"binarize": False}},
                    "train": {"epochs": 100, "batch_size": 100, "lr": 5e-4},
                },
            ),
        )
        PRESETS.add(
            f"{name}-mnist-small",
            Preset(
                f"{name.upper()} on RAE nets of width 4, z = 16, continuous MNIST; "
                + ("~2 min" if name == "rae-gp" else "~1 min")
                + " an epoch on one CPU thread",
                {
                    "model": name,
                    "model_options": {**options, "arch_options": {"width": 4}},
                    "data": {"name": "mnist", "options": {"binarize": False}},
                    "train": {"epochs": 10, "batch_size": 100, "lr": 1e-3},
                },
            ),
        )


_register_presets()

__all__ = [
    "RAE",
    "RAEGP",
    "RAEL2",
    "RAESN",
    "DeterministicAutoencoder",
    "RAEConfig",
    "RAEGPConfig",
    "RAEL2Config",
    "RAESNConfig",
    "decoder_gradient_penalty",
    "pixel_squared_error",
]
