"""The network registry: architectures by name, each building encoders, decoders and critics
for a given data shape.

Contracts (B = batch, D = latent dim, k = likelihood parameters per pixel):

- encoder: images (B, C, H, W) → features (B, out_features); a model asks for
  ``out_features = 2 * D`` to get a Gaussian's location and log-scale.
- decoder: latents (B, D) → likelihood parameters (B, k * C, H, W), the k parameter maps of
  each channel stacked along dim 1 (parameter-major: all channels of parameter 0, then 1, …).
- critic: images (B, C, H, W) → scores (B,), a WGAN-style critic on data space.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from latentgap.errors import ConfigError
from latentgap.registry import Registry

Shape = tuple[int, int, int]


def _any_shape(shape: Shape) -> bool:
    return True


@dataclass(frozen=True)
class Architecture:
    """A family of networks. Each builder takes the data shape first and keyword options
    (e.g. ``width`` to shrink the nets for CPU presets); the options come from the model's
    ``arch_options`` (``critic_options`` for the critic).

    An own family needs only ``name``, ``description``, ``encoder`` and ``decoder`` (``critic``
    only for models with a critic, such as VAEPP); name it on the command line as
    ``--arch package.module:attribute`` or register it with ``ARCHITECTURES.add``.
    """

    name: str
    description: str
    encoder: Callable[..., nn.Module]  # (shape, out_features, **options)
    decoder: Callable[..., nn.Module]  # (latent_dim, shape, param_channels, **options)
    critic: Callable[..., nn.Module] | None = None  # (shape, **options)
    supports: Callable[[Shape], bool] = _any_shape
    shapes: str = "any shape"  # human-readable list of supported shapes, for error messages


def _check_architecture(obj: object, name: str) -> Architecture:
    if not isinstance(obj, Architecture):
        raise ConfigError(
            f"architecture {name!r} is a {type(obj).__name__}, not a "
            "latentgap.nets.Architecture(name, description, encoder, decoder, critic)"
        )
    return obj


ARCHITECTURES: Registry[Architecture] = Registry("architecture", _check_architecture)


def get_architecture(name: str, shape: Shape) -> Architecture:
    """The architecture ``name``, checked against the data shape (raises ConfigError)."""
    arch = ARCHITECTURES.get(name)
    if not arch.supports(tuple(shape)):
        raise ConfigError(
            f"architecture {name!r} does not support images of shape {tuple(shape)}; "
            f"it supports {arch.shapes}"
        )
    return arch


def build_encoder(name: str, shape: Shape, out_features: int, **options) -> nn.Module:
    return get_architecture(name, shape).encoder(tuple(shape), out_features, **options)


def build_decoder(
    name: str, latent_dim: int, shape: Shape, param_channels: int = 1, **options
) -> nn.Module:
    return get_architecture(name, shape).decoder(
        latent_dim, tuple(shape), param_channels, **options
    )


def build_critic(name: str, shape: Shape, **options) -> nn.Module:
    arch = get_architecture(name, shape)
    if arch.critic is None:
        raise ConfigError(
            f"architecture {name!r} has no critic, which this model needs; give it one or set "
            "model_options.critic_arch to a family that has one (e.g. mlp)"
        )
    return arch.critic(tuple(shape), **options)
