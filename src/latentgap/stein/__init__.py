"""Stein variational gradient descent: kernels (one job each) and the SVGD direction.

:mod:`~.kernels` holds the RBF (median heuristic in the LDC-VAE paper's and in Liu & Wang's
parametrisation) and IMQ kernels; :mod:`~.svgd` the direction Φ* of Eq. (10)/(15) of the LDC-VAE
paper, the surrogate loss that pushes Φ* into network parameters (Eq. 16) and a plain SVGD step.
"""

from latentgap.stein.kernels import (
    KERNELS,
    IMQKernel,
    RadialKernel,
    RBFKernel,
    build_kernel,
    median_of_pairs,
    pairwise_sq_dists,
)
from latentgap.stein.svgd import score_of, svgd_direction, svgd_step, svgd_surrogate_loss

__all__ = [
    "KERNELS",
    "IMQKernel",
    "RBFKernel",
    "RadialKernel",
    "build_kernel",
    "median_of_pairs",
    "pairwise_sq_dists",
    "score_of",
    "svgd_direction",
    "svgd_step",
    "svgd_surrogate_loss",
]
