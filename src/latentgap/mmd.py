"""Maximum mean discrepancy between two samples: multi-scale kernels and the unbiased MMD²
estimate (Lemma 6 of Gretton et al. 2012). WAE-MMD's penalty (Algorithm 2 of Tolstikhin et al.
2018) and LDC-VAE's sample-based sampler objective use it.

Kernels (:data:`KERNELS`) are sums over bandwidth scales s ∈ ``scales`` of a base bandwidth C: the
inverse multiquadratic k = C / (C + ‖z − z'‖²) of Tolstikhin et al.'s experiments ("imq") and the
Gaussian k = exp(−‖z − z'‖² / C) ("rbf"). The caller chooses C (WAE: 2·D for its N(0, I) prior).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor

from latentgap.errors import ConfigError

TOLSTIKHIN_SCALES = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)


class MultiScaleKernel:
    """k(z, z') = Σ_s κ(‖z − z'‖², s · C) for a base bandwidth C and scales s; one job: map
    squared distances (…) to kernel values (…)."""

    name: ClassVar[str] = ""

    def __init__(self, base: float, scales: Sequence[float] = TOLSTIKHIN_SCALES) -> None:
        if not (math.isfinite(base) and base > 0):
            raise ConfigError(f"kernel bandwidth must be a finite number > 0, got {base}")
        if not scales or any(not (math.isfinite(s) and s > 0) for s in scales):
            raise ConfigError(f"kernel scales must be finite numbers > 0, got {tuple(scales)}")
        self.base = float(base)
        self.scales = tuple(float(s) for s in scales)

    def profile(self, sq_dist: Tensor, c: float) -> Tensor:
        raise NotImplementedError

    def __call__(self, sq_dist: Tensor) -> Tensor:
        return sum(self.profile(sq_dist, s * self.base) for s in self.scales)  # type: ignore[return-value]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base={self.base}, scales={self.scales})"


class IMQKernel(MultiScaleKernel):
    """Inverse multiquadratic kernel Σ_s C_s / (C_s + ‖z − z'‖²) (Tolstikhin et al. 2018)."""

    name = "imq"

    def profile(self, sq_dist: Tensor, c: float) -> Tensor:
        return c / (c + sq_dist)


class RBFKernel(MultiScaleKernel):
    """Gaussian kernel Σ_s exp(−‖z − z'‖² / C_s)."""

    name = "rbf"

    def profile(self, sq_dist: Tensor, c: float) -> Tensor:
        return torch.exp(-sq_dist / c)


KERNELS: dict[str, type[MultiScaleKernel]] = {"imq": IMQKernel, "rbf": RBFKernel}


def squared_distances(a: Tensor, b: Tensor) -> Tensor:
    """‖a_i − b_j‖² for a (n, D) and b (m, D): (n, m), via ‖a‖² + ‖b‖² − 2 a·b (smooth at 0,
    unlike ``cdist``), clamped at 0 against rounding."""
    sq = a.square().sum(-1, keepdim=True) + b.square().sum(-1) - 2.0 * a @ b.T  # (n, m)
    return sq.clamp_min(0.0)


def mmd_squared(zq: Tensor, zp: Tensor, kernel: MultiScaleKernel) -> Tensor:
    """Unbiased estimate of MMD²_k between the samples ``zq`` (n, D) and ``zp`` (m, D)
    (Lemma 6 of Gretton et al. 2012; Algorithm 2 of Tolstikhin et al. 2018): a 0-dim tensor.
    Its expectation is 0 when both samples come from one distribution; it can be negative."""
    n, m = zq.shape[0], zp.shape[0]
    if n < 2 or m < 2:
        raise ValueError(f"the unbiased MMD needs at least 2 points per sample, got {n} and {m}")
    k_qq = kernel(squared_distances(zq, zq))  # (n, n)
    k_pp = kernel(squared_distances(zp, zp))  # (m, m)
    k_qp = kernel(squared_distances(zq, zp))  # (n, m)
    within_q = (k_qq.sum() - k_qq.diagonal().sum()) / (n * (n - 1))
    within_p = (k_pp.sum() - k_pp.diagonal().sum()) / (m * (m - 1))
    return within_q + within_p - 2.0 * k_qp.mean()


__all__ = [
    "KERNELS",
    "TOLSTIKHIN_SCALES",
    "IMQKernel",
    "MultiScaleKernel",
    "RBFKernel",
    "mmd_squared",
    "squared_distances",
]
