"""Gradient penalties (VAEPP Table 3): closed forms on linear and quadratic critics, gradient
flow (critic only, finite differences), and the registry."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from latentgap.errors import ConfigError
from latentgap.penalties import (
    PENALTIES,
    build_penalty,
    interpolates,
    wgan_div_1,
    wgan_div_2,
    wgan_gp,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: see conftest


ALL = ["wgan-div-1", "wgan-div-2", "wgan-gp"]


class Linear(nn.Module):
    """D(x) = w·x + c on (B, ...) inputs: ∇D = w everywhere."""

    def __init__(self, w: Tensor, c: float = 0.3) -> None:
        super().__init__()
        self.w = nn.Parameter(w.clone())
        self.c = c

    def forward(self, x: Tensor) -> Tensor:
        return (x * self.w).flatten(1).sum(1) + self.c  # (B,)


class Quadratic(nn.Module):
    """D(x) = Σ a_i x_i²: ∇D(x) = 2 a ⊙ x."""

    def __init__(self, a: Tensor) -> None:
        super().__init__()
        self.a = nn.Parameter(a.clone())

    def forward(self, x: Tensor) -> Tensor:
        return (self.a * x.square()).sum(1)  # (B,)


def _pair(shape: tuple[int, ...], seed: int = 0) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64), torch.randn(
        shape, generator=g, dtype=torch.float64
    )


def test_registry_names_and_unknown_name() -> None:
    assert PENALTIES.names() == ALL
    with pytest.raises(ConfigError, match="wgan-gp"):
        build_penalty("wgan-dvi")


def test_build_penalty_checks_constants() -> None:
    with pytest.raises(ConfigError, match="valid: k, p"):
        build_penalty("wgan-div-1", lam=10)
    with pytest.raises(ConfigError, match="lam"):
        build_penalty("wgan-gp", lam=-1.0)
    with pytest.raises(ConfigError, match="p must be"):
        build_penalty("wgan-div-2", p=0.5)
    with pytest.raises(ConfigError, match="finite"):
        build_penalty("wgan-div-2", k="2")


@pytest.mark.parametrize("shape", [(5, 3), (4, 1, 2, 2)])
def test_linear_critic_closed_forms(shape: tuple[int, ...]) -> None:
    real, fake = _pair(shape)
    w = torch.linspace(-0.7, 0.9, real[0].numel(), dtype=torch.float64).reshape(shape[1:])
    critic = Linear(w)
    norm = w.norm().item()
    assert wgan_gp(critic, real, fake).item() == pytest.approx(10 * (norm - 1) ** 2, rel=1e-12)
    assert wgan_div_1(critic, real, fake).item() == pytest.approx(2 * norm**6, rel=1e-12)
    assert wgan_div_2(critic, real, fake[:2]).item() == pytest.approx(2 * norm**6, rel=1e-12)
    # constants through the registry
    gp = build_penalty("wgan-gp", lam=3.0)
    assert gp(critic, real, fake).item() == pytest.approx(3 * (norm - 1) ** 2, rel=1e-12)
    div = build_penalty("wgan-div-1", k=0.5, p=2)
    assert div(critic, real, fake).item() == pytest.approx(0.5 * norm**2, rel=1e-12)


def test_interpolates_use_one_uniform_per_example_from_the_generator() -> None:
    real, fake = _pair((6, 2, 3))
    u = torch.rand(6, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    x_hat = interpolates(real, fake, torch.Generator().manual_seed(7))
    expected = u[:, None, None] * real + (1 - u[:, None, None]) * fake
    torch.testing.assert_close(x_hat, expected)


def test_quadratic_critic_matches_closed_form_at_the_interpolates() -> None:
    real, fake = _pair((8, 3), seed=1)
    a = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    critic = Quadratic(a)
    u = torch.rand(8, generator=torch.Generator().manual_seed(3), dtype=torch.float64)[:, None]
    x_hat = u * real + (1 - u) * fake  # (B, 3)
    norms = (2 * a * x_hat).norm(dim=1)  # (B,)
    gp = wgan_gp(critic, real, fake, generator=torch.Generator().manual_seed(3))
    div1 = wgan_div_1(critic, real, fake, generator=torch.Generator().manual_seed(3))
    assert gp.item() == pytest.approx((10 * (norms - 1) ** 2).mean().item(), rel=1e-12)
    assert div1.item() == pytest.approx((2 * norms**6).mean().item(), rel=1e-12)
    # div-2 evaluates at the points themselves: the mean of the two set means
    fake3 = fake[:3]
    expected = 0.5 * (
        (2 * (2 * a * real).norm(dim=1) ** 6).mean() + (2 * (2 * a * fake3).norm(dim=1) ** 6).mean()
    )
    assert wgan_div_2(critic, real, fake3).item() == pytest.approx(expected.item(), rel=1e-12)


def _tiny_critic() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1), nn.Flatten(0)).double()


@pytest.mark.parametrize("name", ALL)
def test_penalty_gradient_matches_finite_differences(name: str) -> None:
    critic = _tiny_critic()
    real, fake = _pair((4, 3), seed=2)
    penalty = build_penalty(name)

    def value() -> Tensor:
        return penalty(critic, real, fake, generator=torch.Generator().manual_seed(5))

    weight = critic[0].weight
    (grad,) = torch.autograd.grad(value(), weight)
    assert grad.abs().max() > 1e-6  # the penalty trains the critic
    eps = 1e-6
    numeric = torch.zeros_like(weight)
    with torch.no_grad():
        for idx in [(0, 0), (1, 2), (3, 1), (2, 0)]:
            weight[idx] += eps
            up = value().item()
            weight[idx] -= 2 * eps
            down = value().item()
            weight[idx] += eps
            numeric[idx] = (up - down) / (2 * eps)
            assert grad[idx].item() == pytest.approx(numeric[idx].item(), rel=1e-5, abs=1e-8)


@pytest.mark.parametrize("name", ALL)
def test_no_gradient_flows_into_the_inputs(name: str) -> None:
    decoder = nn.Linear(2, 3).double()
    encoder = nn.Linear(3, 3).double()
    real, fake = _pair((4, 3), seed=4)
    real_codes = encoder(real)  # (B, 3), requires grad
    generated = decoder(fake[:, :2])  # (B, 3), requires grad
    critic = _tiny_critic()
    build_penalty(name)(critic, real_codes, generated).backward()
    assert decoder.weight.grad is None and encoder.weight.grad is None
    # the output bias does not change ∇ₓD; the weights do
    assert critic[0].weight.grad is not None and critic[2].weight.grad is not None


def test_flat_critic_gives_finite_gradients() -> None:
    critic = Linear(torch.zeros(3, dtype=torch.float64))
    real, fake = _pair((4, 3))
    for name in ALL:
        critic.w.grad = None
        value = build_penalty(name)(critic, real, fake)
        value.backward()
        assert torch.isfinite(critic.w.grad).all()
        assert value.item() == pytest.approx(10.0 if name == "wgan-gp" else 0.0)


def test_mismatched_shapes_raise() -> None:
    real, fake = _pair((4, 3))
    with pytest.raises(ValueError, match="same shape"):
        wgan_gp(Linear(torch.ones(3)), real, fake[:3])
    with pytest.raises(ValueError, match="same shape"):
        wgan_div_2(Linear(torch.ones(3)), real, torch.zeros(4, 2, dtype=torch.float64))
