"""Image grids written with Pillow (no torchvision)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from latentgap.train.checkpoint import atomic_write


def make_grid(images: torch.Tensor, nrow: int | None = None, padding: int = 2) -> np.ndarray:
    """Tile (N, C, H, W) images in [0, 1] into one uint8 array (H', W', C) with C in {1, 3}."""
    if images.ndim != 4:
        raise ValueError(f"expected (N, C, H, W) images, got shape {tuple(images.shape)}")
    n, c, h, w = images.shape
    nrow = nrow or max(1, int(math.ceil(math.sqrt(n))))
    ncol = int(math.ceil(n / nrow))
    arr = (images.detach().float().clamp(0, 1).cpu().numpy() * 255 + 0.5).astype(np.uint8)
    grid = np.full(
        (ncol * (h + padding) + padding, nrow * (w + padding) + padding, c), 255, dtype=np.uint8
    )
    for i in range(n):  # a few hundred tiles at most: a copy each, not per-pixel work
        r, col = divmod(i, nrow)
        y, x = padding + r * (h + padding), padding + col * (w + padding)
        grid[y : y + h, x : x + w] = arr[i].transpose(1, 2, 0)
    return grid


def save_image_grid(images: torch.Tensor, path: Path, nrow: int | None = None) -> Path:
    """Write a PNG grid of (N, C, H, W) images in [0, 1]; atomic (temp file + rename)."""
    grid = make_grid(images, nrow)
    mode = "L" if grid.shape[2] == 1 else "RGB"
    img = Image.fromarray(grid[:, :, 0] if mode == "L" else grid, mode=mode)
    path = Path(path)
    atomic_write(path, lambda f: img.save(f, format="PNG"))
    return path
