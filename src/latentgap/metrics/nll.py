"""Negative log-likelihood by importance sampling (the IWAE bound, Burda et al. 2016).

    log p(x) ≈ log (1/K) Σ_k p(x, z_k) / q(z_k | x),   z_k ~ q(z | x),

a stochastic lower bound whose gap closes as K grows. Examples and samples are batched together:
each model call scores (K_chunk × B) latent codes at once, and chunks over K are merged exactly
with log-sum-exp, so K = 1000 never needs a Python loop over examples.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor

from latentgap.data.base import Batch, ImageSet
from latentgap.distributed import DistContext


@dataclass
class NLLResult:
    """Test NLL in nats (mean over examples; mean ± std over repeats) and bits/dim."""

    nll_nats: float
    nll_std: float
    bits_per_dim: float
    elbo: float
    n_examples: int
    iw_samples: int
    repeats: int
    per_repeat: list[float] = field(default_factory=list)
    extra: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        extra = d.pop("extra")
        d.update(extra)
        return d


def _mean_or_first(values: list) -> object:
    """The mean of numeric per-repeat diagnostics; the first value of others (a method name)."""
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return sum(values) / len(values)
    return values[0]


@torch.no_grad()
def log_likelihood(model, batch: Batch, k: int, max_rows: int = 4096) -> tuple[Tensor, Tensor]:
    """Importance-sampled log p(x) and the single-sample ELBO estimate, each (B,).

    ``max_rows`` bounds K_chunk × B, the number of latent codes decoded in one call.
    """
    b = len(batch)
    chunk = max(1, min(k, max_rows // max(b, 1)))
    parts: list[Tensor] = []
    for start in range(0, k, chunk):
        parts.append(model.log_importance_weights(batch, min(chunk, k - start)))  # (k_c, B)
    log_w = torch.cat(parts, dim=0)  # (K, B)
    log_px = torch.logsumexp(log_w, dim=0) - math.log(k)
    return log_px, log_w.mean(dim=0)


@torch.no_grad()
def evaluate_nll(
    model,
    data: ImageSet,
    *,
    k: int = 1000,
    repeats: int = 1,
    batch_size: int | None = None,
    seed: int = 0,
    max_rows: int | None = None,
    progress: bool = False,
    before_repeat: Callable[[int], dict[str, float]] | None = None,
    ctx: DistContext | None = None,
) -> NLLResult:
    """Test NLL of ``model`` on ``data`` with ``k`` importance samples, repeated ``repeats`` times.

    ``max_rows`` bounds the codes scored per model call (default: ``model.eval_rows``).
    Each repeat draws fresh binarisations (for dynamically binarised data) and fresh samples;
    ``before_repeat(r)`` runs first (VAEPP re-estimates log Ẑ there) and may return diagnostics,
    averaged into ``extra``. With a distributed ``ctx`` each rank scores its shard of the images
    (every image once, with its own random draws) and the sums over ranks are combined exactly;
    every rank returns the same result.
    """
    if k <= 0 or repeats <= 0:
        raise ValueError("k and repeats must be positive")
    ctx = ctx or DistContext()
    shard = ctx.covering_shard
    device = next(model.parameters()).device
    if device.type == "cuda":
        data = data.to(device)  # batches (and binarisations) made on the GPU: no copies
    if max_rows is None:  # codes per model call: the model's preference (conv nets: small)
        max_rows = getattr(model, "eval_rows", 4096)
    if batch_size is None:
        batch_size = max(1, min(len(data), max_rows // k if k < max_rows else 1))
    was_training = model.training
    model.eval()
    per_repeat: list[float] = []
    elbos: list[float] = []
    extras: dict[str, list[float]] = {}
    n_total = 0
    try:
        for r in range(repeats):
            if before_repeat is not None:
                for key, value in before_repeat(r).items():
                    extras.setdefault(key, []).append(value)
            torch.manual_seed(ctx.rank_seed(seed * 1009 + r))
            sums = torch.zeros(3, dtype=torch.float64, device=device)  # Σ log p, Σ elbo, n
            batches = data.batches(batch_size, seed=seed, epoch=10_000 + r, **shard)
            if progress and ctx.is_main:
                from tqdm.auto import tqdm

                batches = tqdm(
                    batches,
                    total=data.num_batches(batch_size, **shard),
                    desc=f"NLL K={k} repeat {r + 1}/{repeats}",
                    leave=False,
                )
            for batch in batches:
                batch = batch.to(device)
                log_px, elbo = log_likelihood(model, batch, k, max_rows)
                sums += torch.stack(
                    [
                        log_px.double().sum(),
                        elbo.double().sum(),
                        torch.tensor(len(batch), device=device, dtype=torch.float64),
                    ]
                )
            sums = ctx.all_reduce_sum(sums)
            n_total = int(sums[2].item())
            per_repeat.append(-(sums[0] / sums[2]).item())
            elbos.append((sums[1] / sums[2]).item())
    finally:
        model.train(was_training)
    nll = sum(per_repeat) / repeats
    std = math.sqrt(sum((v - nll) ** 2 for v in per_repeat) / (repeats - 1)) if repeats > 1 else 0.0
    dim = data.spec.dim
    return NLLResult(
        nll_nats=nll,
        nll_std=std,
        bits_per_dim=nll / (dim * math.log(2)),
        elbo=sum(elbos) / repeats,
        n_examples=n_total,
        iw_samples=k,
        repeats=repeats,
        per_repeat=per_repeat,
        extra={key: _mean_or_first(v) for key, v in extras.items()},
    )
