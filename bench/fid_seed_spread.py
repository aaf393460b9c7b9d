"""How much does a sample FID move with the sampling seed alone? (the spread behind "within noise")

Loads a trained run and computes its sample FID (no reconstructions, no precision/recall) once per
seed, with the protocol of the cpu-long tables (``--samples`` generated images against
``--reference-size`` training images), and writes each value, their mean and standard deviation:

    python bench/fid_seed_spread.py runs/long/ldc/ldc-vae-mnist --seeds 0 1 2 --out bench/results/x.json
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

from latentgap.metrics.fid import evaluate_fid
from latentgap.reproduce.harness import machine_info
from latentgap.train.run import load_run


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--samples", type=int, default=1000)
    p.add_argument("--reference-size", type=int, default=2000)
    p.add_argument("--sampler", default=None, help="a sampler of the model (default: its own)")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    model, _, splits = load_run(args.run_dir)
    results = {
        "command": shlex.join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
        "run": str(args.run_dir),
        "machine": machine_info(),
        "fid_sample": {},
    }
    for seed in args.seeds:
        t0 = time.perf_counter()
        fid = evaluate_fid(
            model,
            splits,
            n_samples=args.samples,
            reference_size=args.reference_size,
            sampler=args.sampler,
            seed=seed,
            recon=False,
            precision_recall=False,
        )["fid_sample"]
        results["fid_sample"][seed] = fid
        print(
            json.dumps({"seed": seed, "fid_sample": fid, "s": time.perf_counter() - t0}), flush=True
        )
        values = list(results["fid_sample"].values())
        results["mean"] = statistics.fmean(values)
        results["std"] = statistics.stdev(values) if len(values) > 1 else None
        if args.out:
            args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
