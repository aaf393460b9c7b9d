"""Process groups: single-process by default, data parallel under torchrun.

``torchrun --nproc_per_node N -m latentgap train ...`` (or ``evaluate``) sets RANK, WORLD_SIZE and
LOCAL_RANK; we then join a process group (gloo on CPU, NCCL on CUDA; multi-node through
torchrun's own rendezvous arguments). Training wraps the model in DistributedDataParallel;
evaluation shards its work (test images, log Ẑ samples, FID images) and reduces exactly with the
collectives of :class:`DistContext`, which are identities in a single process. Only rank 0 writes
files.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import Tensor

from latentgap.errors import ConfigError


def _initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def _comm_device() -> torch.device:
    """Where the backend wants tensors: this process's GPU for NCCL, else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


@dataclass(frozen=True)
class DistContext:
    """This process's place in the group, and the reductions evaluation needs."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def shard_size(self, n: int) -> int:
        """How many of ``n`` items this rank takes when all of them are covered (items
        rank, rank + W, rank + 2W, ...: the first n mod W ranks take one more)."""
        return n // self.world_size + (1 if self.rank < n % self.world_size else 0)

    @property
    def covering_shard(self) -> dict[str, int | bool]:
        """``ImageSet.batches`` / ``num_batches`` arguments giving this rank its share of every
        example (evaluation: the shards' sums add up to the whole set's)."""
        return {"rank": self.rank, "world_size": self.world_size, "even": False}

    def rank_seed(self, seed: int) -> int:
        """A seed for this rank's share of random draws (rank 0 keeps ``seed``, so a single
        process draws what rank 0 of a job would)."""
        return seed + 1_000_003 * self.rank

    def all_reduce_sum(self, t: Tensor) -> Tensor:
        """The sum of ``t`` over ranks (a copy; ``t`` itself is untouched)."""
        if not (self.enabled and _initialized()):
            return t
        out = t.to(_comm_device(), copy=True)
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out.to(t.device)

    def all_gather_cat(self, t: Tensor) -> Tensor:
        """Every rank's ``t`` (n_r, ...) concatenated in rank order; the n_r may differ."""
        if not (self.enabled and _initialized()):
            return t
        device = _comm_device()
        n = torch.tensor([t.shape[0]], device=device, dtype=torch.long)
        sizes = [torch.zeros_like(n) for _ in range(self.world_size)]
        dist.all_gather(sizes, n)
        counts = [int(s.item()) for s in sizes]
        padded = torch.zeros((max(counts), *t.shape[1:]), dtype=t.dtype, device=device)
        padded[: t.shape[0]] = t.to(device)
        parts = [torch.empty_like(padded) for _ in range(self.world_size)]
        dist.all_gather(parts, padded)
        return torch.cat([p[:c] for p, c in zip(parts, counts, strict=True)]).to(t.device)

    def any(self, flag: bool) -> bool:
        """True on every rank if ``flag`` is true on any rank (so all ranks stop together)."""
        if not (self.enabled and _initialized()):
            return flag
        t = torch.tensor([1.0 if flag else 0.0])
        return bool(self.all_reduce_sum(t).item() > 0)


TIMEOUT_ENV = "LATENTGAP_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 300.0


def process_group_timeout() -> timedelta:
    """How long a collective waits for a missing rank before the job fails:
    ``$LATENTGAP_DIST_TIMEOUT`` seconds, default 5 minutes (gloo's own default is 30, which
    leaves the other ranks of a job whose rank died hanging for half an hour)."""
    text = os.environ.get(TIMEOUT_ENV, "")
    if not text:
        return timedelta(seconds=DEFAULT_TIMEOUT_S)
    try:
        seconds = float(text)
    except ValueError:
        seconds = float("nan")
    if not (math.isfinite(seconds) and seconds > 0):
        raise ConfigError(f"{TIMEOUT_ENV}={text!r}: expected a positive number of seconds")
    return timedelta(seconds=seconds)


def init_distributed(device: str) -> DistContext:
    """Join the torchrun process group if launched by torchrun, else a single-process context."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistContext()
    try:
        rank = int(os.environ["RANK"])
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    except (KeyError, ValueError):
        raise ConfigError(
            f"WORLD_SIZE={world_size} but RANK is missing or not a number; "
            "launch with torchrun --nproc_per_node N -m latentgap ..."
        ) from None
    if not _initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend, timeout=process_group_timeout())
    return DistContext(rank, world_size, local_rank)


def resolve_device(device: str, ctx: DistContext) -> torch.device:
    """``cuda`` becomes this process's GPU under torchrun."""
    if device == "cuda" and ctx.enabled:
        return torch.device("cuda", ctx.local_rank)
    return torch.device(device)


def barrier() -> None:
    if _initialized():
        dist.barrier()


def shutdown(wait: bool = True) -> None:
    """Leave the process group (the end of a torchrun command). With ``wait`` every rank first
    waits for the others: a rank tearing gloo down while another still talks to it can abort
    the job ("terminate called without an active exception")."""
    if _initialized():
        try:
            if wait:
                dist.barrier()
        finally:
            dist.destroy_process_group()


@contextlib.contextmanager
def process_group_scope() -> Iterator[None]:
    """Run a command's body, then leave the process group: after all ranks are done on success,
    at once on an error (the other ranks may never reach a barrier)."""
    try:
        yield
    except BaseException:
        shutdown(wait=False)
        raise
    shutdown(wait=True)
