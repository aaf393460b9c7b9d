"""Annealed importance sampling (Neal 2001) of the partition function of an energy prior

    f(z) = N(z; 0, I)·exp(ℓ(z)),   Z = ∫ f(z) dz,

for any log-weight ℓ (VAEPP's pull-back prior has ℓ(z) = −β·D(G(z))). The path is geometric from
the normalised base N(0, I) (Z₀ = 1) to f:

    π_t(z) ∝ N(z; 0, I)·exp(t·ℓ(z)),   0 = t₀ < t₁ < … < t_K = 1,

each chain starts at z₀ ~ N(0, I), gains the log-weight (t_k − t_{k−1})·ℓ(z_{k−1}) and then moves by
one HMC transition (:mod:`latentgap.samplers.hmc`) that leaves π_{t_k} invariant. The mean of the
weights is an unbiased estimate of Z; so log Ẑ is, by Jensen, a *stochastic lower bound* of log Z
(E[log Ẑ] ≤ log Z) that tightens as the number of temperatures grows.

Reverse AIS (bidirectional Monte Carlo, Grosse et al. 2015) runs the same schedule from t = 1 back
to 0. Started at exact samples of π₁ it estimates 1/Z without bias, so −log of it is a stochastic
*upper* bound. Here it starts at the forward chains' end states resampled in proportion to their
weights (multinomially, within each block of chains), which are only approximate samples of π₁: the pair brackets log Z when those states are close to π₁, and their disagreement is the
convergence diagnostic to read (a wide gap means: more temperatures, more leapfrog steps).
Neither number is a guaranteed bound on a finite run.

Step sizes. A pilot run of ``pilot_chains`` chains adapts one step size per temperature toward
``target_accept`` (the mean HMC acceptance over chains at the previous temperature steers the next
one's step multiplicatively); the reported runs then use that schedule frozen, so their transitions
are fixed kernels and the estimates keep their unbiasedness in Z. The pilot is seeded identically on
every rank, so a torchrun job uses one schedule.

Everything is batched: thousands of chains move together (blocks of ``chain_batch``), the network is
called once per leapfrog step for a whole block, ℓ and ∇ℓ are cached with the state so that changing
the temperature costs no network call, and log-weights accumulate in float64.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from latentgap.distributed import DistContext
from latentgap.priors.partition import LogZEstimate, _Accumulator
from latentgap.samplers.hmc import TARGET_ACCEPT, HMCState, hmc_step

LogWeight = Callable[[Tensor], Tensor]
"""z (n, D) ↦ ℓ(z) = log f(z) − log N(z; 0, I) (n,), differentiable in z."""

SCHEDULES = ("sigmoid", "linear", "geometric")


def temperature_schedule(n_temps: int, kind: str = "sigmoid", delta: float = 4.0) -> Tensor:
    """0 = t₀ < … < t_K = 1 with K = ``n_temps`` steps, float64 (K + 1,).

    ``sigmoid`` (Grosse et al. 2015): σ(δ(2k/K − 1)) rescaled to [0, 1], dense at both ends;
    ``linear``: k/K; ``geometric``: 10^(−4(1 − k/K)) with t₀ = 0, dense near 0.
    """
    if n_temps < 1:
        raise ValueError(f"n_temps must be at least 1, got {n_temps}")
    s = torch.linspace(0.0, 1.0, n_temps + 1, dtype=torch.float64)
    if kind == "linear":
        t = s
    elif kind == "sigmoid":
        t = torch.sigmoid(delta * (2.0 * s - 1.0))
        t = (t - t[0]) / (t[-1] - t[0])
    elif kind == "geometric":
        t = torch.cat([torch.zeros(1, dtype=torch.float64), 10.0 ** (-4.0 * (1.0 - s[1:]))])
    else:
        raise ValueError(f"unknown schedule {kind!r}; choose one of: {', '.join(SCHEDULES)}")
    t[0], t[-1] = 0.0, 1.0
    return t


def _log_weight_and_grad(log_weight: LogWeight, z: Tensor) -> tuple[Tensor, Tensor]:
    """ℓ(z) (n,) and ∇ℓ(z) (n, D), detached; gradients w.r.t. z only."""
    with torch.enable_grad():
        z = z.detach().requires_grad_(True)
        lw = log_weight(z)
        if lw.shape != z.shape[:1]:
            raise ValueError(
                f"log_weight must map {tuple(z.shape)} to ({z.shape[0]},), got {tuple(lw.shape)}"
            )
        (grad,) = torch.autograd.grad(lw.sum(), z)
    return lw.detach(), grad.detach()


def _potential(log_weight: LogWeight, t: float):
    """U_t(z) = ½‖z‖² − t·ℓ(z) and its gradient; aux = (ℓ, ∇ℓ)."""

    def potential(z: Tensor) -> tuple[Tensor, Tensor, tuple[Tensor, ...]]:
        lw, glw = _log_weight_and_grad(log_weight, z)
        u = 0.5 * z.flatten(1).square().sum(1) - t * lw
        return u, z - t * glw, (lw, glw)

    return potential


@dataclass
class _Run:
    log_w: Tensor  # (n,) float64
    z: Tensor  # (n, D) end states
    accept: Tensor  # (K,) mean acceptance per temperature
    steps: Tensor  # (K,) step sizes used


def _anneal(
    log_weight: LogWeight,
    z: Tensor,
    temps: Tensor,
    steps: Tensor | None,
    n_leapfrog: int,
    generator: torch.Generator | None,
    *,
    init_step: float = 0.1,
    target_accept: float = TARGET_ACCEPT,
) -> _Run:
    """Anneal chains from π_{temps[0]} (z are samples of it) to π_{temps[-1]}.

    With ``steps`` None the step size adapts (pilot); otherwise ``steps[k−1]`` is used at temps[k].
    """
    n_k = len(temps) - 1
    lw, glw = _log_weight_and_grad(log_weight, z)
    log_w = torch.zeros(z.shape[0], dtype=torch.float64, device=z.device)
    accept = torch.empty(n_k, dtype=torch.float64)
    used = torch.empty(n_k, dtype=torch.float64)
    log_step = math.log(init_step)
    t_prev = float(temps[0])
    sq = 0.5 * z.flatten(1).square().sum(1)
    for k in range(1, n_k + 1):
        t = float(temps[k])
        log_w += (t - t_prev) * lw.double()
        state = HMCState(z, sq - t * lw, z - t * glw, (lw, glw))
        eps = math.exp(log_step) if steps is None else float(steps[k - 1])
        state, prob = hmc_step(_potential(log_weight, t), state, eps, n_leapfrog, generator)
        z, (lw, glw) = state.z, state.aux
        sq = 0.5 * z.flatten(1).square().sum(1)
        mean_prob = float(prob.mean())
        accept[k - 1], used[k - 1] = mean_prob, eps
        if steps is None:  # multiplicative Robbins–Monro step toward the target acceptance
            log_step += 0.5 * (mean_prob - target_accept) / max(target_accept, 1 - target_accept)
        t_prev = t
    return _Run(log_w, z, accept, used)


@dataclass
class AISResult:
    """What :func:`ais_log_z` returns; ``to_dict`` omits the tensors.

    ``log_z`` (forward AIS, a stochastic lower bound in expectation), ``std_err`` (delta-method
    standard error from the spread of the chains' weights: it measures spread, not the bias of a
    short schedule), ``ess`` (Kish's effective number of chains); ``log_z_coarse``: the same
    estimate with ``coarse_temps`` temperatures, to show convergence; ``log_z_reverse``: reverse AIS
    from the forward end states (an upper estimate); ``gap`` = reverse − forward and ``agree``
    whether it is within ``tolerance``. ``samples``: the forward end states (approximate samples of
    the prior; weighted by ``log_weights`` (float64) they estimate expectations under it), ``step_sizes``/``accept_per_temp``: per temperature; ``estimate``: the forward weights'
    accumulators as a :class:`LogZEstimate`, which combines across shards with
    :meth:`LogZEstimate.combine`.
    """

    log_z: float
    std_err: float
    ess: float
    n_chains: int
    n_temps: int
    n_leapfrog: int
    schedule: str
    acceptance: float
    pilot_chains: int = 0
    log_z_coarse: float | None = None
    coarse_temps: int | None = None
    log_z_reverse: float | None = None
    reverse_std_err: float | None = None
    gap: float | None = None
    tolerance: float = 1.0
    agree: bool | None = None
    seconds: float = 0.0
    estimate: LogZEstimate | None = field(default=None, repr=False)
    samples: Tensor | None = field(default=None, repr=False)
    log_weights: Tensor | None = field(default=None, repr=False)
    step_sizes: Tensor | None = field(default=None, repr=False)
    accept_per_temp: Tensor | None = field(default=None, repr=False)

    def to_dict(self, prefix: str = "") -> dict[str, Any]:
        keys = [
            "log_z",
            "std_err",
            "ess",
            "n_chains",
            "n_temps",
            "n_leapfrog",
            "schedule",
            "acceptance",
            "pilot_chains",
            "log_z_coarse",
            "coarse_temps",
            "log_z_reverse",
            "reverse_std_err",
            "gap",
            "tolerance",
            "agree",
            "seconds",
        ]
        return {prefix + k: getattr(self, k) for k in keys}


def ais_log_z(
    log_weight: LogWeight,
    dim: int,
    *,
    n_chains: int = 1024,
    n_temps: int = 1000,
    n_leapfrog: int = 5,
    schedule: str = "sigmoid",
    target_accept: float = TARGET_ACCEPT,
    init_step: float = 0.1,
    pilot_chains: int | None = None,
    reverse: bool = True,
    coarse_fraction: float | None = 0.25,
    tolerance: float = 1.0,
    chain_batch: int = 4096,
    seed: int = 0,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    ctx: DistContext | None = None,
    progress: bool = False,
    warn: bool = True,
) -> AISResult:
    """log Z of f(z) = N(z; 0, I)·exp(ℓ(z)) by annealed importance sampling (module docstring).

    ``log_weight`` maps z (n, D) to ℓ(z) (n,) and must be differentiable in z (for VAEPP:
    z ↦ −β·D(G(z))). ``n_chains`` forward chains over ``n_temps`` temperatures of ``schedule``,
    one HMC transition of ``n_leapfrog`` leapfrog steps each, with the step sizes a pilot of
    ``pilot_chains`` chains (default n_chains/4, between 16 and 128) adapted toward
    ``target_accept``. With ``reverse`` the chains are then
    annealed back (upper estimate); with ``coarse_fraction`` a run with that fraction of the
    temperatures is added. Disagreement beyond ``tolerance`` nats warns. With a distributed
    ``ctx`` the chains are split across ranks and the estimates combined exactly.
    """
    if pilot_chains is None:
        pilot_chains = min(128, max(16, n_chains // 4))
    if dim <= 0 or n_chains <= 0 or n_leapfrog <= 0 or chain_batch <= 0 or pilot_chains <= 0:
        raise ValueError("dim, n_chains, n_leapfrog, pilot_chains and chain_batch must be positive")
    start = time.perf_counter()
    ctx = ctx or DistContext()
    temps = temperature_schedule(n_temps, schedule)

    def normal(n: int, gen: torch.Generator) -> Tensor:
        return torch.randn(n, dim, generator=gen, device=device, dtype=dtype)

    pilot_gen = torch.Generator(device=device or "cpu").manual_seed(seed)
    pilot = _anneal(
        log_weight,
        normal(pilot_chains, pilot_gen),
        temps,
        None,
        n_leapfrog,
        pilot_gen,
        init_step=init_step,
        target_accept=target_accept,
    )
    steps = pilot.steps

    gen = torch.Generator(device=device or "cpu").manual_seed(ctx.rank_seed(seed + 1))
    mine = ctx.shard_size(n_chains)
    blocks = [min(chain_batch, mine - s) for s in range(0, mine, chain_batch)]
    if progress and ctx.is_main:
        from tqdm.auto import tqdm

        blocks = tqdm(blocks, desc=f"AIS ({n_temps} temperatures)", leave=False)

    forward, backward, coarse = _Accumulator(), _Accumulator(), _Accumulator()
    ends: list[Tensor] = []
    log_ws: list[Tensor] = []
    accepts: list[Tensor] = []
    n_coarse = max(1, round(n_temps * coarse_fraction)) if coarse_fraction else None
    if n_coarse is not None:
        coarse_temps = temperature_schedule(n_coarse, schedule)
        # the pilot's step sizes, read off at the coarse temperatures
        idx = torch.searchsorted(temps[1:].contiguous(), coarse_temps[1:].contiguous())
        coarse_steps = steps[idx.clamp(max=n_temps - 1)]
    for b in blocks:
        run = _anneal(log_weight, normal(b, gen), temps, steps, n_leapfrog, gen)
        forward.add(run.log_w)
        accepts.append(run.accept)
        ends.append(run.z)
        log_ws.append(run.log_w)
        if reverse:  # start from the end states resampled by their weights (closer to π₁)
            pick = torch.multinomial(
                torch.softmax(run.log_w, 0), b, replacement=True, generator=gen
            )
            back = _anneal(log_weight, run.z[pick], temps.flip(0), steps.flip(0), n_leapfrog, gen)
            backward.add(back.log_w)
        if n_coarse is not None:
            coarse.add(
                _anneal(
                    log_weight, normal(b, gen), coarse_temps, coarse_steps, n_leapfrog, gen
                ).log_w
            )
    est = forward.result("ais", ctx)
    accept_per_temp = torch.stack(accepts).mean(0)
    result = AISResult(
        log_z=est.log_z,
        std_err=est.std_err,
        ess=est.ess,
        n_chains=est.n_samples,
        n_temps=n_temps,
        n_leapfrog=n_leapfrog,
        schedule=schedule,
        acceptance=float(accept_per_temp.mean()),
        pilot_chains=pilot_chains,
        tolerance=tolerance,
        estimate=est,
        samples=torch.cat(ends),
        log_weights=torch.cat(log_ws),
        step_sizes=steps,
        accept_per_temp=accept_per_temp,
    )
    if n_coarse is not None:
        result.log_z_coarse = coarse.result("ais", ctx).log_z
        result.coarse_temps = n_coarse
    if reverse:
        rev: LogZEstimate = backward.result("ais-reverse", ctx)
        result.log_z_reverse = -rev.log_z
        result.reverse_std_err = rev.std_err
        result.gap = result.log_z_reverse - result.log_z
        result.agree = abs(result.gap) <= tolerance
        if warn and not result.agree and ctx.is_main:
            warnings.warn(
                f"forward and reverse AIS disagree: log Ẑ ∈ [{result.log_z:.2f}, "
                f"{result.log_z_reverse:.2f}] (gap {result.gap:.2f} > {tolerance:g} nats); "
                "raise the number of temperatures or leapfrog steps",
                stacklevel=2,
            )
    result.seconds = time.perf_counter() - start
    return result


__all__ = ["SCHEDULES", "AISResult", "LogWeight", "ais_log_z", "temperature_schedule"]
