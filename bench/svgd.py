"""Time of one SVGD direction (Eq. 10/15 of the LDC-VAE paper) for B sets of n particles in d
dimensions, with the median-bandwidth RBF kernel and with a fixed bandwidth (which skips the
median over the n(n − 1)/2 pairs).

    python bench/svgd.py                 # writes bench/results/svgd-<host>.json

On a shared 2-core machine the timings swing with the other load (``load_average`` is recorded);
``--threads 1`` avoids the OpenMP oversubscription that makes them erratic.

Cost model: the direction is O(B n² d) multiply-adds (two batched matrix products) plus the
O(B n²) kernel matrix and, for the median heuristic, a median over B · n(n − 1)/2 distances.
"""

from __future__ import annotations

import argparse
import json
import shlex
import socket
import statistics
import sys
import time
from pathlib import Path

import torch

from latentgap.reproduce.harness import machine_info
from latentgap.stein import RBFKernel, svgd_direction

REPO = Path(__file__).resolve().parents[1]


def time_direction(z: torch.Tensor, s: torch.Tensor, kernel, budget_s: float) -> list[float]:
    """Wall times (ms) of repeated ``svgd_direction`` calls: one warm-up, then up to 5 runs or
    until ``budget_s`` is spent (at least 1 run)."""
    svgd_direction(z, s, kernel)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < 5 and (not times or time.perf_counter() - start < budget_s):
        t0 = time.perf_counter()
        svgd_direction(z, s, kernel)
        times.append((time.perf_counter() - t0) * 1000)
    return times


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--n", type=int, nargs="+", default=[8, 32, 128, 512])
    p.add_argument("--d", type=int, nargs="+", default=[2, 16, 128])
    p.add_argument("--budget", type=float, default=0.5, help="seconds per configuration")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    kernels = {"rbf-median": RBFKernel("paper"), "rbf-fixed": RBFKernel("paper", bandwidth=1.0)}
    results = []
    for n in args.n:
        for d in args.d:
            z = torch.randn(args.batch, n, d, generator=g)  # (B, n, d)
            s = torch.randn(args.batch, n, d, generator=g)
            for name, kernel in kernels.items():
                times = time_direction(z, s, kernel, args.budget)
                ms = statistics.median(times)
                row = {
                    "B": args.batch,
                    "n": n,
                    "d": d,
                    "kernel": name,
                    "ms": round(ms, 3),
                    "runs": len(times),
                    "particles_per_s": round(args.batch * n / (ms / 1000)),
                    "gflops": round(2 * 2 * args.batch * n * n * d / (ms / 1000) / 1e9, 2),
                }
                results.append(row)
                print(json.dumps(row), flush=True)
    report = {
        "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
        "machine": machine_info(),
        "note": "gflops counts only the two O(B n² d) products of the direction",
        "results": results,
    }
    out = args.out or REPO / "bench" / "results" / f"svgd-{socket.gethostname()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    return report


if __name__ == "__main__":
    main()
