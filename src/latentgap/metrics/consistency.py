"""Latent consistency: how far the codes used for generation are from the codes the encoder
gives data (the LDC-VAE paper's Fig. 2, turned into numbers).

Two numbers between n encoder codes of test images and n generation codes (prior samples for a
VAE, sampler-net samples for LDC-VAE, GMM samples for an RAE):

- the squared MMD with a Gaussian kernel (bandwidth: median pairwise distance of the pooled set),
  with a permutation p-value (Gretton et al. 2012): small MMD and large p = consistent;
- a classifier two-sample test (Lopez-Paz & Oquab 2017): the held-out accuracy of a logistic
  regression telling the two sets apart (0.5 = indistinguishable); needs scikit-learn.

Models with a stochastic implicit encoder (LDC-VAE: ``particle_codes``) also get the within /
between particle spread: the root mean per-dimension variance of one image's particles, and of
the per-image particle means across images; their ratio is small when codes identify their image.
Models with an ``encoder-gmm`` sampler (LDC-VAE) also get the MMD² and C2ST of a 10-component GMM
fitted to the training codes against the same encoder codes: the reference a generation sampler
could reach with a simple density, as RAE's ex-post GMM.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from latentgap.data.base import ImageSet
from latentgap.errors import ConfigError


@dataclass
class CodeSets:
    encoder: Tensor  # (n, D)
    generation: Tensor  # (n, D)


@torch.no_grad()
def collect_codes(
    model, test: ImageSet, n: int = 2000, seed: int = 0, sampler: str | None = None
) -> CodeSets:
    """n encoder codes of the first n test images and n generation codes."""
    device = model.device
    g = torch.Generator(device=device).manual_seed(seed)
    model.eval()
    enc = [model.latent_codes(b.to(device), generator=g) for b in test.subset(n).batches(500)]
    gen = model.generation_codes(n, generator=g, sampler=sampler)
    return CodeSets(torch.cat(enc).float().cpu(), gen.float().cpu())


def mmd_test(x: Tensor, y: Tensor, permutations: int = 200, seed: int = 0) -> tuple[float, float]:
    """Biased MMD² (Gaussian kernel, median bandwidth) and its permutation p-value.

    With signs a_i = 1/n on x and −1/n on y, MMD² = aᵀKa; all permutations are scored at once as
    diag(AᵀKA) for a (2n, P) matrix A of permuted signs: one matrix product, no loop.
    """
    if len(x) != len(y):
        raise ValueError("mmd_test needs two sets of the same size")
    n = len(x)
    pooled = torch.cat([x, y]).double()  # (2n, D)
    d2 = torch.cdist(pooled, pooled).pow(2)
    iu = torch.triu_indices(2 * n, 2 * n, 1)
    bandwidth = d2[iu[0], iu[1]].median().clamp_min(1e-12)
    k = torch.exp(-d2 / bandwidth)  # (2n, 2n)
    signs = torch.cat([torch.full((n,), 1.0 / n), torch.full((n,), -1.0 / n)]).double()
    g = torch.Generator().manual_seed(seed)
    perms = torch.stack([torch.randperm(2 * n, generator=g) for _ in range(permutations)], 1)
    a = torch.cat([signs[:, None], signs[perms]], 1)  # (2n, 1 + P)
    mmd2 = ((k @ a) * a).sum(0)  # (1 + P,)
    observed = mmd2[0]
    p_value = (int((mmd2[1:] >= observed).sum()) + 1) / (permutations + 1)
    return float(observed), p_value


def classifier_accuracy(x: Tensor, y: Tensor, seed: int = 0) -> float:
    """5-fold cross-validated accuracy of a logistic regression separating x from y."""
    try:
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import cross_val_score
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
    except ImportError:
        raise ConfigError(
            "the classifier test needs scikit-learn: pip install scikit-learn (a dependency of latentgap)"
        ) from None
    import numpy as np

    features = torch.cat([x, y]).numpy()
    labels = np.r_[np.zeros(len(x)), np.ones(len(y))]
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    folds = np.random.default_rng(seed).permutation(len(labels))
    scores = cross_val_score(clf, features[folds], labels[folds], cv=5)
    return float(scores.mean())


def latent_consistency(
    model,
    test: ImageSet,
    n: int = 2000,
    seed: int = 0,
    permutations: int = 200,
    classifier: bool = True,
    particles: int = 8,
) -> dict[str, float]:
    """``consistency_mmd2``, ``consistency_mmd_p`` and (with sklearn) ``consistency_c2st``;
    for LDC-VAE also ``consistency_{within,between}_spread`` and ``consistency_spread_ratio``
    (from ``particles`` encoder particles of each of the n test images) and the same two-sample
    numbers for its ``encoder-gmm`` reference (``consistency_gmm_mmd2``, ...)."""
    codes = collect_codes(model, test, n, seed)
    mmd2, p = mmd_test(codes.encoder, codes.generation, permutations, seed)
    out = {
        "consistency_mmd2": mmd2,
        "consistency_mmd_p": p,
        "consistency_n": float(len(codes.encoder)),
    }
    if classifier:
        out["consistency_c2st"] = classifier_accuracy(codes.encoder, codes.generation, seed)
    if hasattr(model, "particle_codes"):
        out.update(particle_spread(model, test, n, particles, seed))
    if "encoder-gmm" in model.samplers():
        gmm = collect_codes(model, test, n, seed, sampler="encoder-gmm")
        mmd2, p = mmd_test(gmm.encoder, gmm.generation, permutations, seed)
        out["consistency_gmm_mmd2"], out["consistency_gmm_mmd_p"] = mmd2, p
        if classifier:
            out["consistency_gmm_c2st"] = classifier_accuracy(gmm.encoder, gmm.generation, seed)
    return out


@torch.no_grad()
def particle_spread(
    model, test: ImageSet, n: int = 2000, particles: int = 8, seed: int = 0
) -> dict[str, float]:
    """Within- and between-image spread of ``particles`` encoder draws for the first n test
    images, pooled over all of them: (within, between, within / between)."""
    device = model.device
    g = torch.Generator(device=device).manual_seed(seed)
    model.eval()
    z = torch.cat(
        [model.particle_codes(b.to(device), particles, g) for b in test.subset(n).batches(500)]
    ).double()  # (n, P, D)
    within = z.var(dim=1, correction=0).mean().sqrt()
    between = z.mean(1).var(dim=0, correction=0).mean().sqrt()
    return {
        "consistency_within_spread": float(within),
        "consistency_between_spread": float(between),
        "consistency_spread_ratio": float(within / between),
    }
