"""The latent GAN of VAEPP (Section 4.3): losses, gradient flow, and a short training run that
must reach a 2-D Gaussian target."""

from __future__ import annotations

import pytest
import torch

from latentgap.errors import ConfigError
from latentgap.samplers import LatentGAN
from latentgap.samplers.latent_gan import BETAS, CRITIC_STEPS

MU = torch.tensor([2.0, -1.0])
STD = torch.tensor([0.5, 1.5])


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: see conftest


def target(n: int, generator: torch.Generator) -> torch.Tensor:
    return MU + STD * torch.randn(n, 2, generator=generator)  # (n, 2)


def test_shapes_parameters_and_reproducible_samples() -> None:
    torch.manual_seed(0)
    gan = LatentGAN(3, noise_dim=5)
    z = gan.sample(7, generator=torch.Generator().manual_seed(1))
    assert z.shape == (7, 3) and not z.requires_grad
    torch.testing.assert_close(z, gan.sample(7, generator=torch.Generator().manual_seed(1)))
    assert gan(z).shape == (7,)
    g_ids = {id(p) for p in gan.generator_parameters()}
    c_ids = {id(p) for p in gan.critic_parameters()}
    assert not g_ids & c_ids and g_ids | c_ids == {id(p) for p in gan.parameters()}
    # VAEPP's nets: 5 hidden layers of 40 in G, 6 in the critic
    assert sum(isinstance(m, torch.nn.Linear) for m in gan.generator.modules()) == 6
    assert sum(isinstance(m, torch.nn.Linear) for m in gan.critic.modules()) == 7
    # the generator starts at the scale of its noise, not collapsed to a point
    assert 0.3 < gan.sample(2000).std(0).min() < 3.0


def test_losses_send_gradients_to_their_own_network_only() -> None:
    torch.manual_seed(0)
    gan = LatentGAN(2)
    real = target(64, torch.Generator().manual_seed(0)).requires_grad_(True)
    loss, terms = gan.critic_loss(real)
    loss.backward()
    assert set(terms) == {"critic_real", "critic_fake", "wasserstein", "penalty"}
    assert real.grad is None  # the VAE's codes are detached
    assert all(p.grad is None for p in gan.generator_parameters())
    assert all(p.grad is not None for p in gan.critic_parameters())
    expected = terms["critic_real"] - terms["critic_fake"] + terms["penalty"]
    torch.testing.assert_close(loss.detach(), expected)
    gan.zero_grad(set_to_none=True)
    g_loss, g_terms = gan.generator_loss(32)
    g_loss.backward()
    assert torch.isfinite(g_loss) and set(g_terms) == {"critic_fake"}
    assert all(p.grad is not None for p in gan.generator_parameters())


def test_options_and_bad_input() -> None:
    gan = LatentGAN(2, penalty="wgan-gp", penalty_options={"lam": 5.0})
    loss, terms = gan.critic_loss(torch.randn(8, 2))
    assert torch.isfinite(loss) and terms["penalty"] > 0
    with pytest.raises(ConfigError, match="gradient penalty"):
        LatentGAN(2, penalty="gp")
    with pytest.raises(ConfigError, match="latent_dim"):
        LatentGAN(0)
    with pytest.raises(ValueError, match=r"\(B, 2\)"):
        gan.critic_loss(torch.randn(8, 3))


def test_critic_loss_decreases_early() -> None:
    """With the generator fixed, a few critic steps separate real from fake: the loss on a
    held-out batch drops well below its initial value."""
    torch.manual_seed(1)
    gan = LatentGAN(2)
    opt = torch.optim.Adam(gan.critic_parameters(), lr=1e-3, betas=BETAS)
    data = torch.Generator().manual_seed(1)
    held_out = target(512, data)

    def held_out_loss() -> float:
        return gan.critic_loss(held_out, generator=torch.Generator().manual_seed(2))[0].item()

    before = held_out_loss()
    for _ in range(30):
        loss, _ = gan.critic_loss(target(128, data))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert held_out_loss() < before - 0.5


def test_training_reaches_a_gaussian_target() -> None:
    """Train with VAEPP's schedule (5 critic steps per generator step, Adam betas (0.5, 0.999))
    on N((2, −1), diag(0.5², 1.5²)), shortened for CPU: 200 generator steps at lr 1e-3, then
    150 at the paper's 1e-4 to damp the WGAN oscillation. Tolerance 0.25 on each mean and std:
    the sampling error of the 20,000-sample check is < 0.03, the rest is the GAN's own error
    after a finite training time (its equilibrium oscillates); over 18 seeds during development
    the largest error of this recipe was 0.20, while the untrained generator's mean is off by
    about 2."""
    torch.manual_seed(0)
    gan = LatentGAN(2)
    opts = {
        "critic": torch.optim.Adam(gan.critic_parameters(), lr=1e-3, betas=BETAS),
        "generator": torch.optim.Adam(gan.generator_parameters(), lr=1e-3, betas=BETAS),
    }
    data = torch.Generator().manual_seed(0)
    for it in range(350):
        if it == 200:
            for opt in opts.values():
                for group in opt.param_groups:
                    group["lr"] = 1e-4
        for _ in range(CRITIC_STEPS):
            loss, terms = gan.critic_loss(target(128, data))
            opts["critic"].zero_grad()
            loss.backward()
            opts["critic"].step()
        g_loss, _ = gan.generator_loss(128)
        opts["generator"].zero_grad()
        g_loss.backward()
        opts["generator"].step()
        assert torch.isfinite(loss) and torch.isfinite(g_loss)
    assert all(torch.isfinite(v) for v in terms.values())

    z = gan.sample(20_000, generator=torch.Generator().manual_seed(3))
    assert (z.mean(0) - MU).abs().max() < 0.25, z.mean(0)
    assert (z.std(0) - STD).abs().max() < 0.25, z.std(0)
