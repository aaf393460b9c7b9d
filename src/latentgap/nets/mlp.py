"""Fully connected networks for any data shape, and the small building blocks (option checking,
activations, spectral normalisation) that the convolutional families reuse.

The benchmark VAE of the peer libraries is the MLP ``784-500-500-z40`` (Bernoulli decoder on
MNIST); ``hidden=(500, 500)`` reproduces it.

Defaults: ReLU for the encoder and decoder (as in that benchmark), leaky ReLU (slope 0.2) for
the critic, the usual WGAN choice. Weights keep PyTorch's default initialisation.

Decoders (here and in rae.py) take ``output_activation``: ``identity`` (default; the models whose
likelihood or loss applies its own link, e.g. a Bernoulli's logits or RAE's sigmoid, want the raw
output), ``sigmoid`` (images in [0, 1]) or ``tanh`` (images in [−1, 1]).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from torch import Tensor, nn

from latentgap.errors import ConfigError
from latentgap.nets.base import ARCHITECTURES, Architecture, Shape

F = TypeVar("F", bound=Callable[..., nn.Module])

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": lambda: nn.LeakyReLU(0.2),
    "softplus": nn.Softplus,
}

OUTPUT_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "identity": nn.Identity,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
}

# ---------------------------------------------------------------------------------------------
# Shared building blocks (also used by resnet.py and rae.py)
# ---------------------------------------------------------------------------------------------


def checked_options(builder: F) -> F:
    """Turn a builder's unknown or missing keyword arguments into a :class:`ConfigError` that
    lists the valid options, instead of a bare ``TypeError``."""
    signature = inspect.signature(builder)
    options = [p.name for p in signature.parameters.values() if p.kind is p.KEYWORD_ONLY]

    @functools.wraps(builder)
    def wrapper(*args: Any, **kwargs: Any) -> nn.Module:
        try:
            signature.bind(*args, **kwargs)
        except TypeError as exc:
            name = f"{builder.__module__.rsplit('.', 1)[-1]}.{builder.__name__}"
            raise ConfigError(f"{name}: {exc}; valid options: {', '.join(options)}") from None
        return builder(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def positive_int(name: str, value: object) -> int:
    """``value`` if it is a positive int (not a bool), else :class:`ConfigError`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return value


def check_bool(name: str, value: object) -> bool:
    """``value`` if it is a bool, else :class:`ConfigError`."""
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be true or false, got {value!r}")
    return value


def activation_layer(name: str) -> nn.Module:
    """A fresh activation module by name (``relu``, ``leaky_relu`` with slope 0.2, ``softplus``)."""
    try:
        return ACTIVATIONS[name]()
    except (KeyError, TypeError):
        valid = ", ".join(sorted(ACTIVATIONS))
        raise ConfigError(f"unknown activation {name!r}; choose one of: {valid}") from None


def output_layer(name: str) -> nn.Module:
    """The decoder's last activation by name: ``identity``, ``sigmoid`` ([0, 1]), ``tanh`` ([−1, 1])."""
    try:
        return OUTPUT_ACTIVATIONS[name]()
    except (KeyError, TypeError):
        valid = ", ".join(OUTPUT_ACTIVATIONS)
        raise ConfigError(f"unknown output_activation {name!r}; choose one of: {valid}") from None


def spectral_normalize(module: nn.Module) -> nn.Module:
    """Apply spectral normalisation (Miyato et al. 2018) to every linear and (transposed)
    convolution weight in ``module``, in place; returns ``module``.

    Each weight is divided by a power-iteration estimate of the largest singular value of its
    matrix view (``(out, in·k·k)`` for convolutions), refined once per training-mode forward.
    """
    for layer in list(module.modules()):
        if isinstance(layer, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            nn.utils.parametrizations.spectral_norm(layer)
    return module


def check_shape(
    arch: str, shape: Sequence[int], supports: Callable[[Shape], bool], valid: str
) -> Shape:
    """``shape`` as a tuple; :class:`ConfigError` unless it is a supported ``(C, H, W)``."""
    checked = tuple(shape)
    if len(checked) != 3 or not supports(checked):  # type: ignore[arg-type]
        raise ConfigError(
            f"architecture {arch!r} does not support images of shape {checked}; it supports {valid}"
        )
    return checked  # type: ignore[return-value]


class Squeeze(nn.Module):
    """(B, 1) → (B,): the scalar head of a critic."""

    def forward(self, x: Tensor) -> Tensor:
        return x.squeeze(-1)


# ---------------------------------------------------------------------------------------------
# The MLP family
# ---------------------------------------------------------------------------------------------

SHAPES = "any (C, H, W)"


def _supports(shape: Shape) -> bool:
    return len(shape) == 3 and all(isinstance(s, int) and s >= 1 for s in shape)


def _hidden(hidden: object) -> tuple[int, ...]:
    if isinstance(hidden, (str, bytes)) or not isinstance(hidden, Sequence):
        raise ConfigError(f"hidden must be a sequence of layer widths, got {hidden!r}")
    return tuple(positive_int("hidden width", h) for h in hidden)


def _stack(sizes: Sequence[int], activation: str) -> nn.Sequential:
    """Linear layers ``sizes[0] → … → sizes[-1]``, the activation between (not after) them."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        if i > 0:
            layers.append(activation_layer(activation))
        layers.append(nn.Linear(n_in, n_out))
    return nn.Sequential(*layers)


class MLPDecoder(nn.Module):
    """Latents (B, D) → likelihood parameters (B, k·C, H, W) through fully connected layers,
    then ``output`` (an elementwise activation; identity by default)."""

    def __init__(
        self, net: nn.Module, out_shape: tuple[int, int, int], output: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.net = net
        self.out_shape = out_shape
        self.output = nn.Identity() if output is None else output

    def forward(self, z: Tensor) -> Tensor:
        h = self.output(self.net(z))  # (B, k·C·H·W)
        return h.reshape(z.shape[0], *self.out_shape)  # (B, k·C, H, W)


@checked_options
def build_encoder(
    shape: Shape,
    out_features: int,
    *,
    hidden: Sequence[int] = (500, 500),
    activation: str = "relu",
) -> nn.Module:
    """Images (B, C, H, W) → features (B, out_features): flatten, ``hidden`` linear layers
    each followed by ``activation``, then a linear head."""
    c, h, w = check_shape("mlp", shape, _supports, SHAPES)
    sizes = (c * h * w, *_hidden(hidden), positive_int("out_features", out_features))
    activation_layer(activation)  # validate early
    return nn.Sequential(nn.Flatten(), _stack(sizes, activation))


@checked_options
def build_decoder(
    latent_dim: int,
    shape: Shape,
    param_channels: int = 1,
    *,
    hidden: Sequence[int] = (500, 500),
    activation: str = "relu",
    output_activation: str = "identity",
) -> nn.Module:
    """Latents (B, latent_dim) → parameters (B, param_channels·C, H, W): ``hidden`` linear
    layers each followed by ``activation``, then a linear layer to k·C·H·W values, reshaped,
    through ``output_activation`` (identity, sigmoid or tanh)."""
    c, h, w = check_shape("mlp", shape, _supports, SHAPES)
    k = positive_int("param_channels", param_channels)
    sizes = (positive_int("latent_dim", latent_dim), *_hidden(hidden), k * c * h * w)
    activation_layer(activation)
    return MLPDecoder(_stack(sizes, activation), (k * c, h, w), output_layer(output_activation))


@checked_options
def build_critic(
    shape: Shape,
    *,
    hidden: Sequence[int] = (500, 500),
    activation: str = "leaky_relu",
    spectral_norm: bool = False,
) -> nn.Module:
    """Images (B, C, H, W) → scores (B,): flatten, ``hidden`` layers, a 1-unit head. With
    ``spectral_norm`` every weight is spectrally normalised (a 1-Lipschitz critic for
    1-Lipschitz activations)."""
    c, h, w = check_shape("mlp", shape, _supports, SHAPES)
    activation_layer(activation)
    net = nn.Sequential(nn.Flatten(), _stack((c * h * w, *_hidden(hidden), 1), activation))
    if check_bool("spectral_norm", spectral_norm):
        spectral_normalize(net)
    return nn.Sequential(net, Squeeze())


ARCHITECTURES.add(
    "mlp",
    Architecture(
        name="mlp",
        description="fully connected nets for any shape (benchmark: 784-500-500-z40)",
        encoder=build_encoder,
        decoder=build_decoder,
        critic=build_critic,
        supports=_supports,
        shapes=SHAPES,
    ),
)

__all__ = [
    "ACTIVATIONS",
    "OUTPUT_ACTIVATIONS",
    "MLPDecoder",
    "Squeeze",
    "activation_layer",
    "build_critic",
    "build_decoder",
    "build_encoder",
    "check_bool",
    "check_shape",
    "checked_options",
    "output_layer",
    "positive_int",
    "spectral_normalize",
]
