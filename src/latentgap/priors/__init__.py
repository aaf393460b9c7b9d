"""Priors p(z): the standard normal (and, later, VAEPP's pull-back prior)."""

from latentgap.priors.standard_normal import StandardNormal

__all__ = ["StandardNormal"]
