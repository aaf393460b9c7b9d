"""Priors p(z): the standard normal, the VampPrior, and VAEPP's pull-back prior with its log Z
estimators."""

from latentgap.priors.partition import (
    LogZEstimate,
    log_z_normal_proposal,
    log_z_posterior_proposal,
    log_z_training_mixture,
    posterior_log_weights,
)
from latentgap.priors.pullback import PullbackPrior
from latentgap.priors.standard_normal import StandardNormal
from latentgap.priors.vampprior import VampPrior

__all__ = [
    "LogZEstimate",
    "PullbackPrior",
    "StandardNormal",
    "VampPrior",
    "log_z_normal_proposal",
    "log_z_posterior_proposal",
    "log_z_training_mixture",
    "posterior_log_weights",
]
