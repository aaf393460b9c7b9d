"""FID and precision/recall between any two image sets (``latentgap fid A B``).

A set is named by one string:

- a folder of PNG/JPEG images (any depth; run folders are recognised by their config.json);
- a ``.npy`` / ``.npz`` file of images (every image array in it; see :mod:`latentgap.data.npy`);
- a run directory or an export: ``num`` fresh samples of its model;
- a dataset name, optionally with a split: ``mnist`` (its train split), ``mnist:test``;
  also ``folder:PATH`` / ``npy:PATH`` with their dataset options' defaults.

Fixed sets (folders, arrays, datasets) have their feature statistics cached under the content
hash of their pixels (``~/.cache/latentgap/fid-stats``), so a reference set goes through the
feature network once; samples of a run are drawn afresh every time.

Protocol: the features and their preprocessing are those of
:mod:`latentgap.metrics.inception` (TF-FID Inception weights, bilinear resize to 299 without
antialiasing, as pytorch-fid and the TTUR code do); the Fréchet distance is
:func:`latentgap.metrics.fid.frechet_distance`. Precision is the share of B inside A's k-NN
manifold, recall the share of A inside B's, on min(|A|, |B|) images of each.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from latentgap.data.base import DataSpec, ImageSet
from latentgap.errors import ConfigError, DataError

Extractor = Callable[[Tensor], Tensor]


@dataclass
class ImageSource:
    """A fixed image set (``images``) or a model to draw ``num`` samples from."""

    label: str
    kind: str  # folder | arrays | dataset | run
    images: ImageSet | None = None
    model: Any = None
    num: int = 0
    sampler: str | None = None

    @property
    def size(self) -> int:
        return len(self.images) if self.images is not None else self.num


def _files_set(images: Tensor) -> ImageSet:
    """An ImageSet named only by its shape: its cache file is keyed by content alone."""
    return ImageSet(images, spec=DataSpec("files", tuple(images.shape[1:]), "continuous"))


def _is_run(path: Path) -> bool:
    return (path / "config.json").exists() and (
        (path / "checkpoint.pt").exists() or (path / "model.safetensors").exists()
    )


def resolve_source(
    text: str,
    *,
    num: int = 5000,
    sampler: str | None = None,
    limit: int | None = None,
    size: int | None = None,
    data_dir: str | None = None,
    device: str = "cpu",
) -> ImageSource:
    """The image set named by ``text`` (see the module docstring)."""
    from latentgap.data import get_dataset
    from latentgap.data.image_folder import list_images, read_images
    from latentgap.data.npy import as_images, image_arrays

    path = Path(text).expanduser()
    if path.is_dir() and _is_run(path):
        from latentgap.train.run import load_run

        model, config, _ = load_run(path, device, data_dir, load_data=False)
        if sampler is not None and sampler not in model.samplers():
            raise ConfigError(
                f"model {config.model!r} has no sampler {sampler!r}; "
                f"choose one of: {', '.join(model.samplers())}"
            )
        return ImageSource(
            f"{text} ({num:,} samples)", "run", model=model, num=num, sampler=sampler
        )
    if path.is_dir():
        files = list_images(path)
        if not files:
            raise DataError(f"no PNG or JPEG images under {path}")
        files = files[:limit] if limit else files
        images = read_images(files, size=None if size is None else (size, size))
        return ImageSource(f"{text} (folder)", "folder", _files_set(images))
    if path.suffix.lower() in (".npy", ".npz") or path.is_file():
        parts = [as_images(x, f"{path}[{k}]") for k, (x, _) in image_arrays(path).items()]
        if len({p.shape[1:] for p in parts}) > 1:
            raise DataError(f"{path}: its image arrays differ in shape")
        if all(p.dtype == torch.uint8 for p in parts):
            images = torch.cat(parts)
        else:
            images = torch.cat([p.float() / 255 if p.dtype == torch.uint8 else p for p in parts])
        images = images[:limit] if limit else images
        return ImageSource(f"{text} (arrays)", "arrays", _files_set(images))
    name, split = text, "train"
    head, sep, tail = text.rpartition(":")
    if sep and tail in ("train", "test", "valid"):
        name, split = head, tail
    try:
        splits = get_dataset(name, data_dir=data_dir)
    except ConfigError as err:
        raise ConfigError(
            f"{text!r} is no folder, array file or run, nor a dataset: {err}"
        ) from None
    chosen = getattr(splits, split)
    if chosen is None:
        raise ConfigError(f"dataset {name!r} has no {split} split")
    chosen = chosen.subset(limit) if limit else chosen
    return ImageSource(f"{text} ({split} split)", "dataset", chosen)


class TimedExtractor:
    """Wraps an extractor: after its first batch, prints to stderr how long the remaining
    ``total`` images will take at the measured rate."""

    def __init__(self, extractor: Extractor, total: int, enabled: bool = True) -> None:
        self.extractor = extractor
        self.extractor_id = getattr(extractor, "extractor_id", None)
        self.total = total
        self.enabled = enabled
        self.done = 0

    def __call__(self, images: Tensor) -> Tensor:
        t0 = time.perf_counter()
        out = self.extractor(images)
        rate = len(images) / max(time.perf_counter() - t0, 1e-9)
        left = (self.total - len(images)) / rate
        if self.done == 0 and self.enabled and left > 10:
            sys.stderr.write(
                f"latentgap fid: {rate:.1f} images/s on the first batch: about "
                f"{left / 60:.1f} min for the remaining {self.total - len(images):,} images\n"
            )
        self.done += len(images)
        return out


def _cached(source: ImageSource, extractor: Extractor, keep: int, cache_dir) -> bool:
    from latentgap.metrics.fid import reference_cache_path

    ext_id = getattr(extractor, "extractor_id", None)
    if source.images is None or not ext_id:
        return False
    path = reference_cache_path(source.images, "all", ext_id, cache_dir)
    if not path.exists():
        return False
    try:
        import numpy as np

        with np.load(path) as z:
            return int(z["n"]) == len(source.images) and z["kept"].shape[0] >= keep
    except (OSError, KeyError, ValueError):
        return False


@torch.no_grad()
def fid_between(
    a: ImageSource,
    b: ImageSource,
    extractor: Extractor,
    *,
    batch_size: int = 100,
    device: str = "cpu",
    seed: int = 0,
    k: int = 3,
    precision_recall: bool = True,
    progress: bool = False,
    cache_dir: str | None = None,
    announce: bool = True,
) -> dict[str, Any]:
    """FID (and precision/recall) between two image sources; fixed sets are cached."""
    from latentgap.metrics.fid import extract, fid_from_stats, reference_statistics
    from latentgap.metrics.precision_recall import precision_recall as knn_precision_recall

    keep = min(a.size, b.size) if precision_recall else 0
    if precision_recall and keep <= k:
        raise ConfigError(f"precision/recall need more than k = {k} images in each set")
    if min(a.size, b.size) < 2:
        raise ConfigError("FID needs at least 2 images in each set")
    todo = [s for s in (a, b) if not _cached(s, extractor, keep, cache_dir)]
    total = sum(s.size for s in todo)
    ext_id = getattr(extractor, "extractor_id", type(extractor).__name__)
    if announce:
        cached = [s.label for s in (a, b) if s not in todo]
        note = f" ({'; '.join(cached)}: cached statistics)" if cached else ""
        sys.stderr.write(f"latentgap fid: {total:,} images through {ext_id} on {device}{note}\n")
    timed = TimedExtractor(extractor, total, enabled=announce)
    results: dict[str, Any] = {}
    stats, kept = [], []
    for name, source in (("a", a), ("b", b)):
        if source.images is not None:
            s, f = reference_statistics(
                source.images,
                "all",
                timed,
                keep=keep,
                batch_size=batch_size,
                device=device,
                progress=progress,
                cache_dir=cache_dir,
            )
        else:
            model = source.model
            g = torch.Generator(device=model.device).manual_seed(seed)
            options = {} if source.sampler is None else {"sampler": source.sampler}
            sizes = [min(batch_size, source.num - i) for i in range(0, source.num, batch_size)]
            s, f = extract(
                (model.sample(n, generator=g, **options) for n in sizes),
                timed,
                device=device,
                total=len(sizes),
                desc=f"FID {name}: samples",
                progress=progress,
                keep=keep,
            )
        stats.append(s)
        kept.append(f[:keep])
        results[name] = {
            "source": source.label,
            "images": source.size,
            "cached": source not in todo,
        }
    results["fid"] = fid_from_stats(stats[0], stats[1])
    if precision_recall:
        results["precision"], results["recall"] = knn_precision_recall(kept[0], kept[1], k)
        results["pr_k"] = k
        results["pr_images"] = keep
    results["extractor"] = ext_id
    return results
