"""Data-parallel scaling on one machine: the same jobs with 1 process × T threads and with
N processes × 1 thread (torchrun, gloo on CPU / NCCL on GPUs), at the same global batch.

    python bench/scaling.py                 # writes bench/results/scaling-<host>.json
    python bench/scaling.py --procs 1 2 4   # more process counts (cores permitting)

Jobs (MNIST, the small presets' networks, real data from $LATENTGAP_DATA):
``train-vae`` (MLP 784-500-500, z = 40, global batch 100), ``train-vaepp`` (Algorithm 2 with the
``vaepp-mnist-small`` networks, global batch 128), ``nll`` (K = 1000 importance samples on test
images, sharded), ``log-z`` (the Eq. (8) sweep over training images, sharded). Every
configuration also measures the fp32 matmul peak of its processes in the same launch, so each
throughput is given as a fraction of the peak available to it.

Each configuration is one torchrun launch of this file with ``--worker``; rank 0 writes its
numbers to a JSON file that the driver collects.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from trainer_timing import QUIET, bench_trainer  # noqa: E402


def _train_throughput(ctx, splits, preset: str, global_batch: int, images: int) -> float:
    """Images/s of training epochs over ``images`` training images (all ranks together)."""
    from latentgap.config import ExperimentConfig
    from latentgap.presets import PRESETS

    values = PRESETS.get(preset).values
    config = ExperimentConfig.from_dict(
        {
            "model": values["model"],
            "model_options": values["model_options"],
            "data": {"name": "mnist"},
            "train": {
                "epochs": 1,
                "batch_size": global_batch // ctx.world_size,
                **QUIET,
            },
        }
    )
    with bench_trainer(config, splits, images, ctx) as trainer:
        trainer._run_epoch(trainer.phases[0])  # warm-up epoch (allocations, DDP buckets)
        t0 = time.perf_counter()
        trainer._run_epoch(trainer.phases[0])
        train = trainer.train_set
        return len(train) // ctx.world_size * ctx.world_size / (time.perf_counter() - t0)


def worker(args: argparse.Namespace) -> None:
    from latentgap.data import get_dataset
    from latentgap.distributed import barrier, init_distributed, shutdown
    from latentgap.metrics.nll import evaluate_nll
    from latentgap.models import build_model
    from latentgap.presets import PRESETS
    from throughput import matmul_peak_gflops

    ctx = init_distributed("cpu")
    splits = get_dataset("mnist", data_dir=args.data_dir)
    barrier()
    peak = matmul_peak_gflops(seconds=2.0)  # all ranks at once: what they share
    peak_total = float(ctx.all_reduce_sum(torch.tensor([peak], dtype=torch.float64)).item())
    out: dict = {"world_size": ctx.world_size, "threads": torch.get_num_threads()}
    out["matmul_peak_gflops_total"] = peak_total

    jobs = set(args.jobs)
    if "train-vae" in jobs:
        out["train-vae_images_per_s"] = _train_throughput(
            ctx, splits, "vae-mnist-small", 100, args.train_images
        )
    if "train-vaepp" in jobs:
        out["train-vaepp_images_per_s"] = _train_throughput(
            ctx, splits, "vaepp-mnist-small", 128, args.vaepp_images
        )
    if "nll" in jobs:
        options = PRESETS.get("vae-mnist-small").values["model_options"]
        torch.manual_seed(0)
        model = build_model("vae", options, splits.spec)
        test = splits.test.subset(args.nll_images)
        barrier()
        t0 = time.perf_counter()
        evaluate_nll(model, test, k=1000, ctx=ctx)
        out["nll_images_per_s"] = len(test) / (time.perf_counter() - t0)
    if "log-z" in jobs:
        options = PRESETS.get("vaepp-mnist-small").values["model_options"]
        torch.manual_seed(0)
        model = build_model("vaepp", options, splits.spec).eval()
        model.prepare_training(splits.train)
        train = splits.train.subset(args.logz_images)
        barrier()
        t0 = time.perf_counter()
        est = model.estimate_log_z(train, samples_per_image=args.logz_samples, passes=1, ctx=ctx)
        out["log-z_samples_per_s"] = est.n_samples / (time.perf_counter() - t0)
    if ctx.is_main:
        Path(args.result).write_text(json.dumps(out))
    shutdown()


def launch(procs: int, threads: int, args: argparse.Namespace, result: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    forwarded = [
        "--worker",
        "--result",
        str(result),
        "--data-dir",
        args.data_dir,
        "--train-images",
        str(args.train_images),
        "--vaepp-images",
        str(args.vaepp_images),
        "--nll-images",
        str(args.nll_images),
        "--logz-images",
        str(args.logz_images),
        "--logz-samples",
        str(args.logz_samples),
        "--jobs",
        *args.jobs,
    ]
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={procs}",
        __file__,
        *forwarded,
    ]
    proc = subprocess.run(cmd, env=env, capture_output=not args.verbose, text=True)
    if proc.returncode != 0:
        raise SystemExit(
            f"{procs} × {threads} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-6000:]}"
        )
    return json.loads(result.read_text())


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    p.add_argument(
        "--data-dir", default=os.environ.get("LATENTGAP_DATA", str(REPO.parent / "shared" / "data"))
    )
    p.add_argument("--procs", type=int, nargs="+", default=[2])
    p.add_argument("--train-images", type=int, default=6000)
    p.add_argument("--vaepp-images", type=int, default=1024)
    p.add_argument("--nll-images", type=int, default=300)
    p.add_argument("--logz-images", type=int, default=20000)
    p.add_argument("--logz-samples", type=int, default=8)
    p.add_argument(
        "--jobs", nargs="+", default=["train-vae", "train-vaepp", "nll", "log-z"], metavar="JOB"
    )
    p.add_argument("--verbose", action="store_true")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    if args.worker:
        worker(args)
        return {}

    from latentgap.reproduce.harness import machine_info

    configs = [(1, 1)]  # (processes, threads per process)
    for n in args.procs:
        configs += [(1, n), (n, 1)]
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (procs, threads) in enumerate(configs):
            numbers = launch(procs, threads, args, Path(tmp) / f"r{i}.json")
            numbers.update(processes=procs, threads_per_process=threads)
            runs.append(numbers)
            print(json.dumps(numbers))
    base = runs[0]
    for r in runs:
        r["peak_ratio_vs_1x1"] = r["matmul_peak_gflops_total"] / base["matmul_peak_gflops_total"]
        for key in [k for k in r if k.endswith("_per_s")]:
            r[key.replace("_per_s", "_speedup_vs_1x1")] = r[key] / base[key]
    report = {
        "benchmark": "scaling",
        "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
        "machine": machine_info(),
        "load_average_at_end": os.getloadavg(),
        "runs": runs,
        "note": "speedup: throughput over the 1 process × 1 thread run; peak_ratio_vs_1x1: the "
        "same for the summed fp32 matmul peak of the configuration's processes, measured "
        "together (the compute the configuration has; ideal scaling reaches it)",
    }
    out = args.out or REPO / "bench" / "results" / f"scaling-{socket.gethostname()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
