"""VAEPP's expensive parts on the paper's MNIST nets: MALA chain-steps/s and log Ẑ samples/s.

    python bench/vaepp.py                 # writes bench/results/vaepp-<host>.json

Uses the ``vaepp-mnist`` preset's networks (pre-activation ResNet encoder/decoder/critic, z = 13)
at their initial weights: the cost of a MALA step or an importance weight does not depend on
training. Each number is also given as a fraction of the fp32 matmul peak measured in the same
run, so runs on noisy machines compare honestly.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from models import FlopCount  # noqa: E402
from throughput import REPO, machine_info, matmul_peak_gflops  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--data-dir", default=os.environ.get("LATENTGAP_DATA", str(REPO.parent / "shared" / "data"))
    )
    p.add_argument("--chains", type=int, default=128)
    p.add_argument("--mala-steps", type=int, default=20)
    p.add_argument("--logz-images", type=int, default=2000)
    p.add_argument("--logz-samples-per-image", type=int, default=4)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path)
    args = p.parse_args()

    from latentgap.data import get_dataset
    from latentgap.models import build_model
    from latentgap.presets import PRESETS

    device = torch.device(args.device)
    splits = get_dataset("mnist", data_dir=args.data_dir)
    options = PRESETS.get("vaepp-mnist").values["model_options"]
    torch.manual_seed(0)
    model = build_model("vaepp", options, splits.spec).to(device).eval()
    model.prepare_training(splits.train)
    peak = matmul_peak_gflops()

    g = torch.Generator(device=device).manual_seed(0)
    model.sample_latents(8, generator=g, sampler="mala", mala_steps=2)  # warm-up
    t0 = time.perf_counter()
    model.sample_latents(args.chains, generator=g, sampler="mala", mala_steps=args.mala_steps)
    mala_s = time.perf_counter() - t0
    chain_steps = args.chains * args.mala_steps / mala_s

    train = splits.train.subset(args.logz_images)
    t0 = time.perf_counter()
    est = model.estimate_log_z(train, samples_per_image=args.logz_samples_per_image, passes=1)
    logz_s = time.perf_counter() - t0

    # FLOPs (matmuls, convolutions) of one MALA chain-step and of one log Ẑ sample, counted on
    # small runs of the same code
    with FlopCount() as mala_count:
        model.sample_latents(16, generator=g, sampler="mala", mala_steps=4)
    with FlopCount() as init_count:
        model.sample_latents(16, generator=g, sampler="mala", mala_steps=1)
    mala_flops = (mala_count.total - init_count.total) / (16 * 3)
    with FlopCount() as logz_count:
        small = model.estimate_log_z(train.subset(50), samples_per_image=2, passes=1)
    logz_flops = logz_count.total / small.n_samples

    result = {
        "benchmark": "vaepp-mnist-expensive-parts",
        "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": machine_info(),
        "device": str(device),
        "matmul_peak_gflops": peak,
        "nets": "vaepp-mnist preset: ResNet 16-32-64, z = 13",
        "mala": {
            "chains": args.chains,
            "steps": args.mala_steps,
            "seconds": mala_s,
            "chain_steps_per_s": chain_steps,
            "acceptance_rate_untrained": model.last_acceptance_rate,
            "mflop_per_chain_step": mala_flops / 1e6,
            "fraction_of_peak": chain_steps * mala_flops / (peak * 1e9),
        },
        "log_z": {
            "samples": est.n_samples,
            "seconds": logz_s,
            "samples_per_s": est.n_samples / logz_s,
            "log_z_untrained": est.log_z,
            "std_err": est.std_err,
            "mflop_per_sample": logz_flops / 1e6,
            "fraction_of_peak": est.n_samples / logz_s * logz_flops / (peak * 1e9),
        },
    }
    out = args.out or REPO / "bench" / "results" / f"vaepp-{socket.gethostname()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
