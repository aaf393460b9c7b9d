"""Training throughput of every model's preset, as images/s and as a fraction of the matmul peak.

    python bench/models.py                          # the *-small presets, 2,000 MNIST images each
    python bench/models.py --preset vaepp-mnist     # any presets (the paper's nets are slow on CPU)

For each preset: one warm-up epoch over ``--images`` training images, then a timed one through the
trainer (so every step of the model's first phase is included: Algorithm 1's critic steps,
LDC-VAE's sampler step, ...). The floating-point work of one iteration (forward and backward of
each step) is counted with the FLOP formulas of ``torch.utils.flop_counter`` (matmuls and
convolutions, through a dispatch mode: ``FlopCounterMode`` itself cannot follow the double
backward of the gradient penalties), so ``fraction_of_peak`` = counted FLOP/s ÷ the fp32 matmul peak measured in the
same run. Elementwise work is not counted: the fraction is that of the dense arithmetic.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import socket
import sys
import time
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import REPO, matmul_peak_gflops  # noqa: E402
from trainer_timing import QUIET, bench_trainer  # noqa: E402

SMALL = (
    "vae-mnist-small",
    "vaepp-mnist-small",
    "vaepp-naive-mnist-small",
    "ldc-vae-mnist-mlp",
    "vae-rae-mnist-small",
    "cv-vae-mnist-small",
    "wae-mmd-mnist-small",
    "two-stage-vae-mnist-small",
    "rae-l2-mnist-small",
    "rae-sn-mnist-small",
    "rae-gp-mnist-small",
)


class FlopCount(TorchDispatchMode):
    """Sums torch.utils.flop_counter's FLOP formulas over every aten op that has one."""

    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.total += formula(*args, **kwargs, out_val=out)
        return out


def iteration_flops(trainer, phase, batch) -> int:
    """FLOPs (matmuls, convolutions) of one iteration of ``phase``: every step's forward and
    backward, repeats included, counted on ``batch``."""
    with FlopCount() as counter:
        for step in phase.steps:
            for _ in range(step.repeat):
                trainer._update(step.loss, step.group, batch)
    return counter.total


def bench_preset(name: str, splits_by_kind: dict, images: int) -> dict:
    import latentgap.models  # noqa: F401  (registers every model's presets)
    from latentgap.config import ExperimentConfig
    from latentgap.presets import PRESETS

    values = PRESETS.get(name).values
    config = ExperimentConfig.from_dict(
        {
            **{k: v for k, v in values.items() if k != "train"},
            "train": {
                **values.get("train", {}),
                **QUIET,
            },
        }
    )
    binarize = config.data.options.get("binarize", True)
    splits = splits_by_kind[binarize]
    with bench_trainer(config, splits, images) as trainer:
        phase = trainer.phases[0]
        trainer._run_epoch(phase)  # warm-up
        t0 = time.perf_counter()
        record = trainer._run_epoch(phase)
        seconds = time.perf_counter() - t0
        batch = next(trainer.train_set.batches(config.train.batch_size, shuffle=True, seed=1))
        flops = iteration_flops(trainer, phase, batch)
    train = trainer.train_set
    batches_per_iteration = sum(step.repeat for step in phase.steps)
    iterations = train.num_batches(config.train.batch_size) / batches_per_iteration
    return {
        "preset": name,
        "model": config.model,
        "phase": phase.name,
        "batch_size": config.train.batch_size,
        "images_per_s": record["images_per_s"],
        "epoch_seconds": seconds,
        "gflop_per_iteration": flops / 1e9,
        "gflops": flops * iterations / seconds / 1e9,
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--data-dir", default=os.environ.get("LATENTGAP_DATA", str(REPO.parent / "shared" / "data"))
    )
    p.add_argument("--preset", action="append", help="presets to run (default: the *-small ones)")
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from latentgap.data import get_dataset
    from latentgap.reproduce.harness import machine_info

    splits_by_kind = {
        True: get_dataset("mnist", data_dir=args.data_dir),
        False: get_dataset("mnist", data_dir=args.data_dir, binarize=False),
    }
    peak = matmul_peak_gflops()
    results = []
    for name in args.preset or SMALL:
        r = bench_preset(name, splits_by_kind, args.images)
        r["fraction_of_peak"] = r["gflops"] / peak
        results.append(r)
        print(
            f"{name:28s} {r['images_per_s']:9.0f} img/s  {r['gflops']:7.1f} GFLOP/s  "
            f"{r['fraction_of_peak']:.2f} of peak"
        )
    report = {
        "benchmark": "models",
        "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
        "machine": machine_info(),
        "torch_threads": torch.get_num_threads(),
        "matmul_peak_gflops": peak,
        "train_images": args.images,
        "results": results,
    }
    out = args.out or REPO / "bench" / "results" / f"models-{socket.gethostname()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
