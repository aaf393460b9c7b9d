"""The latent GAN of VAEPP: a WGAN-div on the latent space that models the aggregate posterior
q_φ(z) and supplies the start points z₀ of MALA (Section 4.3 of the VAEPP paper).

Networks (the authors' code): an MLP generator ε → z with 5 hidden layers of 40 units and an
MLP critic z → score with 6 hidden layers of 40 units, leaky ReLU (slope 0.2) between layers;
ε ~ N(0, I) of ``noise_dim`` (default ``latent_dim``). Training: 5 critic steps per generator
step, Adam(lr 1e-4, betas (0.5, 0.999)) for both; the constants below record this for the
trainer, which owns the optimisers and the schedule.

Initialisation: Kaiming-normal weights for the activation (zero biases), which keep the
activations' scale through the layers, so G(ε) starts at about the scale of ε ~ N(0, I), near
the N(0, I)-like aggregate posterior of a VAE. PyTorch's default (uniform, gain 1/√3 in
variance per layer) starts the 6-layer generator collapsed to a point (output std ≈ 0.005),
and the GAN then spends most of its early training spreading it out. (The authors' TensorFlow
default, Glorot-uniform, is also close to variance-preserving.)

Sign convention (the same as VAEPP's data critic, Algorithm 1 line 13, where smaller D means
more real):

- the critic minimises ``E D(real) − E D(G(ε)) + penalty``;
- the generator minimises ``E D(G(ε))``, pulling its samples to where D is small.

``terms["wasserstein"] = E D(G(ε)) − E D(real)`` is then the critic's estimate of the
Wasserstein-1 distance (non-negative once the critic is trained; it shrinks as G improves).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from latentgap.nets.mlp import Squeeze, activation_layer, positive_int
from latentgap.penalties import build_penalty

CRITIC_STEPS = 5  # critic updates per generator update
LEARNING_RATE = 1e-4
BETAS = (0.5, 0.999)


def _mlp(sizes: Sequence[int], activation: str) -> nn.Sequential:
    """Linear ``sizes[0] → … → sizes[-1]`` with ``activation`` between (not after) layers,
    Kaiming-normal weights for that activation and zero biases (see the module docstring)."""
    slope = 0.2 if activation == "leaky_relu" else 0.0  # softplus: treated like ReLU
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        if i > 0:
            layers.append(activation_layer(activation))
        linear = nn.Linear(n_in, n_out)
        nn.init.kaiming_normal_(linear.weight, a=slope, nonlinearity="leaky_relu")
        nn.init.zeros_(linear.bias)
        layers.append(linear)
    return nn.Sequential(*layers)


class LatentGAN(nn.Module):
    """A WGAN-div on latents: ``generator`` ε (n, noise_dim) → z (n, latent_dim) and ``critic``
    z (n, latent_dim) → scores (n,), trained with :meth:`critic_loss` and
    :meth:`generator_loss` (see the module docstring for the sign convention).

    ``penalty`` names a gradient penalty of :mod:`latentgap.penalties` (VAEPP uses
    ``wgan-div-1``, k = 2, p = 6); ``penalty_options`` overrides its constants.
    """

    def __init__(
        self,
        latent_dim: int,
        noise_dim: int | None = None,
        *,
        generator_hidden: Sequence[int] = (40,) * 5,
        critic_hidden: Sequence[int] = (40,) * 6,
        activation: str = "leaky_relu",
        penalty: str = "wgan-div-1",
        penalty_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.latent_dim = positive_int("latent_dim", latent_dim)
        self.noise_dim = positive_int("noise_dim", latent_dim if noise_dim is None else noise_dim)
        g_hidden = [positive_int("generator width", h) for h in generator_hidden]
        c_hidden = [positive_int("critic width", h) for h in critic_hidden]
        self.generator = _mlp([self.noise_dim, *g_hidden, self.latent_dim], activation)
        self.critic = nn.Sequential(_mlp([self.latent_dim, *c_hidden, 1], activation), Squeeze())
        self.penalty_name = penalty
        self.penalty = build_penalty(penalty, **(penalty_options or {}))

    # --- parameters --------------------------------------------------------------------------
    def generator_parameters(self) -> list[nn.Parameter]:
        return list(self.generator.parameters())

    def critic_parameters(self) -> list[nn.Parameter]:
        return list(self.critic.parameters())

    # --- generation --------------------------------------------------------------------------
    def _device_dtype(self) -> tuple[torch.device, torch.dtype]:
        p = next(self.generator.parameters())
        return p.device, p.dtype

    def noise(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """ε ~ N(0, I): (n, noise_dim), on the module's device and dtype."""
        device, dtype = self._device_dtype()
        return torch.randn(n, self.noise_dim, generator=generator, device=device, dtype=dtype)

    def generate(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """G(ε) for n fresh ε, differentiable w.r.t. the generator: (n, latent_dim)."""
        return self.generator(self.noise(n, generator))  # (n, latent_dim)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n latents z₀ = G(ε), detached: (n, latent_dim) (the start points of MALA)."""
        return self.generate(n, generator)

    def forward(self, z: Tensor) -> Tensor:
        """The critic's scores D(z): (n, latent_dim) → (n,)."""
        return self.critic(z)

    # --- losses --------------------------------------------------------------------------------
    def critic_loss(
        self, real_z: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """``E D(real) − E D(G(ε)) + penalty(real, G(ε))`` with one ε per real latent.

        ``real_z`` (B, latent_dim) are codes of the frozen VAE (posterior means or samples);
        they and the fakes are detached, so the gradient reaches the critic only. Terms:
        ``critic_real``, ``critic_fake``, ``wasserstein`` (E D(fake) − E D(real)), ``penalty``.
        """
        if real_z.dim() != 2 or real_z.shape[1] != self.latent_dim:
            raise ValueError(
                f"expected latents (B, {self.latent_dim}), got shape {tuple(real_z.shape)}"
            )
        real = real_z.detach()  # (B, D)
        with torch.no_grad():
            fake = self.generate(real.shape[0], generator)  # (B, D)
        scores = self.critic(torch.cat([real, fake]))  # (2B,): one pass for both sets
        d_real, d_fake = scores[: real.shape[0]].mean(), scores[real.shape[0] :].mean()
        penalty = self.penalty(self.critic, real, fake, generator=generator)
        loss = d_real - d_fake + penalty
        terms = {
            "critic_real": d_real.detach(),
            "critic_fake": d_fake.detach(),
            "wasserstein": (d_fake - d_real).detach(),
            "penalty": penalty.detach(),
        }
        return loss, terms

    def generator_loss(
        self, n: int, generator: torch.Generator | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """``E D(G(ε))`` over n fresh ε: minimised by the generator (smaller D = more real).
        The critic's parameters also receive gradients here; step only the generator's."""
        score = self.critic(self.generate(n, generator)).mean()
        return score, {"critic_fake": score.detach()}

    def extra_repr(self) -> str:
        return (
            f"latent_dim={self.latent_dim}, noise_dim={self.noise_dim}, "
            f"penalty={self.penalty_name!r}"
        )


__all__ = ["BETAS", "CRITIC_STEPS", "LEARNING_RATE", "LatentGAN"]
