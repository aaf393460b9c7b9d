"""Encoders, decoders and critics by family; importing this package registers them all."""

from latentgap.nets import mlp, rae, resnet  # noqa: F401  (registration)
from latentgap.nets.base import (
    ARCHITECTURES,
    Architecture,
    build_critic,
    build_decoder,
    build_encoder,
    get_architecture,
)

__all__ = [
    "ARCHITECTURES",
    "Architecture",
    "build_critic",
    "build_decoder",
    "build_encoder",
    "get_architecture",
]
