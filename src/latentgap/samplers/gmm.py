"""Ex-post density estimation: a full-covariance Gaussian mixture over latent codes.

Ghosh et al. (2020, "From variational to deterministic autoencoders") sample a
deterministic autoencoder by fitting a density to the training codes after training and decoding
draws from it; with 10 full-covariance components this is the "GMM" column of their Table 1 and
of the LDC-VAE paper's Table 1 for the RAE baselines.

The mixture is fitted by EM with scikit-learn (imported lazily: it is an optional dependency),
but it *lives* in torch: weights, means and covariance Cholesky factors are buffers of a small
``nn.Module``, so a model that owns one saves it in its ``state_dict`` as plain tensors (loadable
with ``torch.load(..., weights_only=True)``; no pickled scikit-learn object), and sampling and
scoring are vectorised torch code on any device.

    p(z) = Σ_k w_k N(z; μ_k, L_k L_kᵀ)
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from latentgap.errors import ConfigError

_LOG_2PI = math.log(2.0 * math.pi)


def _sklearn_gaussian_mixture() -> type:
    """scikit-learn's ``GaussianMixture`` class, or a ConfigError saying how to install it."""
    try:
        from sklearn.mixture import GaussianMixture as SkGaussianMixture
    except ImportError:
        raise ConfigError(
            "the ex-post GMM density needs scikit-learn, a dependency of latentgap: "
            "pip install scikit-learn"
        ) from None
    return SkGaussianMixture


class GaussianMixture(nn.Module):
    """A ``components``-component full-covariance Gaussian mixture over R^``dim``.

    Buffers (saved in checkpoints): ``weights`` (K,), ``means`` (K, D), ``scale_tril`` (K, D, D)
    lower-triangular Cholesky factors of the covariances, and ``fitted`` (a 0-dim bool). Before
    :meth:`fit` the mixture is K copies of N(0, I) with ``fitted`` false.
    """

    def __init__(self, components: int, dim: int) -> None:
        super().__init__()
        for name, value in (("components", components), ("dim", dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"GMM {name} must be a positive integer, got {value!r}")
        self.components = components
        self.dim = dim
        self.register_buffer("weights", torch.full((components,), 1.0 / components))
        self.register_buffer("means", torch.zeros(components, dim))
        self.register_buffer("scale_tril", torch.eye(dim).expand(components, dim, dim).clone())
        self.register_buffer("fitted", torch.tensor(False))

    @property
    def is_fitted(self) -> bool:
        return bool(self.fitted)

    # --- fitting ---------------------------------------------------------------------------
    @torch.no_grad()
    def fit(
        self,
        codes: Tensor,
        *,
        seed: int = 0,
        max_iter: int = 200,
        reg_covar: float = 1e-6,
        n_init: int = 1,
    ) -> dict[str, Any]:
        """Fit the mixture to ``codes`` (N, D) by EM (scikit-learn, k-means initialisation,
        float64) and copy the result into the buffers. Returns diagnostics: the mean
        log-likelihood per code, EM iterations and whether EM converged."""
        if codes.ndim != 2 or codes.shape[1] != self.dim:
            raise ValueError(f"codes must be (N, {self.dim}), got {tuple(codes.shape)}")
        if codes.shape[0] < self.components:
            raise ConfigError(
                f"cannot fit a {self.components}-component GMM to {codes.shape[0]} codes; "
                "use more training data or fewer components"
            )
        if not torch.isfinite(codes).all():
            raise ValueError("codes contain NaN or infinite values; the GMM cannot be fitted")
        sk = _sklearn_gaussian_mixture()(
            n_components=self.components,
            covariance_type="full",
            max_iter=max_iter,
            reg_covar=reg_covar,
            n_init=n_init,
            random_state=seed,
        )
        data = codes.detach().to("cpu", torch.float64).numpy()
        sk.fit(data)
        covariances = torch.from_numpy(sk.covariances_)  # (K, D, D) float64
        scale_tril = torch.linalg.cholesky(covariances)
        self.weights.copy_(torch.from_numpy(sk.weights_))
        self.means.copy_(torch.from_numpy(sk.means_))
        self.scale_tril.copy_(scale_tril)
        self.fitted.fill_(True)
        return {
            "gmm_log_likelihood": float(sk.score(data)),
            "gmm_iterations": int(sk.n_iter_),
            "gmm_converged": bool(sk.converged_),
        }

    # --- sampling and scoring --------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` draws (n, D): a component k ~ Categorical(w), then μ_k + L_k ε, ε ~ N(0, I)."""
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)  # (n,)
        return component_draws(self.means, self.scale_tril, k, generator)

    @torch.no_grad()
    def reorder(self, order: Tensor) -> None:
        """Renumber the components: component k becomes the current component ``order[k]``
        (the same density)."""
        if sorted(order.tolist()) != list(range(self.components)):
            raise ValueError(f"order must permute 0..{self.components - 1}, got {order.tolist()}")
        for buffer in (self.weights, self.means, self.scale_tril):
            buffer.copy_(buffer[order])  # indexing copies

    def component_log_prob(self, z: Tensor) -> Tensor:
        """log N(z; μ_k, Σ_k) for every component: z (..., D) → (..., K)."""
        diff = (z.unsqueeze(-2) - self.means).unsqueeze(-1)  # (..., K, D, 1)
        tril = self.scale_tril.expand(*diff.shape[:-2], self.dim, self.dim)  # (..., K, D, D)
        white = torch.linalg.solve_triangular(tril, diff, upper=False).squeeze(-1)  # (..., K, D)
        half_log_det = torch.diagonal(self.scale_tril, dim1=-2, dim2=-1).log().sum(-1)  # (K,)
        return -0.5 * (white.square().sum(-1) + self.dim * _LOG_2PI) - half_log_det

    def log_prob(self, z: Tensor) -> Tensor:
        """log p(z) = logsumexp_k [log w_k + log N(z; μ_k, Σ_k)]: z (..., D) → (...)."""
        return torch.logsumexp(self.weights.log() + self.component_log_prob(z), dim=-1)

    @property
    def covariances(self) -> Tensor:
        """Σ_k = L_k L_kᵀ: (K, D, D)."""
        return self.scale_tril @ self.scale_tril.transpose(-1, -2)

    @property
    def mean(self) -> Tensor:
        """The mixture's mean Σ_k w_k μ_k: (D,)."""
        return self.weights @ self.means

    @property
    def covariance(self) -> Tensor:
        """The mixture's covariance Σ_k w_k (Σ_k + μ_k μ_kᵀ) − m mᵀ: (D, D)."""
        second = self.covariances + self.means.unsqueeze(-1) * self.means.unsqueeze(-2)
        m = self.mean
        return torch.einsum("k,kij->ij", self.weights, second) - torch.outer(m, m)

    def extra_repr(self) -> str:
        return f"components={self.components}, dim={self.dim}, fitted={self.is_fitted}"


def component_draws(
    means: Tensor, scale_tril: Tensor, k: Tensor, generator: torch.Generator | None = None
) -> Tensor:
    """One draw μ_k + L_k ε, ε ~ N(0, I), of component k[i] for each entry of ``k`` (n,):
    means (K, D), Cholesky factors (K, D, D) → (n, D)."""
    eps = torch.randn(
        len(k), means.shape[1], 1, generator=generator, device=means.device, dtype=means.dtype
    )
    return means[k] + (scale_tril[k] @ eps).squeeze(-1)


def matching_order(previous: Tensor, current: Tensor) -> Tensor:
    """The permutation (K,) that gives each previous component k the current one nearest to it,
    ``order[k]``, minimising Σ_k ‖μ_prev_k − μ_cur_order[k]‖² over permutations (Hungarian
    method, scipy): means (K, D) and (K, D). With it, a refit of a drifting mixture keeps each
    component on its mode (:meth:`GaussianMixture.reorder`)."""
    from scipy.optimize import linear_sum_assignment

    cost = torch.cdist(previous.double(), current.double()).square().cpu().numpy()
    rows, cols = linear_sum_assignment(cost)
    return torch.as_tensor(cols[rows.argsort()], dtype=torch.long)


__all__ = ["GaussianMixture", "component_draws", "matching_order"]
