"""Own encoder, decoder and critic for latentgap: the README's "Own data, own networks" example.

Name the family on the command line as ``--arch mynets:small_conv`` (with this file in the
current directory or on PYTHONPATH); config.json records that name, so ``evaluate``, ``sample``,
``export`` and ``latentgap.load`` rebuild the same nets in any later process.

Contracts (``latentgap.nets.base``): the encoder maps images (B, C, H, W) to ``out_features``
numbers (a Gaussian's location and log-scale, 2 × latent_dim); the decoder maps latents (B, D) to
the likelihood's parameter maps (B, k·C, H, W); the critic (VAEPP only) maps images to scores
(B,). Keyword options come from ``model_options.arch_options`` (``critic_options``).
"""

from torch import nn

from latentgap.nets import Architecture


def encoder(shape, out_features, width=32):
    c, h, w = shape
    return nn.Sequential(
        nn.Conv2d(c, width, 3, stride=2, padding=1),
        nn.SiLU(),
        nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
        nn.SiLU(),
        nn.AdaptiveAvgPool2d(4),
        nn.Flatten(),
        nn.Linear(2 * width * 16, out_features),
    )


def decoder(latent_dim, shape, param_channels, width=32):
    c, h, w = shape
    return nn.Sequential(
        nn.Linear(latent_dim, 8 * width),
        nn.SiLU(),
        nn.Linear(8 * width, param_channels * c * h * w),
        nn.Unflatten(1, (param_channels * c, h, w)),
    )


def critic(shape, width=32):
    c, h, w = shape
    return nn.Sequential(
        nn.Conv2d(c, width, 3, stride=2, padding=1),
        nn.LeakyReLU(0.2),
        nn.AdaptiveAvgPool2d(4),
        nn.Flatten(),
        nn.Linear(width * 16, 1),
        nn.Flatten(0),
    )


small_conv = Architecture(
    "small-conv",
    "two stride-2 convolutions in, an MLP out; any image size",
    encoder,
    decoder,
    critic,
)
