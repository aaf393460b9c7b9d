"""The GPU check of issue 14: what one epoch of the paper's VAEPP MNIST preset costs on this GPU,
how fast AIS and the NLL run, and what ``reproduce --budget full`` would take, in one JSON.

    python bench/gpu_check.py                 # CUDA; writes bench/results/gpu-check-<host>.json
    python bench/gpu_check.py --device cpu --quick --out /tmp/x.json   # tests this script only

Measured, each job in its own process with its own time box (a job that fails or runs out of
time records its error; the others go on), in this order:

- ``train:fp32``, ``train:bf16``, ``train:compile``, ``train:cudagraphs``: the ``vaepp-mnist``
  (ResNet 16-32-64, z = 13, batch 128, Algorithm 2 with persistent chains) training step under
  ``train.precision`` fp32 / bf16 and ``train.compile`` None / "default" / "reduce-overhead"
  (CUDA graphs), timed over a fixed number of iterations after warm-up, extrapolated to an epoch
  of 60,000 images, with torch.cuda.max_memory_allocated;
- ``vaepp_eval``: AIS gradient evaluations/s on the briefly trained prior (priors/ais.py), the
  images/s of the K = 1000 importance-sampled NLL (metrics/nll.py) and the per-epoch extras;
- ``plan``: the training throughput of each distinct configuration of the paper tables'
  full-budget runs, then GPU hours per run and table (``bench/gpu_plan.py``).

The fp32 / TF32 / bf16 matmul peaks are measured in the same run so that the throughputs can
be read as fractions of what this GPU does. ``--device cpu`` exists to test this script on
machines without a GPU: its JSON says ``"device": "cpu"`` and its numbers are no GPU results.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_jobs import PRESET, VARIANTS, run_job, settings_for  # noqa: E402
from gpu_plan import planned_runs, project  # noqa: E402
from throughput import matmul_peak  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TARGET_EPOCH_SECONDS = 5.0  # issue 14: 2,000 paper epochs in under 3 h
PAPER_EPOCHS = 2000
# time box of each job (seconds), in the order they run; the plan takes what the budget leaves
TIME_BOXES = {
    "train:fp32": 60,
    "vaepp_eval": 90,
    "train:bf16": 60,
    "train:compile": 120,
    "train:cudagraphs": 120,
    "plan": None,
}
CUDA_ONLY = {"cudagraphs": "CUDA graphs need a CUDA device"}
CPU_SKIP = "not run on a CPU unless --variants names it (inductor compiles the ResNet for minutes)"


def matmul_peaks(device: torch.device, n: int, seconds: float) -> dict[str, float]:
    """fp32 (TF32 off, as in plain fp32 training), TF32 (CUDA) and bf16 matmul peaks."""
    peaks = {"fp32": 0.0, "bf16": 0.0}
    saved = torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = False
        peaks["fp32"] = matmul_peak(device, torch.float32, n, seconds)
        if device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            peaks["tf32"] = matmul_peak(device, torch.float32, n, seconds)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved
    peaks["bf16"] = matmul_peak(device, torch.bfloat16, n, seconds)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return peaks


def gpu_info(device: torch.device) -> dict[str, Any]:
    """Name, memory, capability and library versions of the GPU (empty off CUDA)."""
    if device.type != "cuda":
        return {}
    props = torch.cuda.get_device_properties(device)
    info: dict[str, Any] = {
        "name": props.name,
        "total_memory_bytes": props.total_memory,
        "total_memory_gib": props.total_memory / 2**30,
        "capability": f"{props.major}.{props.minor}",
        "multiprocessors": props.multi_processor_count,
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
    }
    try:
        smi = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        )
        info["driver"] = smi.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        info["driver"] = None
    return info


def run_child(job: str, args: argparse.Namespace, timeout: float) -> dict[str, Any]:
    """Run ``job`` of this script in a fresh process within ``timeout`` seconds."""
    flags = ["--device", args.device, *(["--quick"] if args.quick else [])]
    # the plan job stops itself before the kill, keeping what it measured
    budget = ["--budget-s", str(max(timeout - 15, 1))]
    script = [sys.executable, str(Path(__file__).resolve()), "--child", job, *flags, *budget]
    return run_isolated(lambda result: [*script, "--result", str(result)], timeout)


def run_isolated(command, timeout: float) -> dict[str, Any]:
    """Run ``command(result_path)`` in its own process session, killed with everything it
    started after ``timeout`` seconds; returns the JSON it wrote to ``result_path`` (also when it
    failed or was killed: partial results count), plus ``error`` and the end of its stderr when
    it did not exit cleanly, and ``job_seconds``."""
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "result.json"
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            command(result),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            _, err = proc.communicate(timeout=timeout)
            error = None if proc.returncode == 0 else _last_line(err, proc.returncode)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            _, err = proc.communicate()
            error = f"timed out after {timeout:.0f} s (its time box)"
        out: dict[str, Any] = json.loads(result.read_text()) if result.exists() else {}
    out["job_seconds"] = time.perf_counter() - t0
    if error:
        out["error"] = error
        out["stderr_tail"] = err[-2000:]
    return out


def _last_line(text: str, code: int) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else f"exited with code {code} and printed nothing"


def run_jobs(args: argparse.Namespace, deadline: float) -> dict[str, dict[str, Any]]:
    wanted = set(args.variants)
    results: dict[str, dict[str, Any]] = {}
    for job, box in TIME_BOXES.items():
        variant = job.split(":", 1)[1] if job.startswith("train:") else None
        if variant in CUDA_ONLY and args.device != "cuda":
            results[job] = {"skipped": CUDA_ONLY[variant]}
            continue
        if variant is not None and variant not in wanted:
            results[job] = {"skipped": "not in --variants" if args.variants_given else CPU_SKIP}
            continue
        left = deadline - time.perf_counter()
        if left < 10:
            results[job] = {"skipped": f"the time budget (--budget-s {args.budget_s:g}) ran out"}
            continue
        timeout = left if box is None else min(box * args.box_scale, left)
        print(f"gpu_check: {job} (time box {timeout:.0f} s)", file=sys.stderr, flush=True)
        results[job] = run_child(job, args, timeout)
        if "error" in results[job]:
            print(f"gpu_check: {job} failed: {results[job]['error']}", file=sys.stderr)
    return results


def summarise(jobs: dict[str, dict[str, Any]], peaks: dict[str, float]) -> dict[str, Any]:
    """The training variants with their fractions of the matmul peaks, and the target."""
    train: dict[str, Any] = {}
    flops = jobs.get("train:fp32", {}).get("gflop_per_iteration")
    for variant in VARIANTS:
        entry = jobs[f"train:{variant}"]
        if flops and entry.get("seconds_per_iteration"):
            tflops = flops / 1e3 / entry["seconds_per_iteration"]
            entry["tflops_counted"] = tflops
            entry["fraction_of_peak"] = {k: tflops / v for k, v in peaks.items() if v}
        train[variant] = entry
    met = [
        v for v, e in train.items() if e.get("epoch_seconds", float("inf")) <= TARGET_EPOCH_SECONDS
    ]
    best = min((e["epoch_seconds"] for e in train.values() if "epoch_seconds" in e), default=None)
    target = {
        "epoch_seconds": TARGET_EPOCH_SECONDS,
        "why": f"{PAPER_EPOCHS} paper epochs × 5 s = 2.8 h: under 3 h",
        "best_epoch_seconds": best,
        "paper_epochs_hours_at_best": None if best is None else best * PAPER_EPOCHS / 3600,
        "met_by": met,
    }
    return {"train": train, "target": target}


def evaluation_cost(result: dict[str, Any]) -> dict[str, Any]:
    """Hours of the full budget's NLL protocol for ``vaepp-mnist`` at the measured rates:
    ``nll_repeats`` × (an AIS log Z of the preset's size + the NLL of 10,000 test images)."""
    from latentgap.reproduce.tables import BUDGETS

    if "ais" not in result or "nll" not in result:
        return {}
    full = BUDGETS["full"]
    repeats = full.nll_repeats
    ais_s = result["ais"]["preset_run_seconds_at_this_rate"]  # None: --quick's chains
    ais_h = None if ais_s is None else repeats * ais_s / 3600
    nll_h = repeats * 10_000 / result["nll"]["images_per_s"] * (full.nll_k / result["nll"]["k"])
    return {
        "full_budget_evaluation": {
            "repeats": repeats,
            "ais_hours": ais_h,
            "nll_hours": nll_h / 3600,
            "scaling": f"NLL time × K {full.nll_k} / measured K (the work is linear in K)",
            "not_measured": "Eq. (8) log Ẑ beside AIS, and the FID cells (5000 GAN + MALA "
            "samples, Inception features)",
        }
    }


def add_extras(tables: dict[str, Any], extras: dict[str, Any] | None) -> dict[str, Any]:
    """Adds the measured per-epoch extras to the ``vaepp-mnist`` runs (sample grid, test loss
    and checkpoint every epoch, the AIS log Z in VAE-phase epochs): ``gpu_hours_with_extras``."""
    if not extras:
        return tables
    every = extras["sample_grid_seconds"] + extras["test_loss_seconds"]
    every += extras["checkpoint_seconds"]
    for table in tables.values():
        for row in table["runs"]:
            if row["preset"] != PRESET:
                continue
            vae = sum(p["epochs"] for p in row["phases"] if p["phase"] == "vae")
            row["extras_hours"] = (row["epochs"] * every + vae * extras["epoch_ais_seconds"]) / 3600
            if row["gpu_hours"] is not None:
                row["gpu_hours_with_extras"] = row["gpu_hours"] + row["extras_hours"]
    return tables


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--quick", action="store_true", help="tiny sizes: a test of this script")
    p.add_argument("--variants", default=None, help="comma-separated (default: all on CUDA, "
                   "fp32,bf16 on CPU, where inductor compiles the ResNet for minutes)")  # fmt: skip
    p.add_argument("--budget-s", type=float, default=330.0, help="wall-clock budget of all jobs")
    p.add_argument("--box-scale", type=float, default=1.0, help="scales every job's time box")
    p.add_argument("--out", type=Path)
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print(
            f"gpu_check: no CUDA device: torch.cuda.is_available() is false (torch "
            f"{torch.__version__}); use --device cpu to test this script",
            file=sys.stderr,
        )
        return 2
    device = torch.device("cuda", 0) if args.device == "cuda" else torch.device("cpu")
    settings = settings_for(args.device, args.quick)
    if args.child:
        run_job(args.child, device, settings, args.result, args.budget_s)
        return 0
    default_variants = list(VARIANTS) if args.device == "cuda" else ["fp32", "bf16"]
    args.variants_given = bool(args.variants)
    args.variants = args.variants.split(",") if args.variants else default_variants
    unknown = sorted(set(args.variants) - set(VARIANTS))
    if unknown:
        p.error(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")

    from latentgap.reproduce.harness import machine_info

    started = time.perf_counter()
    deadline = started + args.budget_s
    peaks = matmul_peaks(device, settings.peak_size, settings.peak_seconds)
    jobs = run_jobs(args, deadline)
    plan_timings = jobs.get("plan", {})
    runs = planned_runs()
    report: dict[str, Any] = {
        "benchmark": "gpu-check",
        "issue": 14,
        "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "device": args.device,
        "quick": args.quick,
        "note": (
            "CPU run: a test of bench/gpu_check.py, not a GPU measurement"
            if args.device == "cpu"
            else "GPU run"
        )
        + ("; --quick: tiny iteration counts, the numbers mean nothing" if args.quick else ""),
        "machine": {**machine_info(str(device)), "gpu": gpu_info(device)},
        "settings": dataclasses.asdict(settings),
        "data": "synthetic uniform random pixels of each dataset's shape and kind (timing does "
        "not depend on pixel values: no operation of these models branches on them)",
        "matmul_peak_tflops": peaks,
        **summarise(jobs, peaks),
        "vaepp_eval": {**jobs["vaepp_eval"], **evaluation_cost(jobs["vaepp_eval"])},
        "plan": {
            "what": "GPU hours of `latentgap reproduce TABLE --budget full`, training iterations "
            "only, fp32 eager (the presets' default), one timing per distinct configuration "
            "(bench/gpu_plan.py says which options are left out of the key and why)",
            "tables": add_extras(
                project(
                    runs,
                    {k: v for k, v in plan_timings.items() if isinstance(v, dict)},
                    first=PRESET,
                ),
                jobs["vaepp_eval"].get("per_epoch_extras"),
            ),
            "timing_job": {k: v for k, v in plan_timings.items() if not isinstance(v, dict)},
            "timings": {k: v for k, v in plan_timings.items() if isinstance(v, dict)},
        },
        "seconds": time.perf_counter() - started,
    }
    out = args.out or REPO / "bench" / "results" / (
        f"gpu-check-{'' if args.device == 'cuda' else 'cpu-'}{socket.gethostname()}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print_summary(report, out)
    return 0 if "epoch_seconds" in report["train"]["fp32"] else 1


def print_summary(report: dict[str, Any], out: Path) -> None:
    print(f"gpu_check ({report['note']}): {report['machine']['gpu'].get('name', 'no GPU')}")
    for variant, entry in report["train"].items():
        if "epoch_seconds" in entry:
            print(f"  vaepp-mnist {variant:10s} epoch {entry['epoch_seconds']:9.2f} s")
        else:
            print(f"  vaepp-mnist {variant:10s} {entry.get('error') or entry.get('skipped')}")
    for name, table in report["plan"]["tables"].items():
        hours = table["gpu_hours"]
        done = f"{hours:.1f} GPU h" if hours is not None else "incomplete"
        print(f"  plan {name:14s} {done} ({len(table['runs_not_measured'])} runs not measured)")
    print(f"  written to {out}")


if __name__ == "__main__":
    sys.exit(main())
