"""VAEPP: a VAE with a Pull-back Prior (the VAEPP paper), trained by Algorithm 1 or 2.

The prior (Eq. 4) is p_λ(z) = N(z; 0, I)·exp(−β·D(G(z))) / Z with G(z) the decoder mean, D a
WGAN-style critic on data space (smaller D = more like real data) and β = w·sigmoid(ξ).

Training objective (both algorithms; Algorithm 1 lines 4–7, Algorithm 2 lines 3–8):

    L = E[log p(x|z) + log f_λ(z) − log q(z|e)] − log Ẑ,

with Ẑ the mixture of a p_N-proposal estimate from fresh ε ~ N(0, I) and a q-proposal estimate
f_λ(z)/q̂(z), q̂(z) = q(z|e)/N, from the batch (Algorithm 2 line 5). For Bernoulli data the encoder
sees the gray image e and the reconstruction term is the expected Bernoulli log-likelihood of e
(Eq. 7; REFERENCE.md). Implementation details of the authors' code (REFERENCE.md): log Ẑ is
floored at −20, the KL part of the loss is clamped at ≥ 0, the penalty is scaled by the bound w
(``penalty_scale="bound"``; the paper's β-scaled form is ``penalty_scale="beta"``).

- ``vaepp`` (Algorithm 2): one loss, one Adam step over θ, φ, ξ and the critic ω, whose only
  training signal besides the penalty is L itself (Eq. 9: maximising L over D approximates
  β·W¹(p†, p*)). The penalty is taken at points between real e and G(ε).
- ``vaepp-naive`` (Algorithm 1): ``n_critic`` VAE steps on (θ, φ, ξ), then a critic step on ω
  minimising E D(e) − E D(G(ε)) + penalty (REFERENCE.md's sign convention), Adam(β₁ = 0.5).

After the VAE phase, a latent GAN learns q_φ(z) (5 critic steps per generator step), and sampling
runs MALA on E(z) = ½‖z‖² + β D(G(z)) from the GAN's z₀ (Section 4.3).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor

from latentgap.data.base import Batch, DataSpec, ImageSet
from latentgap.distributed import DistContext
from latentgap.errors import ConfigError
from latentgap.flows import Flow, FlowPosterior
from latentgap.models.base import MODELS, GroupOptions, ModelOutput, Phase, Step
from latentgap.models.vae import LatentVAEBase, VAEConfig
from latentgap.nets import build_critic
from latentgap.penalties import PENALTIES, build_penalty
from latentgap.presets import PRESETS, Preset
from latentgap.priors import PullbackPrior
from latentgap.priors.ais import AISResult, ais_log_z
from latentgap.priors.partition import (
    LogZEstimate,
    log_z_normal_proposal,
    log_z_posterior_proposal,
    log_z_training_mixture,
)
from latentgap.samplers.latent_gan import LatentGAN
from latentgap.samplers.mala import mala
from latentgap.samplers.persistent import PersistentChains

SAMPLERS = ("gan+mala", "gan", "mala", "prior")
LOGZ_METHODS = ("ais", "paper")


@dataclass
class VAEPPConfig(VAEConfig):
    """Options of :class:`VAEPP` (on top of the VAE's)."""

    condition_on: Literal["x", "e", "auto"] = "auto"  # auto: e for binary data (Eq. 7), else x
    critic_arch: str | None = None  # None: the same family as the encoder/decoder
    critic_options: dict[str, Any] = field(default_factory=dict)
    beta_bound: float = 10.0  # w: β = w·sigmoid(ξ) ∈ (0, w)
    # β at the start of training; None: w/2 (ξ = 0, the authors' code). A bound of hundreds
    # (w = 1000) wants a small start instead: the paper trains β "from small to large" (Sec. 3.4)
    beta_init: float | None = None
    penalty: str = "wgan-div-1"
    penalty_scale: Literal["bound", "beta"] = "bound"
    logz_normal_samples: int = 128  # fresh ε per step for the p_N-proposal term
    logz_floor: float = -20.0
    clamp_kl: bool = True
    # the gradient of log Z in training: "persistent" (E_{p_λ}[∇ log f_λ] with persistent MALA
    # chains of p_λ, samplers/persistent.py) or "paper" (autograd through Algorithm 2's log Ẑ)
    train_logz: Literal["persistent", "paper"] = "persistent"
    pcd_chains: int = 128
    pcd_steps: int = 5  # MALA steps of the persistent chains per training step
    pcd_step_size: float = 1e-2  # initial α, adapted toward acceptance 0.574
    pcd_reinit: float = 0.0  # fraction of chains restarted from N(0, I) per step
    epoch_ais_chains: int = 64  # a cheap AIS log Z logged every epoch (0: off)
    epoch_ais_temps: int = 200
    # one decoder / critic call on [z; ε] instead of two: None = on GPUs and for conv-free nets
    # (on CPU the batch-256 ResNet passes measured 15–20% slower than two batch-128 ones)
    merge_passes: bool | None = None
    n_critic: int = 1  # Algorithm 1: VAE steps per critic step
    critic_betas: tuple[float, float] = (0.5, 0.999)
    gan_epochs: int | None = None  # latent-GAN phase length; None: half of the run
    gan_lr: float = 1e-4
    gan_critic_steps: int = 5
    gan_data: Literal["mean", "sample"] = "mean"
    gan_hidden: int = 40
    mala_steps: int = 2000
    mala_step_size: float = 1e-5
    eval_logz_samples: int = 10  # q-proposal samples per training image for Eq. (8) at evaluation
    eval_logz_passes: int = 1
    # the log Z behind the evaluation NLL: "ais" (annealed importance sampling, priors/ais.py;
    # Eq. (8) is reported beside it) or "paper" (Eq. (8) alone, the paper's protocol)
    eval_logz: Literal["ais", "paper"] = "ais"
    ais_chains: int = 1024
    ais_temps: int = 1000
    ais_leapfrog: int = 5
    flow_layers: int = 0  # > 0: VAEPP + Flow, affine couplings after the Gaussian encoder
    flow_hidden: int = 64

    _conditions = ("x", "e", "auto")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.beta_bound <= 0:
            raise ConfigError(f"beta_bound must be positive, got {self.beta_bound}")
        if self.beta_init is not None and not 0 < self.beta_init < self.beta_bound:
            raise ConfigError(
                f"beta_init must lie in (0, beta_bound = {self.beta_bound:g}), got {self.beta_init}"
            )
        if self.penalty not in PENALTIES:
            PENALTIES.get(self.penalty)
        if self.penalty_scale not in ("bound", "beta"):
            raise ConfigError("penalty_scale must be 'bound' or 'beta'")
        for name in (
            "logz_normal_samples",
            "n_critic",
            "gan_critic_steps",
            "mala_steps",
            "eval_logz_samples",
            "eval_logz_passes",
            "gan_hidden",
            "ais_chains",
            "ais_temps",
            "ais_leapfrog",
            "pcd_chains",
            "pcd_steps",
            "epoch_ais_temps",
        ):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if not self.mala_step_size > 0:
            raise ConfigError("mala_step_size must be positive")
        if self.gan_data not in ("mean", "sample"):
            raise ConfigError("gan_data must be 'mean' or 'sample'")
        if self.train_logz not in ("persistent", "paper"):
            raise ConfigError(
                f"train_logz must be 'persistent' or 'paper', got {self.train_logz!r}"
            )
        if not self.pcd_step_size > 0 or not 0.0 <= self.pcd_reinit < 1.0:
            raise ConfigError("pcd_step_size must be > 0 and pcd_reinit in [0, 1)")
        if self.epoch_ais_chains < 0:
            raise ConfigError(f"epoch_ais_chains must be ≥ 0, got {self.epoch_ais_chains}")
        if self.eval_logz not in LOGZ_METHODS:
            raise ConfigError(
                f"eval_logz must be one of {', '.join(LOGZ_METHODS)}, got {self.eval_logz!r}"
            )


class VAEPP(LatentVAEBase):
    """VAE with a Pull-back Prior; Algorithm 2 (``combined=True``) or Algorithm 1."""

    config_class = VAEPPConfig
    combined = True

    def __init__(self, config: VAEPPConfig, spec: DataSpec) -> None:
        if config.condition_on == "auto":
            config = dataclasses.replace(config, condition_on="e" if spec.kind == "binary" else "x")
        super().__init__(config, spec)
        self.critic = build_critic(
            config.critic_arch or config.arch, spec.shape, **config.critic_options
        )
        beta0 = config.beta_bound / 2 if config.beta_init is None else config.beta_init
        self.pullback = PullbackPrior(
            config.latent_dim,
            beta_bound=config.beta_bound,
            init_logit=math.log(beta0 / (config.beta_bound - beta0)),  # ξ = logit(β₀ / w)
        )
        self.penalty = build_penalty(config.penalty)
        self.latent_gan = LatentGAN(
            config.latent_dim,
            generator_hidden=(config.gan_hidden,) * 5,
            critic_hidden=(config.gan_hidden,) * 6,
            penalty=config.penalty,
        )
        self.flow = (
            Flow(config.latent_dim, n_layers=config.flow_layers, hidden=config.flow_hidden)
            if config.flow_layers > 0
            else None
        )
        self.register_buffer("n_train", torch.tensor(1.0))
        self.register_buffer("log_z", torch.tensor(float("nan")))
        self.register_buffer("log_z_std_err", torch.tensor(float("nan")))
        self.register_buffer("gan_trained", torch.tensor(False))
        # persistent chains of p_λ (train_logz="persistent") and the latest per-epoch AIS log Z,
        # the value (not the gradient) of log Z in the training loss
        self.chains = PersistentChains(
            config.pcd_chains, config.latent_dim, config.pcd_step_size, config.pcd_reinit
        )
        self.register_buffer("train_log_z", torch.tensor(0.0))
        self._register_load_state_dict_pre_hook(self._fill_new_buffers)
        # One decoder and one critic call on [z; ε] instead of two each: fewer, larger kernels
        # (launch overhead dominates small nets on GPUs). Never when a layer mixes examples.
        nets = (*self.decoder.modules(), *self.critic.modules())
        self.can_merge = not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in nets)
        self.has_conv = any(isinstance(m, torch.nn.modules.conv._ConvNd) for m in nets)

    def _fill_new_buffers(self, state_dict, prefix, *args) -> None:
        """Checkpoints written before the persistent chains existed load with fresh chains."""
        for name, value in (
            *self.chains.named_buffers(prefix="chains"),
            ("train_log_z", self.train_log_z),
        ):
            state_dict.setdefault(prefix + name, value.detach().clone())

    def merge_passes(self, device: torch.device) -> bool:
        """Whether this step decodes and criticises [z; ε] in one call each (``merge_passes``)."""
        if not self.can_merge:
            return False
        if self.config.merge_passes is not None:
            return self.config.merge_passes
        return device.type == "cuda" or not self.has_conv

    def posterior(self, inputs: Tensor, name: str | None = None):
        """q(z|·): the encoder's Gaussian, followed by the flow for VAEPP + Flow (exact density)."""
        base = super().posterior(inputs, name)
        return base if self.flow is None else FlowPosterior(base, self.flow)

    def posterior_mean(self, inputs: Tensor) -> Tensor:
        """A representative code: the Gaussian mean, pushed through the flow if there is one."""
        base = super().posterior(inputs)
        return base.mean if self.flow is None else self.flow(base.mean)[0]

    @torch.no_grad()
    def reconstruct(self, batch: Batch) -> Tensor:
        z = self.posterior_mean(self.encoder_input(batch))
        return self.likelihood.mean(self.decode(z)).clamp(0, 1)

    # --- schedule ----------------------------------------------------------------------
    def parameter_groups(self) -> dict[str, list[torch.nn.Parameter]]:
        gan = set(self.latent_gan.parameters())
        critic = set(self.critic.parameters())
        vae = [p for p in self.parameters() if p not in gan and p not in critic]
        groups = {
            "gan_critic": list(self.latent_gan.critic_parameters()),
            "gan_generator": list(self.latent_gan.generator_parameters()),
        }
        if self.combined:
            groups["vae"] = vae + list(self.critic.parameters())
        else:
            groups["vae"] = vae
            groups["critic"] = list(self.critic.parameters())
        return groups

    def group_options(self, group: str) -> GroupOptions:
        c = self.config
        if group.startswith("gan_"):
            return GroupOptions(betas=(0.5, 0.999), lr=c.gan_lr, weight_decay=0.0)
        if group == "critic":
            return GroupOptions(betas=tuple(c.critic_betas))
        return GroupOptions()

    def phases(self, epochs: int) -> list[Phase]:
        c = self.config
        gan_epochs = c.gan_epochs if c.gan_epochs is not None else epochs // 2
        vae_epochs = max(epochs - gan_epochs, 1)  # the VAE phase always runs first
        gan_steps = (
            Step("gan_critic", "gan_critic", c.gan_critic_steps),
            Step("gan_generator", "gan_generator"),
        )
        if self.combined:
            vae_steps: tuple[Step, ...] = (Step("vaepp", "vae"),)
        else:
            vae_steps = (Step("vaepp", "vae", c.n_critic), Step("critic", "critic"))
        return [Phase("vae", vae_steps, vae_epochs), Phase("latent-gan", gan_steps, None)]

    def prepare_training(self, train: ImageSet) -> None:
        self.n_train.fill_(float(len(train)))

    def end_phase(self, phase: str, train: ImageSet) -> None:
        if phase == "latent-gan":
            self.gan_trained.fill_(True)

    def end_epoch(self, phase: str, train: ImageSet) -> dict[str, float]:
        """A cheap AIS log Z of the current prior (``epoch_ais_chains`` × ``epoch_ais_temps``),
        logged beside the training-time estimates so a run shows when they part; in
        ``train_logz="persistent"`` mode it is also the value of log Z in the next epoch's loss."""
        c = self.config
        if not c.epoch_ais_chains or phase != "vae":
            return {}
        was_training = self.training
        self.eval()
        try:
            ais = self.estimate_log_z_ais(
                c.epoch_ais_chains, c.epoch_ais_temps, 2, reverse=False, coarse_fraction=None
            )
        finally:
            self.train(was_training)
        self.train_log_z.fill_(ais.log_z)
        return {"log_z_ais": ais.log_z, "log_z_ais_std_err": ais.std_err}

    # --- the pull-back prior -----------------------------------------------------------------
    @property
    def beta(self) -> Tensor:
        return self.pullback.beta

    def generate(self, z: Tensor) -> Tensor:
        """G(z): the decoder mean, (..., D) → (..., C, H, W)."""
        return self.likelihood.mean(self.decode(z))

    def critic_values(self, images: Tensor) -> Tensor:
        """D on images of any leading shape: (..., C, H, W) → (...)."""
        lead = images.shape[:-3]
        return self.critic(images.reshape(-1, *images.shape[-3:])).reshape(lead)

    def energy(self, z: Tensor) -> Tensor:
        """E(z) = ½‖z‖² + β·D(G(z)) (−log f_λ up to a constant), (n, D) → (n,)."""
        return self.pullback.energy(z, self.critic_values(self.generate(z)))

    def log_prior(self, z: Tensor) -> Tensor:
        """log p_λ(z) = log f_λ(z) − log Ẑ with the evaluation log Ẑ (set by prepare_evaluation)."""
        if torch.isnan(self.log_z):
            raise ConfigError("log Ẑ has not been estimated: call prepare_evaluation first")
        return self.pullback.log_unnormalized(z, self.critic_values(self.generate(z))) - self.log_z

    # --- losses ----------------------------------------------------------------------------
    def forward(self, step: str, batch: Batch) -> ModelOutput:
        if step == "vaepp":
            return self._vaepp_loss(batch)
        if step == "critic":
            return self._critic_loss(batch)
        if step == "gan_critic":
            loss, terms = self.latent_gan.critic_loss(self._gan_real(batch))
            return ModelOutput(loss, {f"gan_{k}": v for k, v in terms.items()})
        if step == "gan_generator":
            loss, terms = self.latent_gan.generator_loss(len(batch))
            return ModelOutput(loss, {f"gan_{k}": v for k, v in terms.items()})
        raise ValueError(f"unknown step {step!r}")

    def _vaepp_loss(self, batch: Batch) -> ModelOutput:
        c = self.config
        q = self.posterior(self.encoder_input(batch))
        if self.flow is None:
            z = q.rsample()  # (B, D)
            log_q = q.log_prob(z)  # (B,)
        else:
            z, log_q = q.rsample_and_log_prob()
        eps = torch.randn(c.logz_normal_samples, c.latent_dim, device=z.device)  # (S, D)
        b = z.shape[0]
        if self.merge_passes(z.device):
            params_all = self.decode(torch.cat([z, eps.to(z.dtype)]))  # (B + S, k·C, H, W)
            params = params_all[:b]
            images = self.likelihood.mean(params_all)  # (B + S, C, H, W)
            d_all = self.critic_values(images)  # (B + S,)
            fake, d_z, d_eps = images[b:], d_all[:b], d_all[b:]
        else:
            params = self.decode(z)
            d_z = self.critic_values(self.likelihood.mean(params))  # (B,)
            fake = self.generate(eps)  # (S, C, H, W)
            d_eps = self.critic_values(fake)  # (S,)
        rec = self.likelihood.log_prob(params, self.reconstruction_target(batch))  # (B,)
        log_f = self.pullback.log_unnormalized(z, d_z)  # (B,)
        log_w_normal = self.pullback.log_weight(d_eps)  # (S,) −β·D(G(ε)), float32
        log_w_q = log_f - log_q + torch.log(self.n_train)  # (B,)
        log_z_mix = log_z_training_mixture(log_w_normal, log_w_q, floor=c.logz_floor)
        terms: dict[str, Tensor] = {}
        if c.train_logz == "persistent":
            # ∇ log Z = E_{p_λ}[∇ log f_λ] = −E_{p_λ}[∇ β·D(G(z))] with z from the persistent
            # chains (moved only in training); the value is the latest per-epoch AIS log Z
            z_p = self.chains.update(self.energy, c.pcd_steps) if self.training else self.chains.z
            d_p = self.critic_values(self.generate(z_p))  # (P,)
            surrogate = self.pullback.log_weight(d_p).mean()
            log_z = surrogate - surrogate.detach() + self.train_log_z
            kl = (log_q - log_f).mean() + log_z
            kl_loss = kl  # no clamp: the value of log Z is a lagging estimate
            terms["d_chains"] = d_p.mean()
            terms["chain_step"] = self.chains.log_step.exp()
            terms["chain_accept"] = self.chains.acceptance
        else:
            log_z = log_z_mix
            kl = (log_q - log_f).mean() + log_z  # KL(q ‖ p_λ) with Ẑ
            kl_loss = kl.clamp_min(0.0) if c.clamp_kl else kl
        loss = -rec.mean() + kl_loss
        terms.update(
            {
                "elbo": rec.mean() - kl,
                "rec": rec.mean(),
                "kl": kl,
                "log_z": log_z,
                "log_z_mix": log_z_mix.detach(),
                "beta": self.beta,
                "d_q": d_z.mean(),
                "d_prior": d_eps.mean(),
            }
        )
        if self.combined:
            n = min(len(batch), len(fake))  # real e (= x unless binarised) against G(ε)
            penalty = self.penalty(self.critic, batch.e[:n], fake[:n])
            scale = c.beta_bound if c.penalty_scale == "bound" else self.beta
            loss = loss + scale * penalty
            terms["penalty"] = penalty
        terms["bpd"] = -terms["elbo"] / (self.spec.dim * math.log(2))
        return ModelOutput(loss, terms)

    def _critic_loss(self, batch: Batch) -> ModelOutput:
        """Algorithm 1 lines 10–15: minimise E D(real) − E D(G(ε)) + penalty over ω only."""
        c = self.config
        real = batch.e  # the gray image (= x unless dynamically binarised)
        with torch.no_grad():
            fake = self.generate(torch.randn(len(real), c.latent_dim, device=real.device))
        if self.merge_passes(real.device):
            d_real, d_fake = self.critic_values(torch.cat([real, fake.to(real.dtype)])).chunk(2)
        else:
            d_real, d_fake = self.critic_values(real), self.critic_values(fake)
        wasserstein = d_real.mean() - d_fake.mean()
        penalty = self.penalty(self.critic, real, fake)
        return ModelOutput(
            wasserstein + penalty, {"critic_gap": -wasserstein.detach(), "critic_penalty": penalty}
        )

    @torch.no_grad()
    def _gan_real(self, batch: Batch) -> Tensor:
        if self.config.gan_data == "mean":
            return self.posterior_mean(self.encoder_input(batch))
        return self.posterior(self.encoder_input(batch)).sample()

    # --- sampling ----------------------------------------------------------------------------
    def samplers(self) -> tuple[str, ...]:
        return SAMPLERS

    def sample_latents(
        self,
        n: int,
        generator: torch.Generator | None = None,
        sampler: str | None = None,
        mala_steps: int | None = None,
        mala_step_size: float | None = None,
        progress: bool = False,
        **options,
    ) -> Tensor:
        """z from the chosen sampler; ``None``: the latent GAN once trained, else MALA from N(0, I)
        (``prior`` decodes N(0, I) itself, the base measure, not p_λ)."""
        if sampler is None:
            sampler = "gan" if bool(self.gan_trained) else "mala"
        if sampler not in SAMPLERS:
            raise ConfigError(f"unknown sampler {sampler!r}; choose one of: {', '.join(SAMPLERS)}")
        if sampler.startswith("gan"):
            if not bool(self.gan_trained):
                raise ConfigError(
                    f"sampler {sampler!r} needs the latent GAN, which this run never trained (its "
                    "latent-GAN phase is empty or unfinished: model_options.gan_epochs and "
                    "--epochs); use --sampler mala, or train longer"
                )
            z = self.latent_gan.sample(n, generator=generator)
        else:
            z = self.prior.sample(n, generator=generator, device=self.device)
        if sampler in ("gan+mala", "mala"):
            result = mala(
                self.energy,
                z,
                n_steps=self.config.mala_steps if mala_steps is None else mala_steps,
                step_size=mala_step_size or self.config.mala_step_size,
                generator=generator,
                progress=progress,
                # from N(0, I) the chains must travel: the step size adapts (first half)
                adapt_step_size=sampler == "mala",
            )
            self.last_acceptance_rate = float(result.acceptance_rate)
            z = result.samples
        return z

    # --- evaluation --------------------------------------------------------------------------
    def estimate_log_z(
        self,
        train: ImageSet,
        samples_per_image: int | None = None,
        passes: int | None = None,
        truncated: bool = True,
        batch_size: int | None = None,
        seed: int = 0,
        progress: bool = False,
        ctx: DistContext | None = None,
    ) -> LogZEstimate:
        """log Ẑ by Eq. (8) with q(z|e) truncated at ±2σ, swept over the training set (sharded
        over the ranks of ``ctx`` when given). Blocks of :attr:`eval_rows` codes per call:
        500 images at a time for MLPs and on GPUs, 32 images × 4 samples for conv nets on a CPU."""
        c = self.config
        rows = self.eval_rows
        small = rows < 4096
        batch_size = batch_size or (max(1, rows // 4) if small else 500)
        max_rows = max(rows, batch_size) if small else 65536
        ctx = ctx or DistContext()
        gen = torch.Generator(device=self.device).manual_seed(ctx.rank_seed(seed))
        with torch.no_grad():
            return log_z_posterior_proposal(
                log_f_fn=lambda z: self.pullback.log_unnormalized(
                    z, self.critic_values(self.generate(z))
                ),
                posterior_fn=lambda b: self.posterior(self.encoder_input(b)),
                data=train,
                n_train=int(self.n_train.item()),
                samples_per_image=samples_per_image or c.eval_logz_samples,
                passes=passes or c.eval_logz_passes,
                batch_size=batch_size,
                truncated=truncated,
                max_rows=max_rows,
                generator=gen,
                device=self.device,
                progress=progress and ctx.is_main,
                ctx=ctx,
            )

    def estimate_log_z_normal(
        self,
        n_samples: int,
        batch_size: int = 1000,
        seed: int = 0,
        ctx: DistContext | None = None,
    ) -> LogZEstimate:
        """The p_N-proposal estimate of log Z (a diagnostic at evaluation)."""
        ctx = ctx or DistContext()
        gen = torch.Generator(device=self.device).manual_seed(ctx.rank_seed(seed))
        with torch.no_grad():
            return log_z_normal_proposal(
                self.log_weight,
                self.config.latent_dim,
                n_samples,
                batch_size,
                generator=gen,
                device=self.device,
                ctx=ctx,
            )

    def log_weight(self, z: Tensor) -> Tensor:
        """log f_λ(z) − log N(z; 0, I) = −β·D(G(z)), (n, D) → (n,), differentiable in z."""
        return self.pullback.log_weight(self.critic_values(self.generate(z)))

    def estimate_log_z_ais(
        self,
        n_chains: int | None = None,
        n_temps: int | None = None,
        n_leapfrog: int | None = None,
        seed: int = 0,
        ctx: DistContext | None = None,
        progress: bool = False,
        **options: Any,
    ) -> AISResult:
        """log Z of the pull-back prior by annealed importance sampling from N(0, I), with the
        reverse run and a coarser schedule (:func:`latentgap.priors.ais.ais_log_z`)."""
        c = self.config
        return ais_log_z(
            self.log_weight,
            c.latent_dim,
            n_chains=n_chains or c.ais_chains,
            n_temps=n_temps or c.ais_temps,
            n_leapfrog=n_leapfrog or c.ais_leapfrog,
            seed=seed,
            device=self.device,
            ctx=ctx,
            progress=progress,
            **options,
        )

    def prepare_evaluation(
        self,
        train: ImageSet,
        repeat: int = 0,
        normal_samples: int = 0,
        ctx: DistContext | None = None,
        method: str | None = None,
        ais_chains: int | None = None,
        ais_temps: int | None = None,
        ais_leapfrog: int | None = None,
        **options,
    ) -> dict[str, float]:
        """Estimate log Z before each NLL repeat and keep it fixed for that repeat.

        ``method`` (default ``eval_logz``): ``"ais"`` sets log Ẑ to the forward AIS estimate and
        also reports its reverse estimate (``log_z_reverse``; the pair brackets log Z when the
        chains have converged, ``log_z_gap`` = reverse − forward), a coarser schedule's estimate
        (``log_z_coarse``) and the paper's Eq. (8) estimate beside it (``log_z_paper``,
        ``log_z_paper_minus_ais``). ``"paper"`` uses Eq. (8) alone: with q(z|e) truncated at ±2σ
        it is an upper bound only if the posteriors' boxes cover p_λ's mass, which training does
        not ensure (measured 4–22 nats *below* the AIS value on MLP runs; docs/results.md).
        ``normal_samples`` > 0 adds the p_N-proposal estimate (unbiased for Z, but with an ESS of
        a few samples on trained priors: a diagnostic, not an estimate to use).
        """
        method = method or self.config.eval_logz
        if method not in LOGZ_METHODS:
            raise ConfigError(
                f"unknown log Z method {method!r}; choose one of: {', '.join(LOGZ_METHODS)}"
            )
        progress = bool(options.get("progress"))
        paper = self.estimate_log_z(train, seed=1000 + repeat, ctx=ctx, **options)
        out: dict[str, Any] = {
            "log_z_method": method,
            "log_z_paper": paper.log_z,
            "log_z_paper_std_err": paper.std_err,
            "beta": float(self.beta.detach()),
        }
        if method == "ais":
            ais = self.estimate_log_z_ais(
                ais_chains, ais_temps, ais_leapfrog, seed=3000 + repeat, ctx=ctx, progress=progress
            )
            log_z, std_err = ais.log_z, ais.std_err
            out.update(
                {
                    "log_z_ais": ais.log_z,
                    "log_z_ais_std_err": ais.std_err,
                    "log_z_ais_ess": ais.ess,
                    "log_z_reverse": ais.log_z_reverse,
                    "log_z_gap": ais.gap,
                    "log_z_coarse": ais.log_z_coarse,
                    "ais_chains": ais.n_chains,
                    "ais_temps": ais.n_temps,
                    "ais_leapfrog": ais.n_leapfrog,
                    "ais_acceptance": ais.acceptance,
                    "ais_agree": ais.agree,
                    "ais_seconds": ais.seconds,
                    "log_z_paper_minus_ais": paper.log_z - ais.log_z,
                }
            )
        else:
            log_z, std_err = paper.log_z, paper.std_err
        self.log_z.fill_(log_z)
        self.log_z_std_err.fill_(std_err)
        out["log_z"], out["log_z_std_err"] = log_z, std_err
        if normal_samples:
            normal = self.estimate_log_z_normal(normal_samples, seed=2000 + repeat, ctx=ctx)
            out.update(
                {
                    "log_z_normal": normal.log_z,
                    "log_z_normal_std_err": normal.std_err,
                    "log_z_normal_ess": normal.ess,
                }
            )
        return out


@MODELS.register("vaepp")
class VAEPPCombined(VAEPP):
    """VAEPP trained by Algorithm 2: one objective and one optimiser step for VAE and critic."""

    combined = True


@MODELS.register("vaepp-naive")
class VAEPPNaive(VAEPP):
    """Naive VAEPP trained by Algorithm 1: alternating VAE and critic steps."""

    combined = False


# --- presets: the paper's experiments (REFERENCE.md) and small CPU versions -------------------
def _paper(data: dict, model: dict, epochs: int, gan_epochs: int, batch: int = 128) -> dict:
    return {
        "model": "vaepp",
        "model_options": {"arch": "resnet", "gan_epochs": gan_epochs, **model},
        "data": data,
        "train": {
            "epochs": epochs,
            "batch_size": batch,
            "lr": 1e-4,
            "lr_halve_every": 200,
            "weight_decay": 2e-4,
        },
    }


_PAPER_PRESETS = {
    "mnist": (
        "NLL on dynamically binarised MNIST (Table 1): ResNet, z = 13, w = 10",
        _paper(
            {"name": "mnist"},
            {"latent_dim": 13, "beta_bound": 10.0, "mala_step_size": 1e-5},
            2000,
            1000,
        ),
    ),
    "static-mnist": (
        "NLL on static MNIST (Table 2): z = 12, w = 10",
        _paper({"name": "static-mnist"}, {"latent_dim": 12, "beta_bound": 10.0}, 2000, 1000),
    ),
    "fashion-mnist": (
        "NLL on binarised Fashion-MNIST (Table 2): z = 40, w = 20",
        _paper(
            {"name": "fashion-mnist"},
            {"latent_dim": 40, "beta_bound": 20.0, "mala_step_size": 5e-6},
            2000,
            1000,
        ),
    ),
    "omniglot": (
        "NLL on Omniglot (Table 2): z = 24, w = 10",
        _paper({"name": "omniglot"}, {"latent_dim": 24, "beta_bound": 10.0}, 2000, 1000),
    ),
    "cifar10": (
        "bits/dim on CIFAR-10 (Tables 1, 3): z = 1024, w = 1000, discretised logistic",
        _paper(
            {"name": "cifar10"},
            {
                "latent_dim": 1024,
                "beta_bound": 1000.0,
                "mala_step_size": 5e-5,
                "gan_data": "sample",
            },
            1600,
            800,
        ),
    ),
}
for _name in ("mnist", "fashion-mnist", "cifar10", "celeba"):
    _data = (
        {"name": _name}
        if _name in ("cifar10", "celeba")
        else {"name": _name, "options": {"binarize": False}}
    )
    _PAPER_PRESETS[f"fid-{_name}"] = (
        f"FID configuration on {_name} (Table 4): z = 128, Gaussian p(x|z) with learnable γ, w = 1000",
        _paper(
            _data,
            {
                "latent_dim": 128,
                "beta_bound": 1000.0,
                "likelihood": "gaussian",
                "mala_step_size": 5e-5,
                "gan_data": "sample",
            },
            2000,
            1600,
        ),
    )

_SMALL = {
    "model": "vaepp",
    "model_options": {
        "arch": "mlp",
        "latent_dim": 13,
        "beta_bound": 10.0,
        "gan_epochs": 2,
        "arch_options": {"hidden": [256, 256]},
        "critic_options": {"hidden": [256, 256]},
        "mala_steps": 300,
        "mala_step_size": 1e-3,
        "eval_logz_samples": 4,
        # 2 GAN epochs are ~160 generator steps: at the paper's 1e-4 the GAN barely moves
        "gan_lr": 1e-3,
        # AIS for evaluation: 1000 temperatures × 3 leapfrog steps converge to ~0.1 nats here
        "ais_chains": 512,
        "ais_temps": 1000,
        "ais_leapfrog": 3,
    },
    "data": {"name": "mnist"},
    "train": {"epochs": 12, "batch_size": 128, "lr": 1e-3},
}

for _name, (_description, _values) in _PAPER_PRESETS.items():
    PRESETS.add(f"vaepp-{_name}", Preset(f"VAEPP (Algorithm 2), {_description}", _values))
    PRESETS.add(
        f"vaepp-naive-{_name}",
        Preset(f"Naive VAEPP (Algorithm 1), {_description}", _values | {"model": "vaepp-naive"}),
    )
for _name in ("mnist", "static-mnist", "fashion-mnist", "omniglot", "cifar10"):
    _description, _values = _PAPER_PRESETS[_name]
    _flow = _values | {"model_options": _values["model_options"] | {"flow_layers": 4}}
    PRESETS.add(f"vaepp-flow-{_name}", Preset(f"VAEPP + Flow, {_description}", _flow))
PRESETS.add(
    "vaepp-mnist-small",
    Preset(
        "VAEPP on MNIST with MLP 784-256-256 nets, z = 13, 10 + 2 GAN epochs: minutes on 2 CPU cores",
        _SMALL,
    ),
)
PRESETS.add(
    "vaepp-naive-mnist-small",
    Preset("Naive VAEPP counterpart of vaepp-mnist-small", _SMALL | {"model": "vaepp-naive"}),
)
