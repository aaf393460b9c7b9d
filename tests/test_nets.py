"""Contract tests for the network families, parametrised over the architecture registry."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from latentgap.errors import ConfigError
from latentgap.nets import (
    ARCHITECTURES,
    build_critic,
    build_decoder,
    build_encoder,
    get_architecture,
)

# Small nets per family, to keep the tests fast.
SMALL = {"mlp": {"hidden": (16, 8)}, "resnet": {"width": 4}, "rae": {"width": 8}}
SHAPES = {
    "mlp": [(1, 28, 28), (3, 32, 32), (1, 1, 2)],
    "resnet": [(1, 28, 28), (3, 32, 32), (2, 8, 12)],
    "rae": [(1, 28, 28), (3, 32, 32), (3, 64, 64)],
}
UNSUPPORTED = {"mlp": (0, 28, 28), "resnet": (1, 30, 28), "rae": (1, 48, 48)}
CASES = [(name, shape) for name in SHAPES for shape in SHAPES[name]]


def test_registry_holds_every_family() -> None:
    assert ARCHITECTURES.names() == sorted(SHAPES)


@pytest.mark.parametrize(("name", "shape"), CASES)
def test_output_shapes(name: str, shape: tuple[int, int, int]) -> None:
    torch.manual_seed(0)
    opts = SMALL[name]
    b, d, k = 3, 5, 2
    x = torch.randn(b, *shape)
    encoder = build_encoder(name, shape, 2 * d, **opts)
    decoder = build_decoder(name, d, shape, k, **opts)
    critic = build_critic(name, shape, **opts)
    assert encoder(x).shape == (b, 2 * d)
    assert decoder(torch.randn(b, d)).shape == (b, k * shape[0], *shape[1:])
    assert critic(x).shape == (b,)
    for net in (encoder, decoder, critic):
        assert all(p.dtype == torch.float32 for p in net.parameters())


def _check_all_grads(net: nn.Module, out: torch.Tensor) -> None:
    # A random projection: a plain sum can be blind to parameters before a batch norm.
    (out * torch.randn_like(out)).sum().backward()
    for pname, p in net.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("name", sorted(SHAPES))
@pytest.mark.parametrize("role", ["encoder", "decoder", "critic"])
def test_gradients_reach_every_parameter(name: str, role: str) -> None:
    torch.manual_seed(1)
    shape = SHAPES[name][0]
    opts = SMALL[name]
    x = torch.randn(4, *shape)
    if role == "encoder":
        net = build_encoder(name, shape, 6, **opts)
        out = net(x)
    elif role == "decoder":
        net = build_decoder(name, 3, shape, 1, **opts)
        out = net(torch.randn(4, 3))
    else:
        net = build_critic(name, shape, spectral_norm=True, **opts)
        out = net(x)
    _check_all_grads(net, out)


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_unsupported_shape_lists_supported_shapes(name: str) -> None:
    shape = UNSUPPORTED[name]
    arch = ARCHITECTURES.get(name)
    assert not arch.supports(shape)
    with pytest.raises(ConfigError, match="supports") as info:
        build_encoder(name, shape, 4)
    assert arch.shapes in str(info.value)
    # the builders check too when called directly, not only through get_architecture
    with pytest.raises(ConfigError, match="supports"):
        arch.critic(shape, **SMALL[name])
    with pytest.raises(ConfigError, match="supports"):
        arch.decoder(2, shape, 1, **SMALL[name])


def test_unknown_architecture_lists_valid_names() -> None:
    with pytest.raises(ConfigError) as info:
        get_architecture("vgg", (1, 28, 28))
    for name in ("mlp", "resnet", "rae"):
        assert name in str(info.value)


@pytest.mark.parametrize(
    ("name", "role", "options", "match"),
    [
        ("mlp", "encoder", {"widht": 3}, "valid options: hidden, activation"),
        ("mlp", "encoder", {"activation": "gelu"}, "choose one of: leaky_relu, relu, softplus"),
        ("mlp", "decoder", {"hidden": (10, 0)}, "hidden width"),
        ("mlp", "critic", {"hidden": 10}, "sequence"),
        ("resnet", "encoder", {"width": 0}, "width"),
        ("resnet", "encoder", {"spectral_norm": True}, "valid options: width"),
        ("resnet", "critic", {"spectral_norm": 1}, "true or false"),
        ("rae", "decoder", {"width": 2.5}, "width"),
        ("rae", "critic", {"spectral_norm": True, "batch_norm": True}, "Lipschitz"),
    ],
)
def test_invalid_options_raise_config_error(name, role, options, match) -> None:
    shape = SHAPES[name][0]
    with pytest.raises(ConfigError, match=match):
        if role == "encoder":
            build_encoder(name, shape, 4, **options)
        elif role == "decoder":
            build_decoder(name, 2, shape, 1, **options)
        else:
            build_critic(name, shape, **options)


@pytest.mark.parametrize("bad", [{"out_features": 0}, {"out_features": True}])
def test_invalid_sizes_raise_config_error(bad: dict) -> None:
    with pytest.raises(ConfigError, match="out_features"):
        build_encoder("mlp", (1, 4, 4), **bad)
    with pytest.raises(ConfigError, match="latent_dim"):
        build_decoder("resnet", 0, (1, 4, 4))
    with pytest.raises(ConfigError, match="param_channels"):
        build_decoder("rae", 2, (1, 32, 32), 0, width=2)


def _largest_singular_values(net: nn.Module) -> list[float]:
    """σ_max of every spectrally normalised weight, in the matrix view that spectral_norm uses."""
    sigmas = []
    for layer in net.modules():
        if hasattr(layer, "parametrizations") and "weight" in layer.parametrizations:
            dim = layer.parametrizations.weight[0].dim
            matrix = layer.weight.detach().movedim(dim, 0).flatten(1)
            sigmas.append(torch.linalg.matrix_norm(matrix, ord=2).item())
    return sigmas


@pytest.mark.parametrize(
    ("name", "role"),
    [("mlp", "critic"), ("resnet", "critic"), ("rae", "critic"), ("rae", "decoder")],
)
def test_spectral_norm_gives_unit_singular_values(name: str, role: str) -> None:
    torch.manual_seed(2)
    shape = SHAPES[name][0]
    if role == "critic":
        net = build_critic(name, shape, spectral_norm=True, **SMALL[name])
        inputs = torch.randn(2, *shape)
    else:
        net = build_decoder(name, 3, shape, 1, spectral_norm=True, **SMALL[name])
        inputs = torch.randn(2, 3)
    net.train()
    layers = [m for m in net.modules() if hasattr(m, "parametrizations")]
    with torch.no_grad():
        net(inputs)  # a training-mode forward runs one power iteration per weight ...
        for _ in range(100):  # ... as does reading the weight; converge without the convs
            for layer in layers:
                layer.weight  # noqa: B018
    net.eval()
    sigmas = _largest_singular_values(net)
    n_weights = sum(
        isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)) for m in net.modules()
    )
    assert len(sigmas) == n_weights > 0
    # The power-iteration estimate never exceeds the true sigma_max, so sigma >= 1 up to rounding.
    assert min(sigmas) > 1 - 1e-4
    assert max(sigmas) < 1.01


def _count(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


# Default MNIST nets: (latent dim, encoder range, decoder range, critic range) in parameters.
MNIST_DEFAULTS = {
    "mlp": (40, (6e5, 8e5), (6e5, 8e5), (6e5, 8e5)),  # 784-500-500-z40: 683,080 / 663,784
    "resnet": (13, (1e5, 3e5), (1e5, 3e5), (2e5, 4e5)),
    "rae": (16, (1e7, 1.3e7), (1e7, 1.3e7), (1e7, 1.3e7)),  # tens of millions with width 128
}


@pytest.mark.parametrize("name", sorted(MNIST_DEFAULTS))
def test_default_mnist_nets(name: str) -> None:
    torch.manual_seed(3)
    shape = (1, 28, 28)
    d, enc_range, dec_range, critic_range = MNIST_DEFAULTS[name]
    encoder = build_encoder(name, shape, 2 * d)
    decoder = build_decoder(name, d, shape)
    critic = build_critic(name, shape)
    counts = [_count(encoder), _count(decoder), _count(critic)]
    print(f"{name}: encoder {counts[0]:,}, decoder {counts[1]:,}, critic {counts[2]:,}")
    for count, (lo, hi) in zip(counts, (enc_range, dec_range, critic_range), strict=True):
        assert lo <= count <= hi
    x = torch.rand(2, *shape)
    with torch.no_grad():
        assert encoder(x).shape == (2, 2 * d)
        assert decoder(torch.randn(2, d)).shape == (2, 1, 28, 28)
        assert critic(x).shape == (2,)


@pytest.mark.parametrize("arch, options", [("mlp", {"hidden": [8]}), ("rae", {"width": 2})])
def test_decoder_output_activation(arch, options):
    """sigmoid → (0, 1), tanh → (−1, 1); the option adds no parameters, so checkpoints of either
    load into the other; an unknown name is a ConfigError."""
    from latentgap.nets import build_decoder

    torch.manual_seed(0)
    shape = (1, 28, 28)
    z = 30 * torch.randn(4, 3)
    raw = build_decoder(arch, 3, shape, 1, **options)
    for name, lo, hi in (("sigmoid", 0.0, 1.0), ("tanh", -1.0, 1.0)):
        net = build_decoder(arch, 3, shape, 1, **options, output_activation=name)
        net.load_state_dict(raw.state_dict())
        out = net(z)
        assert out.shape == (4, 1, 28, 28) and out.min() >= lo and out.max() <= hi
        expected = torch.sigmoid(raw(z)) if name == "sigmoid" else torch.tanh(raw(z))
        torch.testing.assert_close(out, expected)
    with pytest.raises(ConfigError, match="output_activation"):
        build_decoder(arch, 3, shape, 1, **options, output_activation="relu")
