"""Small generated datasets for fast tests and smoke runs; they need no files.

- ``toy-images``: 1×8×8 gray images in [0, 1] of four shape classes (horizontal bar, vertical
  bar, square, diagonal band) at random positions and brightness, a pure function of ``seed``.
  Dynamically binarised like MNIST (kind ``binary``), or gray levels with ``binarize=False``.
- ``mixture-2d``: points of a 2-D Gaussian mixture (spec shape (1, 1, 2), kind ``continuous``):
  :data:`MIXTURE_COMPONENTS` equally weighted isotropic Gaussians with standard deviation
  :data:`MIXTURE_STD` on a circle of radius 0.3 around (0.5, 0.5), so that the points lie in
  [0, 1]² (the nearest edge is more than 6 standard deviations away). Its exact density is
  :func:`mixture_2d_log_prob`, for tests against analytic truth.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from latentgap.data.base import DATASETS, DatasetInfo, DataSpec, ImageSet, Splits
from latentgap.errors import ConfigError

MIXTURE_COMPONENTS = 8
MIXTURE_RADIUS = 0.3
MIXTURE_STD = 0.03


def _check_sizes(seed: int, n_train: int, n_test: int) -> None:
    for key, value, low in (("seed", seed, 0), ("n_train", n_train, 1), ("n_test", n_test, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"option {key} must be an integer >= {low}, got {value!r}")


def toy_images(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` toy images (n, 1, 8, 8) float32 in [0.05, 1] and their shape classes (n,)."""
    rows, cols = np.meshgrid(np.arange(8), np.arange(8), indexing="ij")
    rows, cols = rows[None], cols[None]  # (1, 8, 8)
    classes = rng.integers(0, 4, n)
    p = rng.integers(0, 7, n)[:, None, None]  # bar offset
    q = rng.integers(0, 6, (2, n))[:, :, None, None]  # square corner
    d = rng.integers(-4, 4, n)[:, None, None]  # diagonal offset
    masks = np.stack(
        [
            (rows == p) | (rows == p + 1),  # horizontal bar (n, 8, 8)
            (cols == p) | (cols == p + 1),  # vertical bar
            (rows >= q[0]) & (rows < q[0] + 3) & (cols >= q[1]) & (cols < q[1] + 3),  # square
            (cols - rows == d) | (cols - rows == d + 1),  # diagonal band
        ]
    )  # (4, n, 8, 8)
    mask = masks[classes, np.arange(n)]  # (n, 8, 8)
    level = rng.uniform(0.7, 1.0, (n, 1, 1))
    gray = 0.05 + (level - 0.05) * mask
    return gray[:, None].astype(np.float32), classes.astype(np.int64)


def load_toy_images(
    folder: Path, *, seed: int = 0, n_train: int = 512, n_test: int = 128, binarize: bool = True
) -> Splits:
    """The ``toy-images`` :class:`Splits` (``folder`` is ignored: nothing is read)."""
    _check_sizes(seed, n_train, n_test)
    if not isinstance(binarize, bool):
        raise ConfigError(f"option binarize must be true or false, got {binarize!r}")
    spec = DataSpec("toy-images", (1, 8, 8), "binary" if binarize else "continuous")
    rng = np.random.default_rng(seed)
    sets = []
    for n in (n_train, n_test):
        images, labels = toy_images(n, rng)
        sets.append(
            ImageSet(
                torch.from_numpy(images),
                torch.from_numpy(labels),
                spec=spec,
                binarize="dynamic" if binarize else "none",
            )
        )
    return Splits(spec, sets[0], sets[1])


def mixture_2d_means(components: int = MIXTURE_COMPONENTS) -> Tensor:
    """The component means of ``mixture-2d``: (K, 2), on a circle around (0.5, 0.5)."""
    angle = torch.arange(components, dtype=torch.float64) * (2 * math.pi / components)
    means = 0.5 + MIXTURE_RADIUS * torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)
    return means.float()


def mixture_2d_log_prob(points: Tensor) -> Tensor:
    """Exact log density of ``mixture-2d`` at ``points`` (..., 2) → (...):
    ``log (1/K) Σ_k N(x; μ_k, σ² I)``, computed with ``logsumexp``."""
    means = mixture_2d_means().to(points)  # (K, 2)
    sq = (points.unsqueeze(-2) - means).pow(2).sum(-1)  # (..., K)
    log_norm = -math.log(2 * math.pi * MIXTURE_STD**2)  # 2-D isotropic Gaussian
    log_components = log_norm - sq / (2 * MIXTURE_STD**2)
    return torch.logsumexp(log_components, dim=-1) - math.log(MIXTURE_COMPONENTS)


def load_mixture_2d(
    folder: Path, *, seed: int = 0, n_train: int = 2000, n_test: int = 500
) -> Splits:
    """The ``mixture-2d`` :class:`Splits`: points as (N, 1, 1, 2) float32, the component
    as label (``folder`` is ignored: nothing is read)."""
    _check_sizes(seed, n_train, n_test)
    spec = DataSpec("mixture-2d", (1, 1, 2), "continuous")
    g = torch.Generator().manual_seed(seed)
    means = mixture_2d_means()
    sets = []
    for n in (n_train, n_test):
        labels = torch.randint(0, MIXTURE_COMPONENTS, (n,), generator=g)
        points = means[labels] + MIXTURE_STD * torch.randn(n, 2, generator=g)  # (N, 2)
        sets.append(ImageSet(points.view(n, 1, 1, 2), labels, spec=spec))
    return Splits(spec, sets[0], sets[1])


DATASETS.add(
    "toy-images",
    DatasetInfo(
        name="toy-images",
        description="generated 1x8x8 shapes (512/128), dynamically binarised; for tests",
        folder="",
        files=(),
        load=load_toy_images,
        md5={},
        options=("seed", "n_train", "n_test", "binarize"),
    ),
)
DATASETS.add(
    "mixture-2d",
    DatasetInfo(
        name="mixture-2d",
        description=f"generated 2-D mixture of {MIXTURE_COMPONENTS} Gaussians (2000/500), "
        "shape (1, 1, 2); for tests",
        folder="",
        files=(),
        load=load_mixture_2d,
        md5={},
        options=("seed", "n_train", "n_test"),
    ),
)
