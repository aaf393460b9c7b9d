"""LDC-VAE (Chen et al., "A latent distribution consistency approach to VAEs"): an implicit
encoder trained by SVGD towards a Gibbs posterior, and a sampler net trained the same way.

Equations refer to the LDC-VAE paper (shared/papers/ldc-vae.md).

- **Implicit encoder** z = E_θ(x, ε), ε ~ N(0, I) (Section 4.1, Fig. 1b), no reparameterisation:
  E_x (the registry encoder, e.g. the RAE conv body plus a dense layer) maps the image to F
  features; E_n, a linear layer, maps a noise vector to F features; the two are **added** (equal
  to concatenating them and applying one dense layer) and E_c = ReLU → dense maps the sum to z.
  The paper's E_n is "a convolutional layer"; a conv layer on i.i.d. Gaussian noise is a linear
  map of it, whose output law a linear layer on a noise vector reproduces. The ReLU between the
  merge and the last dense layer matters: with a purely linear E_c, z = f(x) + Aε would have the
  same Gaussian noise law for every x. E_x runs once per image; E_n and E_c once per particle.
- **Gibbs posterior** p(z|x) ∝ exp(−‖x − D_φ(z)‖² / σ²) (Eq. 13), σ² the variance of
  ‖x − D_φ(z)‖ over the batch's particles (Section 5.1; population variance, detached, floored
  at ``min_sigma2``). ``prior_weight`` w adds w · log N(z; 0, I) to log p(z|x) (0 = the paper's
  Eq. 13, which has no prior term). ``energy="mean"`` uses Algorithm 1's MSE instead of the sum.
  The score ∇_z log p(z|x) is taken by autograd through the decoder w.r.t. z only. Note that
  Eq. (15) and Algorithm 1 write +∇L_REC/σ²; the score of Eq. (13) is −∇‖x − D(z)‖²/σ², used here.
- **Encoder step** (Algorithm 1, steps 1–4): n particles per image from n noise draws, SVGD
  direction Φ* over each image's particles (Eq. 15), pushed into θ by the surrogate loss (Eq. 16);
  the decoder minimises L_REC = MSE(x, D(z)) (Eq. 7, Algorithm 1 step 2) on detached particles.
  One decoder pass serves both. With batch norm in the decoder (the RAE nets), that pass uses
  the batch's statistics, so the score is the gradient of the batch's joint energy.
- **SVGD estimator**: Eq. (15) sums over all n particles, including j = i. For particles drawn
  i.i.d. from a network that term is an unrepelled pull to the mode and shrinks q (about 15 % of
  the variance for 100 particles in 2-D; far more for 8 particles in 16-D). ``leave_one_out``
  drops it (see :func:`latentgap.stein.svgd.svgd_direction`); the default follows the paper.
  Eq. (13) has no prior, so nothing fixes the latent scale: the codes drift outwards as the
  decoder adapts (fast with ``leave_one_out``, whose repulsion is unopposed); ``prior_weight``
  anchors it.
- **Decoder output**: identity by default (samples are clamped to [0, 1]). With a sigmoid output
  and MSE, the first encoder steps (σ² ≈ 0 at initialisation, so huge scores) pushed all codes to
  where the sigmoid saturates at black; the score then vanished and training never recovered.
- **Sampler step** (Algorithm 1, steps 5–7): S_ω(ε_s) is driven by SVGD towards a Gibbs target.
  Which x that target is conditioned on is not stated; the sampler must produce latents for
  *generation*, i.e. match p_φ(z) = ∫ p_φ(z|x) p(x) dx (Section 4.1). ``sampler_target="mixture"``
  (default) uses the batch estimate p̂(z) = (1/B) Σ_b p(z|x_b) over one set of
  ``sampler_particles`` particles, score ∇ logsumexp_b(−‖x_b − D(z)‖²/σ² − log C_b). Section
  5.1 calls the normaliser C trivial, which holds for one posterior but not in a mixture: with
  equal C_b (``mixture_normalizer="none"``, the literal reading) the best-reconstructed images
  own the highest modes and the sampler collapsed onto one digit class (all "1"s) in our MNIST
  runs; estimating log C_b ≈ −‖x_b − D(ẑ_b)‖²/σ² at one encoder draw ẑ_b (``"encoder"``) did
  not prevent it. ``"sinkhorn"`` (default) fixes the C_b by balance instead: at the target each
  of the B components carries mass 1/B, so the particles' responsibilities are Sinkhorn-scaled
  to give every image M/B of them; this gave samples of all ten digits after two epochs.
  ``sampler_target="paired"`` is the literal per-image reading: n sampler particles per image
  driven to p(z|x_b). Averaged over images that target is the *geometric* mean
  Π_b p(z|x_b)^{1/B} (SVGD is linear in the score), not the mixture, so it collapses modes; it
  is kept for comparison.
  The decoder runs in eval mode here, as at generation time, so sampler particles never enter
  its batch-norm statistics. σ² is the encoder step's last value.
- **Schedule**: each iteration runs Step("autoencoder") then Step("sampler"), each on a fresh
  batch (the trainer's convention), with groups {"autoencoder": E + D, "sampler": S}.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn

from latentgap.data.base import Batch, DataSpec
from latentgap.errors import ConfigError
from latentgap.models.base import MODELS, GenerativeModel, GroupOptions, ModelOutput, Phase, Step
from latentgap.nets import build_decoder, build_encoder
from latentgap.presets import PRESETS, Preset
from latentgap.stein import KERNELS, build_kernel, svgd_direction, svgd_surrogate_loss

STEPS = ("autoencoder", "sampler")


@dataclass
class LDCVAEConfig:
    """Options of :class:`LDCVAE`; the module docstring explains each choice."""

    arch: str = "rae"
    latent_dim: int = 16
    arch_options: dict[str, Any] = field(default_factory=dict)
    feature_dim: int = 512  # F: width of E_x's output, E_n's output and the merge
    noise_dim: int = 32  # ε_e dimension
    n_particles: int = 8  # encoder particles per image (the paper does not say)
    kernel: str = "rbf-paper"
    kernel_options: dict[str, Any] = field(default_factory=dict)
    energy: Literal["sum", "mean"] = "sum"  # ‖x − D(z)‖² (Eq. 13) or MSE (Algorithm 1)
    sigma2: float | None = None  # None: batch variance of ‖x − D(z)‖ (Section 5.1)
    min_sigma2: float = 1e-6
    prior_weight: float = 0.0  # 0: the paper's Eq. (13)
    output: Literal["sigmoid", "identity"] = "identity"
    leave_one_out: bool = False  # drop the j = i term of Eq. (15) (see stein.svgd)
    sampler_net: Literal["encoder", "mlp"] = "encoder"  # encoder: arch's encoder on noise images
    sampler_noise_dim: int = 64  # ε_s dimension of the "mlp" sampler
    sampler_hidden: tuple[int, ...] = (512, 512)
    sampler_target: Literal["mixture", "paired"] = "mixture"
    sampler_particles: int = 100  # particles of the "mixture" target
    mixture_normalizer: Literal["sinkhorn", "encoder", "none"] = "sinkhorn"  # log C(x_b) estimate
    sinkhorn_iters: int = 20
    autoencoder_lr_scale: float = 1.0
    sampler_lr_scale: float = 1.0

    def __post_init__(self) -> None:
        for name in (
            "latent_dim",
            "feature_dim",
            "noise_dim",
            "sampler_noise_dim",
            "sinkhorn_iters",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        for name in ("n_particles", "sampler_particles"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 2:
                raise ConfigError(
                    f"{name} must be an integer ≥ 2 (SVGD needs pairs), got {value!r}"
                )
        choices = {
            "energy": ("sum", "mean"),
            "output": ("sigmoid", "identity"),
            "sampler_net": ("encoder", "mlp"),
            "sampler_target": ("mixture", "paired"),
            "mixture_normalizer": ("encoder", "sinkhorn", "none"),
        }
        for name, valid in choices.items():
            if getattr(self, name) not in valid:
                raise ConfigError(f"{name} must be one of {valid}, got {getattr(self, name)!r}")
        if not isinstance(self.leave_one_out, bool):
            raise ConfigError(f"leave_one_out must be true or false, got {self.leave_one_out!r}")
        if self.kernel not in KERNELS:
            KERNELS.get(self.kernel)  # raises ConfigError listing the kernels
        if self.sigma2 is not None and not self.sigma2 > 0:
            raise ConfigError(f"sigma2 must be positive or null, got {self.sigma2}")
        if not self.min_sigma2 > 0:
            raise ConfigError(f"min_sigma2 must be positive, got {self.min_sigma2}")
        if self.prior_weight < 0:
            raise ConfigError(f"prior_weight must be ≥ 0, got {self.prior_weight}")
        for name in ("autoencoder_lr_scale", "sampler_lr_scale"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")


class ImplicitEncoder(nn.Module):
    """z = E_c(E_x(x) + E_n(ε)): images (B, C, H, W) and noise (B, n, N) → codes (B, n, D)."""

    def __init__(
        self,
        arch: str,
        shape: tuple[int, int, int],
        latent_dim: int,
        feature_dim: int,
        noise_dim: int,
        arch_options: dict[str, Any],
    ) -> None:
        super().__init__()
        self.noise_dim = noise_dim
        self.features = build_encoder(arch, shape, feature_dim, **arch_options)  # E_x
        self.noise = nn.Linear(noise_dim, feature_dim)  # E_n
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(feature_dim, latent_dim))  # E_c

    def forward(self, x: Tensor, noise: Tensor) -> Tensor:
        if noise.ndim != 3 or noise.shape[0] != x.shape[0] or noise.shape[2] != self.noise_dim:
            raise ValueError(
                f"noise must be (B={x.shape[0]}, n, {self.noise_dim}), got {tuple(noise.shape)}"
            )
        hx = self.features(x)  # (B, F)
        hn = self.noise(noise)  # (B, n, F)
        return self.head(hx.unsqueeze(1) + hn)  # (B, n, D)


def sinkhorn_responsibilities(log_terms: Tensor, iters: int) -> Tensor:
    """Balanced responsibilities (M, B) from log weights (M, B): Sinkhorn scaling in log space
    to rows summing to 1 (one particle) and columns to M/B (equal mass per component)."""
    m, b = log_terms.shape
    log_w = log_terms
    for _ in range(iters):
        log_w = log_w - torch.logsumexp(log_w, dim=0, keepdim=True) + math.log(m / b)  # columns
        log_w = log_w - torch.logsumexp(log_w, dim=1, keepdim=True)  # rows
    return log_w.exp()


@contextmanager
def _eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


@MODELS.register("ldc-vae")
class LDCVAE(GenerativeModel):
    """LDC-VAE: implicit encoder + decoder trained by SVGD on a Gibbs posterior, and a sampler
    net S_ω(ε) trained by SVGD for generation (Algorithm 1 of the LDC-VAE paper)."""

    config_class = LDCVAEConfig
    has_likelihood = False

    def __init__(self, config: LDCVAEConfig, spec: DataSpec) -> None:
        super().__init__(config, spec)
        c = config
        self.encoder = ImplicitEncoder(
            c.arch, spec.shape, c.latent_dim, c.feature_dim, c.noise_dim, c.arch_options
        )
        self.decoder = build_decoder(c.arch, c.latent_dim, spec.shape, 1, **c.arch_options)
        if c.sampler_net == "encoder":  # the RAE encoder on image-shaped noise (Section 5.1)
            self.sampler_shape: tuple[int, ...] = tuple(spec.shape)
            self.sampler = build_encoder(c.arch, spec.shape, c.latent_dim, **c.arch_options)
        else:  # an MLP on a noise vector, viewed as a (1, 1, N) "image"
            self.sampler_shape = (1, 1, c.sampler_noise_dim)
            self.sampler = build_encoder(
                "mlp", self.sampler_shape, c.latent_dim, hidden=c.sampler_hidden
            )
        self.kernel = build_kernel(c.kernel, **c.kernel_options)
        # σ² of the last encoder step, reused by the sampler step (persisted for exact resume)
        self.register_buffer("last_sigma2", torch.tensor(float("nan")))

    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

    # --- training contract -------------------------------------------------------------
    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        autoencoder = [*self.encoder.parameters(), *self.decoder.parameters()]
        return {"autoencoder": autoencoder, "sampler": list(self.sampler.parameters())}

    def group_options(self, group: str) -> GroupOptions:
        scale = {
            "autoencoder": self.config.autoencoder_lr_scale,
            "sampler": self.config.sampler_lr_scale,
        }[group]
        return GroupOptions(lr_scale=scale)

    def phases(self, epochs: int) -> list[Phase]:
        return [Phase("ldc", (Step("autoencoder", "autoencoder"), Step("sampler", "sampler")))]

    def forward(self, step: str, batch: Batch) -> ModelOutput:
        if step == "autoencoder":
            return self.autoencoder_loss(batch.x)
        if step == "sampler":
            return self.sampler_loss(batch.x)
        raise ValueError(f"unknown LDC-VAE step {step!r}; steps: {', '.join(STEPS)}")

    # --- pieces --------------------------------------------------------------------------
    def encode(
        self, x: Tensor, n: int | None = None, generator: torch.Generator | None = None
    ) -> Tensor:
        """n codes z = E_θ(x, ε), ε ~ N(0, I), per image: (B, C, H, W) → (B, n, D)."""
        n = self.config.n_particles if n is None else n
        noise = torch.randn(
            x.shape[0], n, self.config.noise_dim, generator=generator, device=x.device
        )
        return self.encoder(x, noise)

    def decode(self, z: Tensor) -> Tensor:
        """D_φ(z) for latents (..., D) → images (..., C, H, W) (``output``: identity or sigmoid)."""
        lead = z.shape[:-1]
        out = self.decoder(z.reshape(-1, z.shape[-1]))  # (N, C, H, W)
        if self.config.output == "sigmoid":
            out = torch.sigmoid(out)
        return out.reshape(*lead, *out.shape[1:])

    @torch.no_grad()
    def latent_codes(self, batch: Batch, generator: torch.Generator | None = None) -> Tensor:
        return self.encode(batch.x, 1, generator)[:, 0]  # one particle per image: (B, D)

    @torch.no_grad()
    def generation_codes(
        self, n: int, generator: torch.Generator | None = None, sampler: str | None = None
    ) -> Tensor:
        if sampler in (None, "sampler-net"):
            return self.sampler_latents(n, generator)
        return torch.randn(n, self.latent_dim, generator=generator, device=self.device)

    def sampler_latents(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """z = S_ω(ε_s), ε_s ~ N(0, I): (n, D)."""
        eps = torch.randn(n, *self.sampler_shape, generator=generator, device=self.device)
        return self.sampler(eps)

    def _sigma2(self, sq_err: Tensor) -> Tensor:
        """σ² of Section 5.1: variance of ‖x − D(z)‖ over all particles, detached, floored."""
        if self.config.sigma2 is not None:
            return sq_err.new_tensor(self.config.sigma2)
        norms = sq_err.detach().clamp_min(0).sqrt()
        return norms.var(correction=0).clamp_min(self.config.min_sigma2)

    def _energy(self, sq_err: Tensor) -> Tensor:
        return sq_err / self.spec.dim if self.config.energy == "mean" else sq_err

    def _log_prior(self, z: Tensor) -> Tensor:
        """prior_weight · log N(z; 0, I) up to its constant: (..., D) → (...)."""
        return -0.5 * self.config.prior_weight * z.pow(2).sum(-1)

    def _paired_scores(
        self, z: Tensor, x: Tensor, sigma2: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Scores of p(z|x_b) (Eq. 13) for particles (B, n, D) of images x (B, C, H, W).

        Returns the scores (B, n, D), the squared errors (B, n) with their graph to the decoder
        parameters (z enters as a fresh detached leaf), and σ² (computed here when ``sigma2`` is
        None).
        """
        with torch.enable_grad():
            zd = z.detach().requires_grad_(True)
            x_hat = self.decode(zd)  # (B, n, C, H, W)
            sq_err = (x_hat - x.unsqueeze(1)).pow(2).flatten(2).sum(-1)  # (B, n)
            sigma2 = self._sigma2(sq_err) if sigma2 is None else sigma2
            log_p = -self._energy(sq_err) / sigma2 + self._log_prior(zd)  # (B, n)
            (scores,) = torch.autograd.grad(log_p.sum(), zd, retain_graph=True)
        return scores, sq_err, sigma2

    def autoencoder_loss(self, x: Tensor) -> ModelOutput:
        """Algorithm 1, steps 1–4: SVGD surrogate for θ (Eq. 15, 16) + MSE for φ (Eq. 7).

        The two terms reach disjoint parameters (the surrogate only θ, the MSE only φ), so one
        backward pass gives both updates. The loss *value* is the surrogate's (meaningless, see
        :func:`~latentgap.stein.svgd.svgd_surrogate_loss`) plus the MSE; monitor ``rec_mse``.
        """
        z = self.encode(x)  # (B, n, D)
        scores, sq_err, sigma2 = self._paired_scores(z, x, None)
        phi = svgd_direction(z.detach(), scores, self.kernel, self.config.leave_one_out)
        encoder_loss = svgd_surrogate_loss(z, phi)
        rec = sq_err.mean() / self.spec.dim  # MSE over pixels and particles
        if self.training:
            self.last_sigma2.copy_(sigma2.detach())
        spread = z.detach().var(dim=1, correction=0).mean().sqrt()
        return ModelOutput(
            encoder_loss + rec,
            {
                "rec_mse": rec.detach(),
                "sigma2": sigma2.detach(),
                "phi_norm": phi.norm(dim=-1).mean(),
                "score_norm": scores.norm(dim=-1).mean(),
                "particle_spread": spread,
            },
        )

    def sampler_loss(self, x: Tensor) -> ModelOutput:
        """Algorithm 1, steps 5–7: SVGD surrogate for ω towards the Gibbs target (see module)."""
        sigma2 = self.last_sigma2
        if self.config.sigma2 is not None:
            sigma2 = sigma2.new_tensor(self.config.sigma2)
        elif not torch.isfinite(sigma2):  # no encoder step yet: measure it on this batch
            with torch.no_grad():
                z = self.encode(x)
                err = (self.decode(z) - x.unsqueeze(1)).pow(2).flatten(2).sum(-1)
                sigma2 = self._sigma2(err)
        with _eval_mode(self.decoder):
            if self.config.sampler_target == "paired":
                n = self.config.n_particles
                zs = self.sampler_latents(x.shape[0] * n).reshape(x.shape[0], n, -1)  # (B, n, D)
                scores, _, _ = self._paired_scores(zs, x, sigma2)
            else:
                zs = self.sampler_latents(self.config.sampler_particles).unsqueeze(0)  # (1, M, D)
                scores = self._mixture_scores(zs, x, sigma2)
        phi = svgd_direction(zs.detach(), scores, self.kernel, self.config.leave_one_out)
        return ModelOutput(
            svgd_surrogate_loss(zs, phi),
            {"sampler_phi_norm": phi.norm(dim=-1).mean(), "sampler_sigma2": sigma2.detach()},
        )

    def _mixture_scores(self, zs: Tensor, x: Tensor, sigma2: Tensor) -> Tensor:
        """∇ log p̂(z) for p̂(z) = (1/B) Σ_b exp(−E_b(z)/σ²) / C_b, E_b(z) = ‖x_b − D(z)‖²
        (Eq. 13 mixed over the batch as in Section 4.1): (1, M, D) → (1, M, D).

        The normalisers C_b = ∫ exp(−E_b/σ²) dz do not cancel in a mixture: with equal C_b
        (``mixture_normalizer="none"``) the images that reconstruct best own the highest modes
        and the sampler collapses onto them. ``"encoder"`` estimates log C_b ≈ −E_b(ẑ_b)/σ² +
        const at one encoder draw ẑ_b (a Laplace-type estimate assuming equal posterior volumes).
        ``"sinkhorn"`` treats the log C_b as unknowns fixed by balance: at the target q = p̂ each
        component carries mass 1/B, E_q[w_b(z)] = 1/B, so the responsibilities w (M, B) are
        scaled (Sinkhorn) to rows summing to 1 and columns to M/B; the score is then
        Σ_b w_mb ∇ log p(z_m|x_b).
        """
        flat_x = x.flatten(1)  # (B, P)
        offset = torch.zeros(len(x), device=x.device)  # (B,) log C_b up to a constant
        if self.config.mixture_normalizer == "encoder":
            with torch.no_grad():
                ref = self.decode(self.encode(x, 1)[:, 0]).flatten(1)  # (B, P)
                offset = -self._energy((ref - flat_x).pow(2).sum(-1)) / sigma2
        with torch.enable_grad():
            zd = zs.detach().requires_grad_(True)
            x_hat = self.decode(zd[0]).flatten(1)  # (M, P)
            sq_err = (
                x_hat.pow(2).sum(-1, keepdim=True) + flat_x.pow(2).sum(-1) - 2.0 * x_hat @ flat_x.T
            ).clamp_min(0)  # (M, B)
            log_terms = -self._energy(sq_err) / sigma2 - offset  # (M, B)
            if self.config.mixture_normalizer == "sinkhorn":
                weights = sinkhorn_responsibilities(log_terms.detach(), self.config.sinkhorn_iters)
                objective = (weights * log_terms).sum()  # ∇ = Σ_b w_mb ∇ log p(z_m|x_b)
            else:
                objective = torch.logsumexp(log_terms, dim=-1).sum()  # ∇ log p̂, softmax weights
            objective = objective + self._log_prior(zd[0]).sum()
            (scores,) = torch.autograd.grad(objective, zd)
        return scores

    # --- generation ----------------------------------------------------------------------
    def samplers(self) -> tuple[str, ...]:
        """``sampler-net``: D(S_ω(ε)); ``standard-normal``: D(z), z ~ N(0, I), the VAE-style
        baseline of Section 5.2 (the model never fits N(0, I) unless prior_weight > 0)."""
        return ("sampler-net", "standard-normal")

    @torch.no_grad()
    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        sampler: str = "sampler-net",
        **options: Any,
    ) -> Tensor:
        if sampler == "sampler-net":
            z = self.sampler_latents(n, generator)
        elif sampler == "standard-normal":
            z = torch.randn(n, self.latent_dim, generator=generator, device=self.device)
        else:
            raise ConfigError(
                f"unknown sampler {sampler!r} for ldc-vae; choose one of: "
                + ", ".join(self.samplers())
            )
        return self.decode(z).clamp(0, 1)

    @torch.no_grad()
    def reconstruct(self, batch: Batch) -> Tensor:
        """D(z) for one encoder draw z = E_θ(x, ε) per image (a posterior sample, not a mean:
        q(z|x) may be multimodal and its mean off the data manifold)."""
        return self.decode(self.encode(batch.x, 1)[:, 0]).clamp(0, 1)


# --- presets --------------------------------------------------------------------------------
PRESETS.add(
    "ldc-vae-mnist",
    Preset(
        "LDC-VAE with the RAE conv nets (width 128), z = 16, batch 100, Adam, continuous MNIST "
        "(Section 5.1); GPU-sized",
        {
            "model": "ldc-vae",
            "model_options": {
                "arch": "rae",
                "latent_dim": 16,
                "n_particles": 8,
                "kernel": "rbf-paper",
                "sampler_net": "encoder",
            },
            "data": {"name": "mnist", "options": {"binarize": False}},
            # epochs and learning rate are not stated in the paper; RAE-like values
            "train": {"epochs": 100, "batch_size": 100, "lr": 1e-3},
        },
    ),
)
PRESETS.add(
    "ldc-vae-mnist-small",
    Preset(
        "LDC-VAE with MLP nets 784-512-512, z = 16, 8 particles, MLP sampler, continuous MNIST; "
        "under a minute an epoch on 2 CPU cores",
        {
            "model": "ldc-vae",
            "model_options": {
                "arch": "mlp",
                "arch_options": {"hidden": [512, 512]},
                "latent_dim": 16,
                "feature_dim": 512,
                "n_particles": 8,
                "kernel": "rbf-paper",
                "sampler_net": "mlp",
                "sampler_hidden": [512, 512],
            },
            "data": {"name": "mnist", "options": {"binarize": False}},
            "train": {"epochs": 10, "batch_size": 100, "lr": 1e-3},
        },
    ),
)
