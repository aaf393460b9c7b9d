"""Samplers, separate from models: MALA / ULA on any energy, and the latent GAN that models
VAEPP's aggregate posterior q_φ(z) (the start points z₀ of MALA, Section 4.3 of the VAEPP
paper)."""

from latentgap.samplers.latent_gan import LatentGAN
from latentgap.samplers.mala import MALAResult, mala, ula

__all__ = ["LatentGAN", "MALAResult", "mala", "ula"]
