"""latentgap: VAEs that close the gap between the prior and the aggregate posterior.

Implements VAEPP (VAE with a Pull-back Prior), LDC-VAE (latent distribution consistency VAE)
and the baselines they are measured against.
"""

__version__ = "0.1.0"
