"""Decoder likelihoods p(x|z): Bernoulli, Gaussian with a learnt scalar variance, and the
discretised logistic for 8-bit data.

Contract (k = ``param_channels``, C×H×W the image shape):

- a decoder outputs parameter maps ``params`` of shape (..., k*C, H, W), parameter-major: the C
  channels of parameter 0, then the C channels of parameter 1, and so on; the leading dims
  ``...`` may be several, e.g. (K, B) for K importance samples of a batch of B;
- data ``x`` has shape (..., C, H, W), broadcastable against the parameters;
- ``log_prob(params, x)`` is log p(x|z) summed over (C, H, W): shape (...);
- ``mean(params)`` is E[x|z] (VAEPP's generator G(z)) and ``sample(params)`` draws x ~ p(x|z),
  both (..., C, H, W).

Use :func:`build_likelihood` to make one by name and :func:`default_likelihood` for the natural
choice for a data kind. All computations stay in log space (log-sigmoid, never log(sigmoid)).

Precision: ``log_prob`` upcasts bf16/fp16 parameters and data to float32 on entry
(:func:`latentgap.posteriors.upcast`), so under bf16 autocast the decoder runs in bf16 but
log p(x|z) is float32; float32 and float64 inputs are used as they are. ``mean`` and ``sample``
keep the parameters' dtype (G(z) feeds the critic, a network).
"""

from __future__ import annotations

import inspect
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from latentgap.data.base import DataSpec
from latentgap.errors import ConfigError
from latentgap.posteriors import upcast
from latentgap.registry import Registry

LIKELIHOODS: Registry[type] = Registry("likelihood")

_LOG_2PI = math.log(2.0 * math.pi)


class Likelihood(nn.Module):
    """Base class of p(x|z) for images of ``spec.shape``; subclasses set ``param_channels``."""

    name: str = ""
    param_channels: int = 1

    def __init__(self, spec: DataSpec) -> None:
        super().__init__()
        self.shape: tuple[int, int, int] = tuple(spec.shape)

    def split(self, params: Tensor) -> tuple[Tensor, ...]:
        """The k parameter maps, each (..., C, H, W), of ``params`` (..., k*C, H, W)."""
        c, h, w = self.shape
        expected = (self.param_channels * c, h, w)
        if params.ndim < 3 or tuple(params.shape[-3:]) != expected:
            raise ValueError(
                f"{self.name} likelihood expects parameters of shape (..., {expected[0]}, {h}, "
                f"{w}) ({self.param_channels} per channel), got {tuple(params.shape)}"
            )
        return tuple(params.split(c, dim=-3))

    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        """log p(x|z) summed over (C, H, W): (...)."""
        raise NotImplementedError

    def mean(self, params: Tensor) -> Tensor:
        """E[x|z]: (..., C, H, W)."""
        raise NotImplementedError

    def sample(self, params: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """A draw x ~ p(x|z): (..., C, H, W)."""
        raise NotImplementedError


def _sum_pixels(t: Tensor) -> Tensor:
    return t.sum(dim=(-3, -2, -1))  # (..., C, H, W) -> (...)


@LIKELIHOODS.register("bernoulli")
class Bernoulli(Likelihood):
    """Independent Bernoulli pixels with logits l (k = 1); mean sigmoid(l).

    ``log_prob`` accepts soft targets x in [0, 1]:
    ``x·logσ(l) + (1 − x)·logσ(−l)``, which is linear in x and hence the exact expectation of
    the Bernoulli log-likelihood over binarisations x ~ Bernoulli(e) of a gray image e. This is
    VAEPP's reconstruction term for q(z|e) (Eq. 7 of the VAEPP paper).
    """

    name = "bernoulli"
    param_channels = 1

    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        (logits,) = self.split(upcast(params))  # (..., C, H, W)
        x = upcast(x)
        # x·l − softplus(l) equals x·logσ(l) + (1 − x)·logσ(−l) with one transcendental per
        # pixel instead of two (the NLL's hot loop); its cancellation error, ~1e-7·|l| a pixel,
        # is far below Monte Carlo noise.
        return _sum_pixels(x * logits) - _sum_pixels(F.softplus(logits))

    def mean(self, params: Tensor) -> Tensor:
        (logits,) = self.split(params)
        return torch.sigmoid(logits)

    def sample(self, params: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return torch.bernoulli(self.mean(params), generator=generator)


@LIKELIHOODS.register("gaussian")
class Gaussian(Likelihood):
    """x ~ N(m(z), γ I) with one scalar variance γ for all pixels (k = 1).

    The decoder output is passed through ``mean_activation`` ("sigmoid", the default, keeps the
    mean in [0, 1]; "identity" leaves it unbounded). ``log γ`` is stored as ``log_gamma``, a
    learnt parameter when ``learn_gamma`` (the 2-Stage VAE of Dai & Wipf, 2019, whose γ → 0
    sharpens reconstructions) and a fixed buffer otherwise.

    ``min_log_gamma`` (default None: no floor) puts a smooth floor under the variance,
    ``γ = exp(log_gamma) + exp(min_log_gamma)``, so γ never falls below exp(min_log_gamma) yet
    the gradient never vanishes (a hard clamp would freeze ``log_gamma`` once under the floor).
    −10 (σ ≈ 1.7/255) is a sensible value for 8-bit data scaled to [0, 1].
    """

    name = "gaussian"
    param_channels = 1
    _ACTIVATIONS = ("sigmoid", "identity")

    def __init__(
        self,
        spec: DataSpec,
        *,
        mean_activation: str = "sigmoid",
        log_gamma: float = 0.0,
        learn_gamma: bool = True,
        min_log_gamma: float | None = None,
    ) -> None:
        super().__init__(spec)
        if mean_activation not in self._ACTIVATIONS:
            raise ConfigError(
                f"gaussian mean_activation must be one of {', '.join(self._ACTIVATIONS)}, "
                f"got {mean_activation!r}"
            )
        if not math.isfinite(log_gamma):
            raise ConfigError(f"gaussian log_gamma must be finite, got {log_gamma}")
        if min_log_gamma is not None and not math.isfinite(min_log_gamma):
            raise ConfigError(f"gaussian min_log_gamma must be finite, got {min_log_gamma}")
        self.mean_activation = mean_activation
        self.min_log_gamma = min_log_gamma
        init = torch.tensor(float(log_gamma))
        if learn_gamma:
            self.log_gamma = nn.Parameter(init)
        else:
            self.register_buffer("log_gamma", init)

    def effective_log_gamma(self) -> Tensor:
        """log γ after the optional floor: a 0-dim tensor."""
        if self.min_log_gamma is None:
            return self.log_gamma
        floor = torch.full_like(self.log_gamma, self.min_log_gamma)
        return torch.logaddexp(self.log_gamma, floor)

    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        """Σ log N(x; m, γ) = −½ Σ [(x − m)²/γ + log γ + log 2π]."""
        m = self.mean(upcast(params))  # (..., C, H, W)
        log_gamma = self.effective_log_gamma()
        sq = (upcast(x) - m).square()  # (..., C, H, W)
        n = math.prod(self.shape)
        return -0.5 * (_sum_pixels(sq) * torch.exp(-log_gamma) + n * (log_gamma + _LOG_2PI))

    def mean(self, params: Tensor) -> Tensor:
        (raw,) = self.split(params)
        return torch.sigmoid(raw) if self.mean_activation == "sigmoid" else raw

    def sample(self, params: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """m + √γ·ε, not clipped: a Gaussian draw lies outside [0, 1] with positive odds."""
        m = self.mean(params)
        eps = torch.randn(m.shape, generator=generator, device=m.device, dtype=m.dtype)
        return m + torch.exp(0.5 * self.effective_log_gamma()) * eps

    def extra_repr(self) -> str:
        return f"mean_activation={self.mean_activation!r}, min_log_gamma={self.min_log_gamma}"


@LIKELIHOODS.register("discretized-logistic")
class DiscretizedLogistic(Likelihood):
    """The discretised logistic of PixelCNN++ (Salimans et al., 2017) for 8-bit data (k = 2).

    Data are the levels x = j/255, j = 0..255. Parameter 0 is the location μ, used as is (no
    squashing: a location outside [0, 1] just piles mass into an edge bin); parameter 1 is the
    per-pixel log-scale, clamped below at ``min_log_scale`` (−7, as in PixelCNN++). Level j owns
    the bin [x − h, x + h] with h = 1/510, except that the edge bins extend to ±∞:

        P(0) = F(h),  P(255) = 1 − F(1 − h),  P(j) = F(x + h) − F(x − h),

    with F the logistic CDF. The interior difference is evaluated exactly in log space through
    σ(b) − σ(a) = σ(b)·σ(−a)·(1 − e^{a−b}), i.e.
    log P = logσ(b) + logσ(−a) + log(−expm1(a − b)), which never underflows, so the PixelCNN++
    fallback to log pdf + log bin width is not needed.

    ``mean`` returns μ clamped to [0, 1], the centre of the distribution; it equals the exact
    mean of the discretised law only when the edges cut off little mass (the exact mean would
    cost a sum over all 256 levels).
    """

    name = "discretized-logistic"
    param_channels = 2
    levels = 256

    def __init__(self, spec: DataSpec, *, min_log_scale: float = -7.0) -> None:
        super().__init__(spec)
        if not math.isfinite(min_log_scale):
            raise ConfigError(f"min_log_scale must be finite, got {min_log_scale}")
        self.min_log_scale = float(min_log_scale)

    def loc_and_log_scale(self, params: Tensor) -> tuple[Tensor, Tensor]:
        """Location and clamped log-scale, each (..., C, H, W)."""
        loc, log_scale = self.split(params)
        return loc, log_scale.clamp(min=self.min_log_scale)

    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        loc, log_scale = self.loc_and_log_scale(upcast(params))  # (..., C, H, W)
        x = upcast(x)
        half = 0.5 / (self.levels - 1)
        inv_scale = torch.exp(-log_scale)
        centred = x - loc
        a = (centred - half) * inv_scale  # lower bin edge, standardised
        b = (centred + half) * inv_scale  # upper bin edge, standardised
        log_cdf_upper = F.logsigmoid(b)  # log F(x + h)
        log_sf_lower = F.logsigmoid(-a)  # log (1 − F(x − h))
        log_width = torch.log(-torch.expm1(-2.0 * half * inv_scale))  # log(1 − e^{a−b})
        interior = log_cdf_upper + log_sf_lower + log_width
        lp = torch.where(
            x < half, log_cdf_upper, torch.where(x > 1.0 - half, log_sf_lower, interior)
        )
        return _sum_pixels(lp)

    def mean(self, params: Tensor) -> Tensor:
        loc, _ = self.split(params)
        return loc.clamp(0.0, 1.0)

    def sample(self, params: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Draw a logistic μ + s·logit(u) and round it to the nearest level (edges clamp)."""
        loc, log_scale = self.loc_and_log_scale(params)
        tiny = torch.finfo(loc.dtype).tiny
        u = torch.rand(loc.shape, generator=generator, device=loc.device, dtype=loc.dtype)
        u = u.clamp(tiny, 1.0 - torch.finfo(loc.dtype).eps)
        y = loc + torch.exp(log_scale) * (torch.log(u) - torch.log1p(-u))
        top = self.levels - 1
        return torch.round(y * top).clamp(0, top) / top


def likelihood_options(name: str) -> list[str]:
    """The keyword options the likelihood ``name`` accepts."""
    cls = LIKELIHOODS.get(name)
    params = inspect.signature(cls.__init__).parameters
    return [p for p in params if p not in ("self", "spec")]


def build_likelihood(name: str, spec: DataSpec, **options: Any) -> Likelihood:
    """The likelihood ``name`` for data of ``spec``; an unknown option raises ConfigError."""
    cls = LIKELIHOODS.get(name)
    valid = likelihood_options(name)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ConfigError(
            f"unknown option(s) {', '.join(unknown)} for likelihood {name!r}; "
            f"valid: {', '.join(valid) or 'none'}"
        )
    return cls(spec, **options)


_DEFAULTS = {"binary": "bernoulli", "continuous": "gaussian", "discrete8": "discretized-logistic"}


def default_likelihood(spec: DataSpec) -> str:
    """The natural likelihood for the data kind: binary → bernoulli, continuous → gaussian,
    discrete8 → discretized-logistic."""
    try:
        return _DEFAULTS[spec.kind]
    except KeyError:
        raise ConfigError(f"no default likelihood for data kind {spec.kind!r}") from None
