"""The convolutional nets of RAE (Ghosh et al. 2019, "From variational to deterministic
autoencoders"), used by LDC-VAE and its RAE/WAE baselines.

Supported shapes: (C, 28, 28), (C, 32, 32) and (C, 64, 64). With base width ``w`` (128 in the
papers; channels double each layer):

- 28×28 and 32×32 (MNIST, CIFAR-10): 4×4 kernels. 28×28 inputs are zero-padded by 2 pixels on
  each side to 32×32 inside the encoder and critic; the decoder produces 32×32 and crops the
  centre 28×28, so callers see 28×28 throughout.
  encoder: four stride-2 convs w, 2w, 4w, 8w (32 → 2), flatten, dense to ``out_features``;
  decoder: dense to (8w, 8, 8), stride-2 transposed convs 4w (→16), 2w (→32), then a stride-1
  conv to k·C channels.
- 64×64 (CelebA): 5×5 kernels. encoder: the same four stride-2 convs (64 → 4); decoder: dense to
  (8w, 8, 8), transposed convs 4w (→16), 2w (→32), w (→64), then the stride-1 conv to k·C.

Every hidden conv is followed by batch norm (optional) and ReLU; the decoder's dense layer by
ReLU. The last decoder layer is a stride-1 "same" convolution with TensorFlow-style padding
(for 4×4 kernels one pixel before, two after); a stride-1 transposed convolution is the same
operator with a flipped kernel, so this matches the reference's final transposed conv.

The critic is the encoder body with a 1-unit head. It has no batch norm by default: batch norm
couples the samples of a batch, which breaks per-sample gradient penalties and any Lipschitz
bound from spectral normalisation. Weights keep PyTorch's default initialisation.
"""

from __future__ import annotations

from torch import Tensor, nn

from latentgap.errors import ConfigError
from latentgap.nets.base import ARCHITECTURES, Architecture, Shape
from latentgap.nets.mlp import (
    Squeeze,
    check_bool,
    check_shape,
    checked_options,
    output_layer,
    positive_int,
    spectral_normalize,
)

SHAPES = "(C, 28, 28), (C, 32, 32) and (C, 64, 64)"
SIDES = (28, 32, 64)


def _supports(shape: Shape) -> bool:
    if len(shape) != 3 or not all(isinstance(s, int) and s >= 1 for s in shape):
        return False
    return shape[1] == shape[2] and shape[1] in SIDES


def _kernel(side: int) -> int:
    return 5 if side == 64 else 4


def _norm_act(channels: int, batch_norm: bool) -> list[nn.Module]:
    return [nn.BatchNorm2d(channels), nn.ReLU()] if batch_norm else [nn.ReLU()]


def _body(shape: Shape, width: int, batch_norm: bool) -> tuple[nn.Sequential, int]:
    """Encoder body (B, C, S, S) → (B, 8w·s·s) with s = 2 (S = 28, 32) or 4 (S = 64); returns it
    and its number of output features."""
    c, side, _ = shape
    k = _kernel(side)
    layers: list[nn.Module] = []
    if side == 28:
        layers.append(nn.ZeroPad2d(2))  # (B, C, 32, 32)
    channels = c
    for i in range(4):  # S → S/2 → S/4 → S/8 → S/16
        out = width * 2**i
        # k=4, padding 1 and k=5, padding 2 both halve an even side exactly
        layers.append(nn.Conv2d(channels, out, k, stride=2, padding=(k - 1) // 2))
        layers += _norm_act(out, batch_norm)
        channels = out
    s = 4 if side == 64 else 2
    layers.append(nn.Flatten())  # (B, 8w·s·s)
    return nn.Sequential(*layers), channels * s * s


class CenterCrop(nn.Module):
    """(B, C, H, W) → (B, C, H − 2m, W − 2m): drop ``margin`` pixels on each side."""

    def __init__(self, margin: int) -> None:
        super().__init__()
        self.margin = margin

    def forward(self, x: Tensor) -> Tensor:
        m = self.margin
        return x[..., m : x.shape[-2] - m, m : x.shape[-1] - m]


class RAEDecoder(nn.Module):
    """Latents (B, D) → likelihood parameters (B, k·C, S, S) for S in 28, 32, 64."""

    def __init__(
        self,
        latent_dim: int,
        shape: Shape,
        param_channels: int,
        width: int,
        batch_norm: bool,
        output_activation: str = "identity",
    ) -> None:
        super().__init__()
        c, side, _ = shape
        k = _kernel(side)
        self.start = (8 * width, 8, 8)
        self.dense = nn.Linear(latent_dim, 8 * width * 8 * 8)
        widths = [4 * width, 2 * width] + ([width] if side == 64 else [])
        layers: list[nn.Module] = [nn.ReLU()]
        channels = 8 * width
        for out in widths:  # 8 → 16 → 32 (→ 64)
            # k=4: (S−1)·2 − 2 + 4 = 2S; k=5: (S−1)·2 − 4 + 5 + 1 = 2S
            pad = (k - 1) // 2
            layers.append(nn.ConvTranspose2d(channels, out, k, 2, pad, output_padding=k % 2))
            layers += _norm_act(out, batch_norm)
            channels = out
        before, after = (k - 1) // 2, k // 2  # TensorFlow "same": the extra pixel goes after
        layers += [
            nn.ZeroPad2d((before, after, before, after)),
            nn.Conv2d(channels, param_channels * c, k),  # (B, k·C, 32 or 64, ·)
        ]
        if side == 28:
            layers.append(CenterCrop(2))  # (B, k·C, 28, 28)
        layers.append(output_layer(output_activation))
        self.body = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        h = self.dense(z).reshape(z.shape[0], *self.start)  # (B, 8w, 8, 8)
        return self.body(h)  # (B, k·C, S, S)


@checked_options
def build_encoder(
    shape: Shape, out_features: int, *, width: int = 128, batch_norm: bool = True
) -> nn.Module:
    """Images (B, C, S, S) → features (B, out_features): four stride-2 convs with w, 2w, 4w, 8w
    channels (batch norm, ReLU), flatten, dense head."""
    shape = check_shape("rae", shape, _supports, SHAPES)
    out_features = positive_int("out_features", out_features)
    body, features = _body(
        shape, positive_int("width", width), check_bool("batch_norm", batch_norm)
    )
    return nn.Sequential(body, nn.Linear(features, out_features))  # (B, out_features)


@checked_options
def build_decoder(
    latent_dim: int,
    shape: Shape,
    param_channels: int = 1,
    *,
    width: int = 128,
    batch_norm: bool = True,
    spectral_norm: bool = False,
    output_activation: str = "identity",
) -> nn.Module:
    """Latents (B, latent_dim) → parameters (B, param_channels·C, S, S): dense to (8w, 8, 8),
    stride-2 transposed convs to 32×32 (64×64), a stride-1 conv to the channels, then
    ``output_activation`` (identity, sigmoid or tanh). With ``spectral_norm`` every weight is
    spectrally normalised (the RAE-SN decoder)."""
    shape = check_shape("rae", shape, _supports, SHAPES)
    decoder = RAEDecoder(
        positive_int("latent_dim", latent_dim),
        shape,
        positive_int("param_channels", param_channels),
        positive_int("width", width),
        check_bool("batch_norm", batch_norm),
        output_activation,
    )
    if check_bool("spectral_norm", spectral_norm):
        spectral_normalize(decoder)
    return decoder


@checked_options
def build_critic(
    shape: Shape, *, width: int = 128, batch_norm: bool = False, spectral_norm: bool = False
) -> nn.Module:
    """Images (B, C, S, S) → scores (B,): the encoder body (without batch norm by default) and a
    1-unit dense head. ``spectral_norm`` normalises every weight."""
    shape = check_shape("rae", shape, _supports, SHAPES)
    batch_norm = check_bool("batch_norm", batch_norm)
    if check_bool("spectral_norm", spectral_norm) and batch_norm:
        raise ConfigError(
            "rae critic: spectral_norm with batch_norm gives no Lipschitz bound; "
            "set batch_norm=False"
        )
    body, features = _body(shape, positive_int("width", width), batch_norm)
    net = nn.Sequential(body, nn.Linear(features, 1))  # (B, 1)
    if spectral_norm:
        spectral_normalize(net)
    return nn.Sequential(net, Squeeze())  # (B,)


ARCHITECTURES.add(
    "rae",
    Architecture(
        name="rae",
        description="RAE conv nets (Ghosh et al. 2019) used by LDC-VAE; 28×28 padded to 32×32",
        encoder=build_encoder,
        decoder=build_decoder,
        critic=build_critic,
        supports=_supports,
        shapes=SHAPES,
    ),
)

__all__ = ["CenterCrop", "RAEDecoder", "build_critic", "build_decoder", "build_encoder"]
