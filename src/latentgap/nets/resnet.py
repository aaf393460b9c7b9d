"""The small pre-activation ResNets of the VAEPP reference code (28×28 data; any H, W divisible
by 4).

Residual blocks are pre-activation (He et al. 2016): ``act → conv → act → conv`` plus a
shortcut, with leaky ReLU (slope 0.2), 3×3 kernels and no normalisation. The shortcut is the
identity when the shape is kept, else a 1×1 convolution (transposed for upsampling) with the
block's stride. A downsampling block changes shape in its first convolution, an upsampling
block in its last. As in pre-activation ResNets, one more activation precedes the dense head
(encoder, critic) and the final 1×1 convolution (decoder).

With base width ``w`` (16 in the paper):

- encoder: blocks w → 2w (stride 2) → 4w (stride 2), dense head to ``out_features``;
- decoder: dense to (4w, H/4, W/4), blocks 4w (×2 upsample) → 2w (×2) → w, 1×1 conv to k·C;
- critic: blocks w → 2w (s2) → 4w (s2), dense 4w, dense 1.

L2 weight decay (2e-4 in the paper) is the trainer's business. Weights keep PyTorch's default
initialisation.
"""

from __future__ import annotations

from torch import Tensor, nn

from latentgap.nets.base import ARCHITECTURES, Architecture, Shape
from latentgap.nets.mlp import (
    Squeeze,
    check_bool,
    check_shape,
    checked_options,
    positive_int,
    spectral_normalize,
)

SHAPES = "(C, H, W) with H and W divisible by 4, e.g. (1, 28, 28) or (3, 32, 32)"
SLOPE = 0.2


def _supports(shape: Shape) -> bool:
    if len(shape) != 3 or not all(isinstance(s, int) and s >= 1 for s in shape):
        return False
    return shape[1] % 4 == 0 and shape[2] % 4 == 0


class ResidualBlock(nn.Module):
    """Pre-activation residual block (B, C_in, H, W) → (B, C_out, H', W').

    ``stride=2`` with ``upsample=False`` halves H and W (strided first convolution);
    ``stride=2`` with ``upsample=True`` doubles them (transposed last convolution).
    """

    def __init__(
        self, in_channels: int, out_channels: int, stride: int = 1, upsample: bool = False
    ) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        self.act = nn.LeakyReLU(SLOPE)
        if upsample and stride == 2:
            self.conv0: nn.Module = nn.Conv2d(in_channels, in_channels, 3, padding=1)
            self.conv1: nn.Module = nn.ConvTranspose2d(
                in_channels, out_channels, 3, stride=2, padding=1, output_padding=1
            )
            self.shortcut: nn.Module = nn.ConvTranspose2d(
                in_channels, out_channels, 1, stride=2, output_padding=1
            )
        else:
            self.conv0 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1)
            self.conv1 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
            same = in_channels == out_channels and stride == 1
            self.shortcut = (
                nn.Identity() if same else nn.Conv2d(in_channels, out_channels, 1, stride=stride)
            )

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv0(self.act(x))  # (B, C_mid, H', W') or (B, C_in, H, W) when upsampling
        h = self.conv1(self.act(h))  # (B, C_out, H', W')
        return h + self.shortcut(x)  # (B, C_out, H', W')


def _down_body(in_channels: int, width: int) -> nn.Sequential:
    """(B, C, H, W) → (B, 4w, H/4, W/4), activated."""
    return nn.Sequential(
        ResidualBlock(in_channels, width),  # (B, w, H, W)
        ResidualBlock(width, 2 * width, stride=2),  # (B, 2w, H/2, W/2)
        ResidualBlock(2 * width, 4 * width, stride=2),  # (B, 4w, H/4, W/4)
        nn.LeakyReLU(SLOPE),
    )


class ResNetDecoder(nn.Module):
    """Latents (B, D) → likelihood parameters (B, k·C, H, W)."""

    def __init__(self, latent_dim: int, shape: Shape, param_channels: int, width: int) -> None:
        super().__init__()
        c, h, w = shape
        self.start = (4 * width, h // 4, w // 4)
        self.dense = nn.Linear(latent_dim, 4 * width * (h // 4) * (w // 4))
        self.body = nn.Sequential(
            ResidualBlock(4 * width, 4 * width, stride=2, upsample=True),  # (B, 4w, H/2, W/2)
            ResidualBlock(4 * width, 2 * width, stride=2, upsample=True),  # (B, 2w, H, W)
            ResidualBlock(2 * width, width),  # (B, w, H, W)
            nn.LeakyReLU(SLOPE),
        )
        self.head = nn.Conv2d(width, param_channels * c, 1)

    def forward(self, z: Tensor) -> Tensor:
        h = self.dense(z).reshape(z.shape[0], *self.start)  # (B, 4w, H/4, W/4)
        return self.head(self.body(h))  # (B, k·C, H, W)


@checked_options
def build_encoder(shape: Shape, out_features: int, *, width: int = 16) -> nn.Module:
    """Images (B, C, H, W) → features (B, out_features): residual blocks w → 2w (s2) → 4w (s2),
    flatten, dense head (the VAEPP encoder; a model reads μ and log σ off the features)."""
    c, h, w = check_shape("resnet", shape, _supports, SHAPES)
    width = positive_int("width", width)
    out_features = positive_int("out_features", out_features)
    return nn.Sequential(
        _down_body(c, width),  # (B, 4w, H/4, W/4)
        nn.Flatten(),  # (B, 4w·H/4·W/4)
        nn.Linear(4 * width * (h // 4) * (w // 4), out_features),  # (B, out_features)
    )


@checked_options
def build_decoder(
    latent_dim: int, shape: Shape, param_channels: int = 1, *, width: int = 16
) -> nn.Module:
    """Latents (B, latent_dim) → parameters (B, param_channels·C, H, W): dense to
    (4w, H/4, W/4), residual upsampling blocks 4w → 2w → w, 1×1 convolution."""
    shape = check_shape("resnet", shape, _supports, SHAPES)
    return ResNetDecoder(
        positive_int("latent_dim", latent_dim),
        shape,
        positive_int("param_channels", param_channels),
        positive_int("width", width),
    )


@checked_options
def build_critic(shape: Shape, *, width: int = 16, spectral_norm: bool = False) -> nn.Module:
    """Images (B, C, H, W) → scores (B,): residual blocks w → 2w (s2) → 4w (s2), dense 4w,
    dense 1 (the VAEPP critic D). ``spectral_norm`` normalises every weight."""
    c, h, w = check_shape("resnet", shape, _supports, SHAPES)
    width = positive_int("width", width)
    net = nn.Sequential(
        _down_body(c, width),  # (B, 4w, H/4, W/4)
        nn.Flatten(),
        nn.Linear(4 * width * (h // 4) * (w // 4), 4 * width),  # (B, 4w)
        nn.LeakyReLU(SLOPE),
        nn.Linear(4 * width, 1),  # (B, 1)
    )
    if check_bool("spectral_norm", spectral_norm):
        spectral_normalize(net)
    return nn.Sequential(net, Squeeze())  # (B,)


ARCHITECTURES.add(
    "resnet",
    Architecture(
        name="resnet",
        description="small pre-activation ResNets of the VAEPP code (28×28; H, W divisible by 4)",
        encoder=build_encoder,
        decoder=build_decoder,
        critic=build_critic,
        supports=_supports,
        shapes=SHAPES,
    ),
)

__all__ = ["ResNetDecoder", "ResidualBlock", "build_critic", "build_decoder", "build_encoder"]
