"""Gradient penalties for WGAN-style critics (Section 2.2 and Table 3 of the VAEPP paper).

Every penalty has the signature ``penalty(critic, real, fake, *, generator=None, **constants)``
and returns a scalar tensor. ``critic`` maps a batch (B, ...) to scores (B,); ``real`` and
``fake`` are batches of the same event shape. The registry :data:`PENALTIES` holds

- ``wgan-gp`` (Gulrajani et al. 2017): ``λ · E (‖∇D(x̂)‖₂ − 1)²`` at uniform interpolates
  ``x̂ = u·real + (1 − u)·fake``, ``u ~ U(0, 1)`` per example; λ = 10.
- ``wgan-div-1`` (Wu et al. 2018; VAEPP's default): ``k · E ‖∇D(x̂)‖₂^p`` at the same
  interpolates; k = 2, p = 6.
- ``wgan-div-2``: ``k · ½ (E_real ‖∇D‖^p + E_fake ‖∇D‖^p)``, the div penalty at the real and at
  the generated points, averaged over the two sets.

Gradient flow. A penalty regularises the *critic*: ``real`` and ``fake`` are detached inside,
so its gradient reaches the critic's parameters (through ``create_graph=True``, the double
backward) and nothing upstream of the inputs: not a decoder that produced ``fake``, nor an
encoder that produced latent "real" points. VAEPP multiplies the penalty by a constant weight
(the bound w, not the learned β), so this choice loses nothing: a model that wants the penalty
to shape its decoder as well must build that term itself.

Sign convention: the penalties are non-negative and symmetric in the sign of D, so they serve a
critic trained either way round. latentgap's critics minimise ``E D(real) − E D(fake) + penalty``
(Algorithm 1 of the VAEPP paper: smaller D means more real).
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from latentgap.errors import ConfigError
from latentgap.registry import Registry

Critic = Callable[[Tensor], Tensor]  # (B, ...) → (B,)
Penalty = Callable[..., Tensor]  # (critic, real, fake, *, generator=None) → scalar

PENALTIES: Registry[Penalty] = Registry("gradient penalty")


# ---------------------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------------------


def _check_pair(real: Tensor, fake: Tensor, *, same_batch: bool) -> None:
    if real.dim() < 2 or fake.dim() < 2:
        raise ValueError(
            f"real and fake must be batches (B, ...), got {tuple(real.shape)}, {tuple(fake.shape)}"
        )
    if real.shape[1:] != fake.shape[1:] or (same_batch and real.shape[0] != fake.shape[0]):
        raise ValueError(
            f"real and fake batches must have the same shape, got {tuple(real.shape)} and "
            f"{tuple(fake.shape)}"
        )


def interpolates(real: Tensor, fake: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """``x̂ = u·real + (1 − u)·fake`` with one ``u ~ U(0, 1)`` per example, both inputs detached:
    (B, ...) → (B, ...). ``generator`` (on the inputs' device) makes ``u`` reproducible."""
    _check_pair(real, fake, same_batch=True)
    real, fake = real.detach(), fake.detach()
    u = torch.rand(real.shape[0], generator=generator, device=real.device, dtype=real.dtype)
    u = u.reshape(-1, *([1] * (real.dim() - 1)))  # (B, 1, ..., 1)
    return u * real + (1.0 - u) * fake  # (B, ...)


def critic_input_gradient(critic: Critic, x: Tensor) -> Tensor:
    """∇ₓ D(x) per example, differentiable w.r.t. the critic's parameters: (B, ...) → (B, F)
    with F the flattened event size. ``x`` is detached first (see the module docstring)."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        scores = critic(x)  # (B,)
        if scores.shape != (x.shape[0],):
            scores = scores.reshape(x.shape[0])  # accept (B, 1); fail loudly on anything else
        (grad,) = torch.autograd.grad(scores.sum(), x, create_graph=True)
    return grad.flatten(1)  # (B, F)


def _div_term(grad: Tensor, p: float) -> Tensor:
    """‖g‖₂^p per example as (‖g‖²)^(p/2), smooth at g = 0 for p ≥ 2: (B, F) → (B,)."""
    return grad.square().sum(1).pow(p / 2.0)


# ---------------------------------------------------------------------------------------------
# The penalties
# ---------------------------------------------------------------------------------------------


@PENALTIES.register("wgan-gp")
def wgan_gp(
    critic: Critic,
    real: Tensor,
    fake: Tensor,
    *,
    generator: torch.Generator | None = None,
    lam: float = 10.0,
) -> Tensor:
    """WGAN-GP (Gulrajani et al. 2017, Eq. 3): ``λ · E_x̂ (‖∇D(x̂)‖₂ − 1)²`` at uniform
    interpolates between ``real`` and ``fake`` (equal batch sizes). A scalar."""
    grad = critic_input_gradient(critic, interpolates(real, fake, generator))  # (B, F)
    # vector_norm's backward is masked to 0 at g = 0, so a flat critic gives no NaN.
    norm = torch.linalg.vector_norm(grad, dim=1)  # (B,)
    return lam * (norm - 1.0).square().mean()


@PENALTIES.register("wgan-div-1")
def wgan_div_1(
    critic: Critic,
    real: Tensor,
    fake: Tensor,
    *,
    generator: torch.Generator | None = None,
    k: float = 2.0,
    p: float = 6.0,
) -> Tensor:
    """WGAN-div (Wu et al. 2018) at interpolates, VAEPP's default ("WGAN-div-1", Table 3):
    ``k · E_x̂ ‖∇D(x̂)‖₂^p`` with ``x̂ = u·real + (1 − u)·fake``. A scalar."""
    grad = critic_input_gradient(critic, interpolates(real, fake, generator))  # (B, F)
    return k * _div_term(grad, p).mean()


@PENALTIES.register("wgan-div-2")
def wgan_div_2(
    critic: Critic,
    real: Tensor,
    fake: Tensor,
    *,
    generator: torch.Generator | None = None,
    k: float = 2.0,
    p: float = 6.0,
) -> Tensor:
    """WGAN-div at the real and at the generated points ("WGAN-div-2", Table 3 of the VAEPP
    paper): ``k · ½ (E_real ‖∇D‖₂^p + E_fake ‖∇D‖₂^p)``; the batch sizes may differ.
    ``generator`` is accepted for the uniform signature and unused (no randomness). A scalar."""
    _check_pair(real, fake, same_batch=False)
    n_real = real.shape[0]
    both = torch.cat([real.detach(), fake.detach()])  # (B_real + B_fake, ...)
    terms = _div_term(critic_input_gradient(critic, both), p)  # (B_real + B_fake,)
    return k * 0.5 * (terms[:n_real].mean() + terms[n_real:].mean())


# ---------------------------------------------------------------------------------------------
# Construction by name
# ---------------------------------------------------------------------------------------------


def _check_constant(penalty: str, name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"penalty {penalty!r}: {name} must be a finite number, got {value!r}")
    if value < 0 or (name == "p" and value < 1):
        bound = "≥ 1" if name == "p" else "≥ 0"
        raise ConfigError(f"penalty {penalty!r}: {name} must be {bound}, got {value!r}")
    return float(value)


def build_penalty(name: str, **constants: Any) -> Penalty:
    """The registered penalty ``name`` with its constants fixed (e.g. ``lam=10`` for
    ``wgan-gp``, ``k=2, p=6`` for the div penalties); unknown names or constants raise
    :class:`ConfigError`. Returns ``penalty(critic, real, fake, *, generator=None)``."""
    fn = PENALTIES.get(name)
    valid = [
        p.name
        for p in inspect.signature(fn).parameters.values()
        if p.kind is p.KEYWORD_ONLY and p.name != "generator"
    ]
    unknown = sorted(set(constants) - set(valid))
    if unknown:
        raise ConfigError(
            f"penalty {name!r} has no constant {', '.join(unknown)}; valid: {', '.join(valid)}"
        )
    checked = {key: _check_constant(name, key, value) for key, value in constants.items()}
    # torch.compile (AOTAutograd) cannot differentiate through a gradient taken inside the
    # graph (double backward): the penalty always runs eagerly, the rest of the step compiled.
    return torch.compiler.disable(functools.partial(fn, **checked))


__all__ = [
    "PENALTIES",
    "Critic",
    "Penalty",
    "build_penalty",
    "critic_input_gradient",
    "interpolates",
    "wgan_div_1",
    "wgan_div_2",
    "wgan_gp",
]
