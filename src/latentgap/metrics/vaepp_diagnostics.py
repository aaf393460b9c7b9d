"""Diagnostics of a trained VAEPP model (Sections 5.1–5.2 of the VAEPP paper).

- E_q D(G(z)) vs E_{p_λ} D(G(z)), both normalised by the critic's mean and std on training data
  (the paper reports 0.015 and 0.092 on CIFAR-10): ∂L/∂β = 0 (Eq. 6) when they agree.
- KL(p_N ‖ p_λ) = β·E_{p_N} D(G(ε)) + log Z (the paper: 57.45 on MNIST), with the log Z the
  model is evaluated with (AIS by default, ``VAEPP.prepare_evaluation``); the Eq. (8) and
  p_N-proposal estimates are reported beside it (both fall far below AIS on trained MLP priors).
- ELBO − reconstruction, an upper bound on KL(q_φ(z) ‖ p_λ) (Hoffman & Johnson 2016; 12.497).
- |E_{p(x|z)} D(x) − D(G(z))|, the assumption of Appendix A (0.019 on CIFAR-10), normalised.
- β, and the variance of log Ẑ with a truncated vs a plain normal q (0.000967 vs 0.809).
"""

from __future__ import annotations

import statistics

import torch

from latentgap.data.base import ImageSet


@torch.no_grad()
def vaepp_diagnostics(
    model,
    train: ImageSet,
    test: ImageSet,
    *,
    n_images: int = 1000,
    n_prior_samples: int = 500,
    sampler: str | None = None,
    x_samples: int = 8,
    logz_samples: int = 1,
    logz_repeats: int = 5,
    logz_normal_samples: int = 10_000,
    seed: int = 0,
) -> dict[str, float]:
    """All diagnostics as a flat dict of floats (keys prefixed ``diag_``)."""
    device = model.device
    model.eval()
    torch.manual_seed(seed)
    g = torch.Generator(device=device).manual_seed(seed)
    out: dict[str, float] = {"diag_beta": float(model.beta.detach())}

    # the critic on real training data: the normalisation of Section 5.2
    real = next(train.batches(min(n_images, len(train)), shuffle=True, seed=seed)).to(device)
    d_real = model.critic_values(real.e)
    mu, sd = d_real.mean(), d_real.std().clamp_min(1e-12)
    out["diag_critic_mean_train"], out["diag_critic_std_train"] = float(mu), float(sd)

    # E_q D(G(z)) on test images, and the Appendix-A assumption E_{p(x|z)} D(x) ≈ D(G(z))
    batch = next(test.batches(min(n_images, len(test)), shuffle=True, seed=seed)).to(device)
    q = model.posterior(model.encoder_input(batch))
    z = q.sample()
    params = model.decode(z)
    d_q = model.critic_values(model.likelihood.mean(params))
    out["diag_d_q_normalised"] = float(((d_q - mu) / sd).mean())
    xs = torch.stack([model.likelihood.sample(params, generator=g) for _ in range(x_samples)])
    d_x = model.critic_values(xs).mean(0)  # (B,)
    out["diag_appendix_a_gap_normalised"] = float(((d_x - d_q).abs() / sd).mean())

    # E_{p_λ} D(G(z)) with samples of the pull-back prior
    z_p = model.sample_latents(
        n_prior_samples,
        generator=g,
        sampler=sampler or ("gan+mala" if bool(model.gan_trained) else "mala"),
    )
    d_p = model.critic_values(model.generate(z_p))
    out["diag_d_prior_normalised"] = float(((d_p - mu) / sd).mean())
    if hasattr(model, "last_acceptance_rate"):
        out["diag_mala_acceptance"] = model.last_acceptance_rate

    # KL(p_N ‖ p_λ) = E_{p_N}[log N − log f + log Z] = β E_{p_N} D(G(ε)) + log Z
    eps = torch.randn(n_prior_samples, model.config.latent_dim, generator=g, device=device)
    d_eps = model.critic_values(model.generate(eps))
    # the log Z the run is evaluated with (AIS unless prepare_evaluation was told otherwise)
    log_z = float(model.log_z) if not torch.isnan(model.log_z) else model.estimate_log_z_ais().log_z
    out["diag_log_z"] = log_z
    out["diag_log_z_eq8"] = model.estimate_log_z(train, samples_per_image=logz_samples).log_z
    if logz_normal_samples:
        normal = model.estimate_log_z_normal(logz_normal_samples, seed=seed + 5).log_z
        out["diag_log_z_normal"] = normal
    out["diag_kl_normal_prior"] = float(model.beta.detach() * d_eps.mean()) + log_z

    # ELBO − reconstruction bounds KL(q_φ(z) ‖ p_λ)
    log_f = model.pullback.log_unnormalized(z, d_q)
    kl = (q.log_prob(z) - log_f).mean() + log_z
    out["diag_kl_aggregate_bound"] = float(kl)

    # variance of log Ẑ with truncated vs plain normal proposals (Section 5.1)
    for truncated, key in ((True, "truncated"), (False, "normal")):
        values = [
            model.estimate_log_z(
                train, samples_per_image=logz_samples, truncated=truncated, seed=seed + 17 * r
            ).log_z
            for r in range(logz_repeats)
        ]
        out[f"diag_log_z_var_{key}"] = statistics.variance(values) if len(values) > 1 else 0.0
        out[f"diag_log_z_mean_{key}"] = statistics.fmean(values)
    return out
