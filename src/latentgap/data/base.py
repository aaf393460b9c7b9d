"""In-memory image sets, batches and the dataset registry.

Every dataset is small enough to live in memory (MNIST is 47 MB as uint8), so batches are cut
by fancy indexing on one tensor instead of a per-item ``DataLoader``: no Python loop over
examples, and the whole set can sit on the GPU.

Observation conventions (what :attr:`Batch.x` holds, the thing a likelihood scores):

- ``binary``: values in {0, 1}. With ``binarize="dynamic"`` a fresh Bernoulli draw from the gray
  levels every time an image is served (the usual dynamically binarised MNIST); the gray image
  stays available as :attr:`Batch.e` (VAEPP's q(z|e), Eq. 7 of the VAEPP paper).
- ``continuous``: values in [0, 1].
- ``discrete8``: 8-bit levels k/255 in [0, 1] (for the discretised logistic likelihood).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor

from latentgap.registry import Registry

Kind = Literal["binary", "continuous", "discrete8"]
Binarize = Literal["dynamic", "none"]


@dataclass(frozen=True)
class DataSpec:
    """What a dataset looks like: image shape (C, H, W) and the observation kind."""

    name: str
    shape: tuple[int, int, int]
    kind: Kind

    @property
    def dim(self) -> int:
        c, h, w = self.shape
        return c * h * w


@dataclass
class Batch:
    """A batch of images, all float32 of shape (B, C, H, W).

    ``x`` is the observation scored by the likelihood; ``e`` is the gray-level image it was drawn
    from (equal to ``x`` unless the data are dynamically binarised); ``y`` holds labels if known.
    """

    x: Tensor
    e: Tensor
    y: Tensor | None = None

    def to(
        self, device: torch.device | str, memory_format: torch.memory_format | None = None
    ) -> Batch:
        """On ``device``; ``memory_format=torch.channels_last`` also lays the images out NHWC."""
        fmt = {} if memory_format is None else {"memory_format": memory_format}
        return Batch(
            self.x.to(device, non_blocking=True, **fmt),
            self.e.to(device, non_blocking=True, **fmt),
            None if self.y is None else self.y.to(device, non_blocking=True),
        )

    def __len__(self) -> int:
        return self.x.shape[0]


def epoch_seed(seed: int, epoch: int, index: int = 0) -> int:
    """A deterministic 63-bit seed for (run seed, epoch, batch index): makes data order and
    binarisation a pure function of position, so a resumed run sees the same batches."""
    return (seed * 1_000_003 + epoch * 10_007 + index * 7_919 + 0x5DEECE66D) % (2**63 - 1)


class ImageSet(torch.utils.data.Dataset):
    """Images in memory as uint8 (N, C, H, W) (or float in [0, 1]), with optional labels.

    ``binarize="dynamic"`` serves ``x ~ Bernoulli(e)`` afresh each time an item or batch is
    served. Use :meth:`batches` for training (vectorised); ``__getitem__`` exists so the set also
    works with a plain :class:`torch.utils.data.DataLoader`.
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor | None = None,
        *,
        spec: DataSpec,
        binarize: Binarize = "none",
    ) -> None:
        if images.ndim != 4:
            raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
        if tuple(images.shape[1:]) != spec.shape:
            raise ValueError(f"images of shape {tuple(images.shape[1:])} do not match {spec}")
        if images.dtype not in (torch.uint8, torch.float32):
            raise ValueError(f"images must be uint8 or float32, got {images.dtype}")
        if binarize == "dynamic" and spec.kind != "binary":
            raise ValueError("dynamic binarisation needs a spec of kind 'binary'")
        self.images = images
        self.labels = labels
        self.spec = spec
        self.binarize = binarize

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def device(self) -> torch.device:
        return self.images.device

    def to(self, device: torch.device | str) -> ImageSet:
        """A copy with the images (and labels) on ``device``: keeps small sets on the GPU."""
        labels = None if self.labels is None else self.labels.to(device)
        return ImageSet(self.images.to(device), labels, spec=self.spec, binarize=self.binarize)

    def subset(self, n: int | None = None, indices: Tensor | None = None) -> ImageSet:
        """The first ``n`` images, or those at ``indices``."""
        if indices is None:
            indices = torch.arange(min(n if n is not None else len(self), len(self)))
        labels = None if self.labels is None else self.labels[indices]
        return ImageSet(self.images[indices], labels, spec=self.spec, binarize=self.binarize)

    def gray(self, index: Tensor) -> Tensor:
        """Float images in [0, 1] at ``index``: (B, C, H, W)."""
        imgs = self.images[index]
        if imgs.dtype == torch.uint8:
            return imgs.float().div_(255.0)
        return imgs.float()

    def make_batch(self, index: Tensor, generator: torch.Generator | None = None) -> Batch:
        """The batch at ``index``; a dynamic binarisation draws with ``generator``."""
        e = self.gray(index)
        if self.binarize == "dynamic":  # x = 1[u < e], u ~ U(0, 1): Bernoulli(e), ~3× faster
            u = torch.rand(e.shape, generator=generator, device=e.device, dtype=e.dtype)
            x = torch.lt(u, e).to(e.dtype)  # than torch.bernoulli on CPU
        else:
            x = e
        y = None if self.labels is None else self.labels[index]
        return Batch(x, e, y)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        b = self.make_batch(torch.tensor([i], device=self.device))
        out = {"x": b.x[0], "e": b.e[0]}
        if b.y is not None:
            out["y"] = b.y[0]
        return out

    def num_batches(
        self,
        batch_size: int,
        *,
        world_size: int = 1,
        drop_last: bool = False,
        rank: int = 0,
        even: bool = True,
    ) -> int:
        """Batches of this rank's shard (see :meth:`batches` for ``even``)."""
        per_rank = len(self) // world_size
        if not even:
            per_rank += 1 if rank < len(self) % world_size else 0
        if drop_last:
            return per_rank // batch_size
        return -(-per_rank // batch_size)

    def batches(
        self,
        batch_size: int,
        *,
        shuffle: bool = False,
        seed: int = 0,
        epoch: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
        start: int = 0,
        even: bool = True,
    ) -> Iterator[Batch]:
        """Iterate over batches of this rank's shard.

        Order and binarisation are pure functions of ``(seed, epoch, batch index)``, so
        ``start=k`` resumes exactly where batch k of the same epoch would have been served.
        With ``world_size > 1`` every rank takes an equal, disjoint, strided slice of the same
        permutation (the remainder is dropped so ranks stay in step, as DistributedSampler does
        with ``drop_last=True``). ``even=False`` (evaluation) keeps every example instead: the
        first n mod W ranks take one more, and the shards' sums add up to the whole set's.
        """
        if batch_size <= 0:
            raise ValueError("batch_size must be positive")
        n = len(self)
        if shuffle:
            g = torch.Generator().manual_seed(epoch_seed(seed, epoch))
            order = torch.randperm(n, generator=g)
        else:
            order = torch.arange(n)
        stop = n if not even else (n // world_size) * world_size
        order = order[rank:stop:world_size]
        order = order.to(self.device)
        nb = self.num_batches(
            batch_size, world_size=world_size, drop_last=drop_last, rank=rank, even=even
        )
        gen_device = self.device if self.device.type != "mps" else torch.device("cpu")
        for i in range(start, nb):
            index = order[i * batch_size : (i + 1) * batch_size]
            g = None
            if self.binarize == "dynamic":
                g = torch.Generator(device=gen_device)
                g.manual_seed(epoch_seed(seed, epoch, 1 + i * world_size + rank))
            yield self.make_batch(index, g)


@dataclass
class Splits:
    """The splits of one dataset; ``valid`` is None when the dataset has no official one."""

    spec: DataSpec
    train: ImageSet
    test: ImageSet
    valid: ImageSet | None = None

    def limit(self, n_train: int | None = None, n_test: int | None = None) -> Splits:
        """Keep the first ``n_train`` / ``n_test`` images (for quick runs and tests)."""
        return replace(
            self,
            train=self.train.subset(n_train) if n_train else self.train,
            test=self.test.subset(n_test) if n_test else self.test,
        )


@dataclass(frozen=True)
class DatasetInfo:
    """A registered dataset.

    ``load(folder, **options)`` reads the files in the resolved dataset folder (``<root>/<folder>``
    or ``/usr/share/datasets/<folder>``, see :mod:`latentgap.data.root`) and returns
    :class:`Splits`; ``files`` are the file names expected there (for ``data verify``);
    ``md5`` maps a file name to the md5 of its decoded content (empty if unknown);
    ``fetch(folder)`` downloads the files into that folder (None if they cannot be fetched).
    """

    name: str
    description: str
    folder: str
    files: tuple[str, ...]
    load: Callable[..., Splits]
    md5: dict[str, str]
    fetch: Callable[[Path], None] | None = None
    options: tuple[str, ...] = ()


DATASETS: Registry[DatasetInfo] = Registry("dataset")
