"""Fréchet Inception Distance (Heusel et al. 2017) of samples and reconstructions, plus improved
precision/recall, with cached reference statistics.

    FID = ‖μ₁ − μ₂‖² + Tr(Σ₁ + Σ₂ − 2 (Σ₁ Σ₂)^{1/2})

the Fréchet (2-Wasserstein) distance between Gaussians fitted to the features of two image sets.

Numerics. Statistics are float64 streaming sums (n, Σx, Σxxᵀ) that shards can simply add
(:class:`FeatureStats`); the covariance is the unbiased one (``np.cov``). The trace of the matrix
square root uses Tr((Σ₁Σ₂)^{1/2}) = Tr((√Σ₁ Σ₂ √Σ₁)^{1/2}): Σ₁Σ₂ and √Σ₁Σ₂√Σ₁ share their
eigenvalues, and the latter is symmetric PSD, so two symmetric eigen-decompositions (``eigh``)
give it exactly, with no complex parts and no ε·I offset even when the covariances are singular
(fewer images than features). Tiny negative eigenvalues from rounding are clipped to 0.

Protocol (:func:`evaluate_fid`): features of ``n_samples`` model samples and of the
reconstructions of the first min(n_samples, |test|) test images are compared with the reference
statistics of the gray images of ``splits.train`` (default, the whole split as in the VAEPP paper)
or ``splits.test``. Precision/recall compare the sample features with the features of
min(n_samples, reference size) reference images (a fixed random subset), at k = 3.

Sharding. Under torchrun every rank extracts features of its share of the reference images,
samples (drawn with its own generator) and reconstructions; the moment sums are added over ranks
and the kept features gathered, so the result does not depend on the number of processes beyond
the randomness of the samples (the reference and reconstruction statistics are the same up to
float64 rounding).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from latentgap.data.base import ImageSet
from latentgap.distributed import DistContext
from latentgap.errors import ConfigError
from latentgap.metrics.inception import cache_root, make_extractor
from latentgap.metrics.precision_recall import precision_recall as knn_precision_recall
from latentgap.train.checkpoint import atomic_write

Extractor = Callable[[Tensor], Tensor]
CACHE_VERSION = 1


@dataclass
class FeatureStats:
    """Streaming float64 sums of features: count ``n``, ``s`` = Σx (F,), ``ss`` = Σxxᵀ (F, F)."""

    n: int
    s: np.ndarray
    ss: np.ndarray

    @classmethod
    def zeros(cls, dim: int) -> FeatureStats:
        return cls(0, np.zeros(dim), np.zeros((dim, dim)))

    def update(self, features: Tensor | np.ndarray) -> FeatureStats:
        """Add a batch of features (B, F) in place; returns self."""
        x = torch.as_tensor(features).detach().to("cpu", torch.float64)  # (B, F)
        if x.ndim != 2 or x.shape[1] != self.s.shape[0]:
            raise ValueError(f"expected features (B, {self.s.shape[0]}), got {tuple(x.shape)}")
        if not torch.isfinite(x).all():
            raise ValueError("features contain NaN or infinite values")
        self.n += x.shape[0]
        self.s += x.sum(0).numpy()
        self.ss += (x.T @ x).numpy()  # (F, F)
        return self

    def __add__(self, other: FeatureStats) -> FeatureStats:
        return FeatureStats(self.n + other.n, self.s + other.s, self.ss + other.ss)

    def all_reduce(self, ctx: DistContext) -> FeatureStats:
        """The statistics of all ranks' features together (every rank gets them)."""
        if not ctx.enabled:
            return self
        f = self.s.shape[0]
        flat = np.concatenate([[float(self.n)], self.s, self.ss.reshape(-1)])
        total = ctx.all_reduce_sum(torch.from_numpy(flat)).numpy()
        return FeatureStats(int(round(total[0])), total[1 : f + 1], total[f + 1 :].reshape(f, f))

    @property
    def mean(self) -> np.ndarray:
        return self.s / self.n  # (F,)

    @property
    def cov(self) -> np.ndarray:
        """Unbiased covariance (F, F): (Σxxᵀ − n μμᵀ) / (n − 1)."""
        if self.n < 2:
            raise ValueError("a covariance needs at least 2 feature vectors")
        mu = self.mean
        cov = (self.ss - self.n * np.outer(mu, mu)) / (self.n - 1)
        return (cov + cov.T) / 2


def sqrtm_psd(a: np.ndarray) -> np.ndarray:
    """Square root of a symmetric PSD matrix by ``eigh``; rounding negatives clipped to 0."""
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mu1: Any, sigma1: Any, mu2: Any, sigma2: Any) -> float:
    """‖μ₁ − μ₂‖² + Tr(Σ₁ + Σ₂ − 2(Σ₁Σ₂)^{1/2}) in float64 (Heusel et al. 2017, Eq. 6).

    Tr((Σ₁Σ₂)^{1/2}) is Σᵢ √λᵢ over the eigenvalues of the symmetric PSD √Σ₁ Σ₂ √Σ₁.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    d = mu1.shape[0]
    if mu1.shape != (d,) or mu2.shape != (d,) or s1.shape != (d, d) or s2.shape != (d, d):
        raise ValueError(
            f"shapes do not match: mu {mu1.shape} / {mu2.shape}, sigma {s1.shape} / {s2.shape}"
        )
    for a in (mu1, mu2, s1, s2):
        if not np.isfinite(a).all():
            raise ValueError("feature statistics contain NaN or infinite values")
    root1 = sqrtm_psd(s1)  # (F, F)
    m = root1 @ s2 @ root1  # (F, F), symmetric PSD
    eig = np.linalg.eigvalsh((m + m.T) / 2)
    tr_covmean = np.sqrt(np.clip(eig, 0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * tr_covmean)


def fid_from_stats(a: FeatureStats, b: FeatureStats) -> float:
    """FID between two feature statistics."""
    return frechet_distance(a.mean, a.cov, b.mean, b.cov)


def fid_from_features(a: Tensor | np.ndarray, b: Tensor | np.ndarray) -> float:
    """FID between two feature matrices (N₁, F) and (N₂, F)."""
    dim = np.shape(a)[1]
    return fid_from_stats(FeatureStats.zeros(dim).update(a), FeatureStats.zeros(dim).update(b))


def _progress(items: Iterable, total: int, desc: str, enabled: bool) -> Iterable:
    if not enabled:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, total=total, desc=desc, leave=False)


@torch.no_grad()
def extract(
    images: Iterable[Tensor],
    extractor: Extractor,
    *,
    device: str | torch.device = "cpu",
    total: int | None = None,
    desc: str = "features",
    progress: bool = False,
    keep: int = 0,
    ctx: DistContext | None = None,
) -> tuple[FeatureStats, Tensor]:
    """Features of image batches (B, C, H, W) in [0, 1]: their statistics and the first ``keep``
    feature vectors (keep, F) as float32 on the CPU (for precision/recall).

    With a distributed ``ctx`` the batches are this rank's share: the statistics returned are
    those of all ranks' images and the kept vectors are every rank's first ``keep``, gathered
    in rank order.
    """
    stats: FeatureStats | None = None
    kept: list[Tensor] = []
    n_kept = 0
    for batch in _progress(images, total or 0, desc, progress):
        feats = extractor(batch.to(device))  # (B, F)
        if stats is None:
            stats = FeatureStats.zeros(feats.shape[1])
        stats.update(feats)
        if n_kept < keep:
            kept.append(feats[: keep - n_kept].detach().float().cpu())
            n_kept += kept[-1].shape[0]
    if stats is None:
        raise ValueError("no images to extract features from")
    kept_t = torch.cat(kept) if kept else torch.zeros(0, stats.s.shape[0])
    if ctx is not None and ctx.enabled:
        stats = stats.all_reduce(ctx)
        kept_t = ctx.all_gather_cat(kept_t)
    return stats, kept_t


def _fingerprint(images: Tensor) -> str:
    """Short sha1 of the image tensor's bytes: makes cached statistics follow the data."""
    arr = np.ascontiguousarray(images.detach().cpu().numpy())
    return hashlib.sha1(arr.tobytes()).hexdigest()[:12]


def _atomic_savez(path: Path, **arrays: np.ndarray) -> None:
    atomic_write(path, lambda f: np.savez(f, **arrays))


def reference_cache_path(
    data: ImageSet, split: str, extractor_id: str, cache_dir: str | os.PathLike | None = None
) -> Path:
    """``<cache>/fid-stats/<dataset>-<C>x<H>x<W>-<split>-<n>-<extractor>-<data sha1>.npz``."""
    c, h, w = data.spec.shape
    name = f"{data.spec.name}-{c}x{h}x{w}-{split}-{len(data)}-{extractor_id}-"
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", name) + _fingerprint(data.images)
    root = Path(cache_dir) if cache_dir is not None else cache_root() / "fid-stats"
    return root / f"{name}.npz"


def _gray_batches(data: ImageSet, order: Tensor, batch_size: int) -> Iterator[Tensor]:
    for start in range(0, len(order), batch_size):
        yield data.gray(order[start : start + batch_size].to(data.device))  # (B, C, H, W)


def reference_statistics(
    data: ImageSet,
    split: str,
    extractor: Extractor,
    *,
    keep: int = 0,
    batch_size: int = 100,
    device: str | torch.device = "cpu",
    progress: bool = False,
    cache_dir: str | os.PathLike | None = None,
    ctx: DistContext | None = None,
) -> tuple[FeatureStats, Tensor]:
    """Feature statistics of the gray images of ``data`` and the features (keep, F) of a fixed
    random subset of ``keep`` of them (for precision/recall). With a distributed ``ctx`` the
    images are shared among the ranks (the cache is read by all, written by rank 0).

    Images are visited in a fixed permutation (seed 0), so the kept features are its first
    ``keep`` images. With an ``extractor_id`` attribute on the extractor the result is cached in
    ``cache_dir`` (default ``~/.cache/latentgap/fid-stats``), written atomically; a later call
    asking for more kept features extracts only the missing images.
    """
    keep = min(keep, len(data))
    ctx = ctx or DistContext()
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))  # (N,)
    ext_id = getattr(extractor, "extractor_id", None)
    path = reference_cache_path(data, split, ext_id, cache_dir) if ext_id else None
    ok = False
    if path is not None and path.exists():
        try:
            with np.load(path) as z:
                ok = int(z["version"]) == CACHE_VERSION and int(z["n"]) == len(data)
                stats = FeatureStats(int(z["n"]), z["s"], z["ss"])
                kept = torch.from_numpy(z["kept"])
        except (OSError, KeyError, ValueError):
            ok = False  # corrupt or foreign file: recompute and overwrite
    if ctx.enabled:  # all ranks take the same branch, or the collectives below would hang
        ok = not ctx.any(not (ok and kept.shape[0] >= keep))
    if ok and kept.shape[0] >= keep:
        return stats, kept[:keep]
    if ok:  # one process: extract only the missing kept features
        _, extra = extract(
            _gray_batches(data, order[kept.shape[0] : keep], batch_size),
            extractor,
            device=device,
            total=-(-(keep - kept.shape[0]) // batch_size),
            desc=f"FID reference ({split}, extra)",
            progress=progress,
            keep=keep,
        )
        kept = torch.cat([kept, extra])
        _atomic_savez(path, **_cache_arrays(stats, kept))
        return stats, kept
    mine = order[ctx.rank :: ctx.world_size]
    stats, kept = extract(
        _gray_batches(data, mine, batch_size),
        extractor,
        device=device,
        total=-(-len(mine) // batch_size),
        desc=f"FID reference ({split})",
        progress=progress and ctx.is_main,
        keep=ctx.shard_size(keep),
        ctx=ctx,
    )
    if path is not None and ctx.is_main:
        _atomic_savez(path, **_cache_arrays(stats, kept))
    return stats, kept


def _cache_arrays(stats: FeatureStats, kept: Tensor) -> dict[str, np.ndarray]:
    return {
        "version": np.array(CACHE_VERSION),
        "n": np.array(stats.n),
        "s": stats.s,
        "ss": stats.ss,
        "kept": kept.numpy().astype(np.float32),
    }


def _model_device(model: Any) -> torch.device:
    try:
        return next(model.parameters()).device
    except (AttributeError, StopIteration):
        return torch.device("cpu")


@torch.no_grad()
def evaluate_fid(
    model: Any,
    splits: Any,
    *,
    n_samples: int = 5000,
    reference: str = "train",
    sampler: str | None = None,
    extractor: Extractor | str | None = None,
    inception_path: str | os.PathLike | None = None,
    batch_size: int = 100,
    device: str | torch.device = "cpu",
    seed: int = 0,
    progress: bool = False,
    cache_dir: str | os.PathLike | None = None,
    recon: bool = True,
    precision_recall: bool = True,
    k: int = 3,
    reference_size: int | None = None,
    ctx: DistContext | None = None,
) -> dict[str, float | int | str]:
    """FID of ``n_samples`` samples (and of test reconstructions) against the reference split.

    ``model.sample(b, generator=g, sampler=sampler)`` and ``model.reconstruct(batch)`` must give
    images in [0, 1]; they run on the model's own device and their images move to ``device``
    for the extractor. ``extractor``: a callable (N, C, H, W) → (N, F), a registered name
    (``inception``, ``pixels``; built on ``device``), or None for
    :class:`~latentgap.metrics.inception.InceptionFeatures` loaded from ``inception_path``; a
    callable is used as is (put it on ``device`` yourself). ``reference_size`` keeps the first
    images of the reference split (default: all of it). Reconstructions of the first
    min(n_samples, |test|) test images are compared with the same reference statistics as the
    samples. Precision/recall (k-NN manifolds with ``k`` neighbours) use all sample features
    and min(n_samples, reference size) reference features. Returns ``fid_sample``, ``fid_recon``, ``precision``, ``recall``
    (when enabled), ``fid_samples``, ``fid_reference``, ``fid_reference_size``,
    ``fid_recon_images`` and ``fid_extractor``. With a distributed ``ctx`` the work is shared
    among the ranks (see the module docstring) and every rank returns the same numbers.
    """
    if n_samples <= 0 or batch_size <= 0 or k <= 0:
        raise ConfigError("n_samples, batch_size and k must be positive")
    ctx = ctx or DistContext()
    if n_samples < ctx.world_size:
        raise ConfigError(
            f"--fid-samples {n_samples} is fewer than the {ctx.world_size} processes; "
            "ask for more samples"
        )
    if reference not in ("train", "test"):
        raise ConfigError(f"FID reference must be 'train' or 'test', got {reference!r}")
    ref_set: ImageSet = getattr(splits, reference)
    if reference_size is not None:
        if reference_size <= 0:
            raise ConfigError("the FID reference size must be positive")
        ref_set = ref_set.subset(reference_size)
    if sampler is not None and hasattr(model, "samplers") and sampler not in model.samplers():
        raise ConfigError(
            f"the model has no sampler {sampler!r}; choose one of: {', '.join(model.samplers())}"
        )
    if extractor is None or isinstance(extractor, str):
        extractor = make_extractor(extractor or "inception", inception_path, device)
    ext_id = getattr(extractor, "extractor_id", type(extractor).__name__)
    pr_n = min(n_samples, len(ref_set)) if precision_recall else 0
    if precision_recall and min(pr_n, n_samples) <= k:
        raise ConfigError(f"precision/recall need more than k = {k} samples and reference images")

    ref_stats, ref_kept = reference_statistics(
        ref_set,
        reference,
        extractor,
        keep=pr_n,
        batch_size=batch_size,
        device=device,
        progress=progress,
        cache_dir=cache_dir,
        ctx=ctx,
    )
    progress = progress and ctx.is_main
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    try:
        gen_device = _model_device(model)
        g = torch.Generator(device=gen_device).manual_seed(ctx.rank_seed(seed))
        options = {} if sampler is None else {"sampler": sampler}
        mine = ctx.shard_size(n_samples)
        sizes = [min(batch_size, mine - s) for s in range(0, mine, batch_size)]
        samples = (model.sample(b, generator=g, **options) for b in sizes)
        sample_stats, sample_kept = extract(
            samples,
            extractor,
            device=device,
            total=len(sizes),
            desc="FID samples",
            progress=progress,
            keep=mine if precision_recall else 0,
            ctx=ctx,
        )
        results: dict[str, Any] = {"fid_sample": fid_from_stats(sample_stats, ref_stats)}
        if recon:
            test = splits.test.subset(min(n_samples, len(splits.test)))
            shard = ctx.covering_shard
            recons = (
                model.reconstruct(b.to(gen_device))
                for b in test.batches(batch_size, seed=seed, epoch=20_000, **shard)
            )
            recon_stats, _ = extract(
                recons,
                extractor,
                device=device,
                total=test.num_batches(batch_size, **shard),
                desc="FID reconstructions",
                progress=progress,
                ctx=ctx,
            )
            results["fid_recon"] = fid_from_stats(recon_stats, ref_stats)
            results["fid_recon_images"] = len(test)
    finally:
        if hasattr(model, "train"):
            model.train(was_training)
    if precision_recall:
        results["precision"], results["recall"] = knn_precision_recall(ref_kept, sample_kept, k)
        results["pr_k"] = k
    results.update(
        fid_samples=n_samples,
        fid_reference=reference,
        fid_reference_size=len(ref_set),
        fid_extractor=ext_id,
    )
    return results
