"""Encoder posteriors q(z|x): a diagonal Gaussian and a diagonal truncated normal.

A posterior is built from the encoder's location and log-scale, both (B, D) (any leading dims
work; B is only the usual case). :meth:`Posterior.from_encoder_output` splits an encoder output
h of shape (B, 2D) into the two halves and clamps the log-scale below (log σ ≥ −5 in the VAEPP
reference networks). Draws are reparameterised, so gradients reach the encoder.

The truncated normal is the q(z|e) of VAEPP's partition-function estimate Ẑ (Eq. 8 and
section 3.4 of the VAEPP paper): bounded support keeps the importance weights f(z)/q̂(z) from
exploding in the tails of q.

Precision: under bf16 autocast the encoder's output is bf16, but every log-density must be
float32. A posterior therefore stores its location and log-scale upcast by :func:`upcast`
(bf16/fp16 → float32; float32 and float64 unchanged), so draws, log-densities, entropies and KLs
are float32 whatever precision the network ran in. The other log-density modules (likelihoods,
priors, flows) use the same helper on their inputs.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, TypeVar

import torch
from torch import Tensor

from latentgap.errors import ConfigError
from latentgap.registry import Registry

POSTERIORS: Registry[type] = Registry("posterior")
P = TypeVar("P", bound="Posterior")

LOW_PRECISION = (torch.bfloat16, torch.float16)


def upcast(t: Tensor) -> Tensor:
    """``t`` as float32 if it is bf16 or fp16 (a network's output under autocast), else ``t``
    itself: float32 stays as is (no copy) and float64 is never lowered.

    Log-densities call it on their tensor inputs so that, under ``torch.autocast``, they are
    evaluated in float32 on the (possibly bf16-rounded) values. The cast is differentiable.
    """
    return t.float() if t.dtype in LOW_PRECISION else t


_LOG_2PI = math.log(2.0 * math.pi)
_HALF_LOG_2PIE = 0.5 * (1.0 + _LOG_2PI)


class Posterior:
    """A factorised distribution over z with per-dimension location and log-scale (..., D)."""

    name: str = ""

    def __init__(self, loc: Tensor, log_scale: Tensor) -> None:
        if loc.shape != log_scale.shape:
            raise ValueError(
                f"loc {tuple(loc.shape)} and log_scale {tuple(log_scale.shape)} differ in shape"
            )
        # bf16/fp16 encoder outputs (autocast) are upcast: draws and densities stay float32.
        self.loc = upcast(loc)  # (B, D)
        self.log_scale = upcast(log_scale)  # (B, D)

    @classmethod
    def from_encoder_output(
        cls: type[P], h: Tensor, min_log_scale: float = -5.0, **options: Any
    ) -> P:
        """Split h (B, 2D) into loc = h[..., :D] and log-scale = max(h[..., D:], min_log_scale)."""
        if h.shape[-1] % 2:
            raise ValueError(f"encoder output must have 2·D features, got {h.shape[-1]}")
        loc, raw = h.chunk(2, dim=-1)  # (B, D) each
        return cls(loc, raw.clamp(min=min_log_scale), **options)

    @property
    def scale(self) -> Tensor:
        return torch.exp(self.log_scale)  # (B, D)

    @property
    def dim(self) -> int:
        return self.loc.shape[-1]

    @property
    def mean(self) -> Tensor:
        return self.loc

    @property
    def variance(self) -> Tensor:
        raise NotImplementedError

    @property
    def stddev(self) -> Tensor:
        return self.variance.sqrt()

    def _standard(self, shape: torch.Size, generator: torch.Generator | None) -> Tensor:
        """Standardised noise ε of the given shape, transformed as z = loc + scale·ε."""
        raise NotImplementedError

    def rsample(self, k: int | None = None, generator: torch.Generator | None = None) -> Tensor:
        """Reparameterised draws z = loc + scale·ε: (B, D), or (K, B, D) when ``k`` is given."""
        shape = self.loc.shape if k is None else torch.Size((k, *self.loc.shape))
        eps = self._standard(shape, generator)  # (K, B, D) or (B, D)
        return self.loc + self.scale * eps

    def sample(self, k: int | None = None, generator: torch.Generator | None = None) -> Tensor:
        """Like :meth:`rsample` but detached from the graph."""
        with torch.no_grad():
            return self.rsample(k, generator)

    def log_prob(self, z: Tensor) -> Tensor:
        """log q(z|x) summed over D: z (..., B, D) → (..., B)."""
        raise NotImplementedError

    def entropy(self) -> Tensor:
        """Differential entropy, summed over D: (B,)."""
        raise NotImplementedError

    def kl_standard_normal(self) -> Tensor:
        """KL(q ‖ N(0, I)) = −H(q) + ½ Σ_d [log 2π + E z_d²], with E z² = mean² + variance: (B,)."""
        second_moment = self.mean.square() + self.variance  # (B, D)
        return 0.5 * (second_moment + _LOG_2PI).sum(-1) - self.entropy()

    def detach(self: P) -> P:
        """The same distribution with its parameters cut from the graph."""
        clone = type(self).__new__(type(self))
        clone.__dict__.update(self.__dict__)
        clone.loc, clone.log_scale = self.loc.detach(), self.log_scale.detach()
        return clone

    def __repr__(self) -> str:
        return f"{type(self).__name__}(shape={tuple(self.loc.shape)})"


@POSTERIORS.register("gaussian")
class DiagonalGaussian(Posterior):
    """q(z|x) = N(z; μ, diag σ²), the usual VAE encoder distribution."""

    name = "gaussian"

    @property
    def variance(self) -> Tensor:
        return torch.exp(2.0 * self.log_scale)

    @property
    def stddev(self) -> Tensor:
        return self.scale

    def _standard(self, shape: torch.Size, generator: torch.Generator | None) -> Tensor:
        return torch.randn(shape, generator=generator, device=self.loc.device, dtype=self.loc.dtype)

    def log_prob(self, z: Tensor) -> Tensor:
        eps = (upcast(z) - self.loc) * torch.exp(-self.log_scale)  # (..., B, D)
        return -(0.5 * eps.square() + self.log_scale + 0.5 * _LOG_2PI).sum(-1)

    def entropy(self) -> Tensor:
        return (self.log_scale + _HALF_LOG_2PIE).sum(-1)

    def kl_standard_normal(self) -> Tensor:
        """½ Σ_d (μ² + σ² − 1 − 2 log σ), Eq. (10) of Kingma & Welling (2014): (B,)."""
        kl = self.loc.square() + torch.exp(2.0 * self.log_scale) - 1.0 - 2.0 * self.log_scale
        return 0.5 * kl.sum(-1)


@POSTERIORS.register("truncated-normal")
class TruncatedNormal(Posterior):
    """N(μ, σ²) per dimension restricted to [μ − aσ, μ + aσ] and renormalised (a = ``bound``).

    log q(z) = Σ_d [log N(z_d; μ_d, σ_d²) − log(Φ(a) − Φ(−a))] inside the box, −inf outside;
    log(Φ(2) − Φ(−2)) = log 0.95449974, the correction VAEPP applies per dimension for its Ẑ.
    Draws use the inverse CDF, u = Φ(−a) + U·(Φ(a) − Φ(−a)), z = μ + σ·Φ⁻¹(u), which is
    reparameterised in μ and σ. Being symmetric, its mean is μ.
    """

    name = "truncated-normal"

    def __init__(self, loc: Tensor, log_scale: Tensor, bound: float = 2.0) -> None:
        super().__init__(loc, log_scale)
        if not (isinstance(bound, (int, float)) and math.isfinite(bound) and bound > 0):
            raise ConfigError(f"truncated-normal bound must be a finite number > 0, got {bound}")
        self.bound = float(bound)
        a = self.bound
        self.mass = math.erf(a / math.sqrt(2.0))  # Φ(a) − Φ(−a)
        self.log_mass = math.log(self.mass)
        self._lower_cdf = 0.5 * math.erfc(a / math.sqrt(2.0))  # Φ(−a), accurate for large a
        # a·φ(a)/mass: shared by the variance and the entropy of the truncated standard normal.
        self._a_pdf_over_mass = a * math.exp(-0.5 * a * a - 0.5 * _LOG_2PI) / self.mass

    @property
    def variance(self) -> Tensor:
        """σ²·(1 − 2aφ(a)/(Φ(a) − Φ(−a)))."""
        return torch.exp(2.0 * self.log_scale) * (1.0 - 2.0 * self._a_pdf_over_mass)

    def _standard(self, shape: torch.Size, generator: torch.Generator | None) -> Tensor:
        dtype = self.loc.dtype
        u = torch.rand(shape, generator=generator, device=self.loc.device, dtype=dtype)
        u = self._lower_cdf + u * self.mass  # uniform on (Φ(−a), Φ(a))
        eps = torch.special.ndtri(u)
        return eps.clamp(-self.bound, self.bound)  # guard against rounding at the edges

    def log_prob(self, z: Tensor) -> Tensor:
        """Points within rounding error of the box edge (as produced by :meth:`rsample` when
        |μ| ≫ σ) count as inside."""
        diff = upcast(z) - self.loc  # (..., B, D)
        scale = self.scale
        half_width = self.bound * scale
        slack = 4.0 * torch.finfo(diff.dtype).eps * (self.loc.abs() + half_width)
        inside = diff.abs() <= half_width + slack
        eps = diff / scale
        lp = -(0.5 * eps.square() + self.log_scale + 0.5 * _LOG_2PI + self.log_mass)
        lp = torch.where(inside, lp, torch.full_like(lp, -math.inf))
        return lp.sum(-1)

    def entropy(self) -> Tensor:
        """Σ_d [log(√(2πe)·σ_d·(Φ(a) − Φ(−a))) − aφ(a)/(Φ(a) − Φ(−a))]."""
        per_dim = self.log_scale + _HALF_LOG_2PIE + self.log_mass - self._a_pdf_over_mass
        return per_dim.sum(-1)


def posterior_options(name: str) -> list[str]:
    """The keyword options of the posterior ``name`` (besides the encoder output)."""
    cls = POSTERIORS.get(name)
    init = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "loc")]
    return ["min_log_scale"] + [p for p in init if p != "log_scale"]


def build_posterior(name: str, h: Tensor, **options: Any) -> Posterior:
    """The posterior ``name`` from an encoder output h (B, 2D); unknown options raise
    ConfigError. Options: ``min_log_scale`` (default −5) and, for "truncated-normal", ``bound``
    (default 2)."""
    cls = POSTERIORS.get(name)
    valid = posterior_options(name)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ConfigError(
            f"unknown option(s) {', '.join(unknown)} for posterior {name!r}; "
            f"valid: {', '.join(valid)}"
        )
    return cls.from_encoder_output(h, **options)
