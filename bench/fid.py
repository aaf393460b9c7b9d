"""Inception-v3 feature throughput for FID (images/s), the cost that dominates ``evaluate --fid``.

    OMP_NUM_THREADS=1 python bench/fid.py        # writes bench/results/fid-<host>.json

Runs :class:`latentgap.metrics.inception.InceptionFeatures` (TF 2015-12-05 weights, resize to
299×299, pool-3 features) on MNIST-sized 1×28×28 images in [0, 1], after a warm-up batch, and
extrapolates to the VAEPP protocol (5,000 samples + reconstructions against the 60,000-image
training set). Also reports the fp32 matmul peak of the same process and the fraction of it the
network reaches (≈ 11.4 GFLOP per image at 299×299).

GPUs: pass ``--device cuda --half`` for float16 (tensor cores; features differ from float32 by
~1e-3 relative). The 87 MB weights file exceeds what can be carried to the lent GPU machines
(64 MiB a call), so there either make a float16 copy first or bring samples back and compute
features on the CPU.
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
from throughput import REPO, machine_info, matmul_peak_gflops  # noqa: E402

# Inception-v3 at 299×299: 5.71 G multiply-adds (torchvision's figure; the paper says ~5 G)
GFLOP_PER_IMAGE = 2 * 5.71


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--inception",
        default=os.environ.get("LATENTGAP_INCEPTION")
        or str(REPO.parent / "shared" / "weights" / "inception-v3-fid-2015-12-05.pt"),
    )
    p.add_argument("--images", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="cpu")
    p.add_argument("--half", action="store_true", help="float16 network (GPUs)")
    p.add_argument("--out", type=Path)
    args = p.parse_args()

    from latentgap.metrics.inception import InceptionFeatures, file_sha256

    device = torch.device(args.device)
    t0 = time.perf_counter()
    file_sha256(args.inception)
    hash_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    net = InceptionFeatures(args.inception, device=device, half=args.half)  # hash cached now
    load_s = time.perf_counter() - t0

    g = torch.Generator().manual_seed(0)
    images = torch.rand(args.images, 1, 28, 28, generator=g).to(device)  # (N, 1, 28, 28)
    net(images[:2])  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for start in range(0, args.images, args.batch_size):
        feats = net(images[start : start + args.batch_size])  # (B, 2048)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    assert feats.shape[1] == 2048 and torch.isfinite(feats).all()
    rate = args.images / seconds
    peak = matmul_peak_gflops() if device.type == "cpu" else None

    result = {
        "benchmark": "fid-inception-features",
        "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
        "env": {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")},
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": machine_info(),
        "device": str(device),
        "dtype": "float16" if args.half else "float32",
        "input": "1x28x28 gray in [0, 1] -> 3x299x299",
        "images": args.images,
        "batch_size": args.batch_size,
        "seconds": seconds,
        "images_per_s": rate,
        "seconds_per_image": 1 / rate,
        "sha256_seconds": hash_s,
        "load_seconds_after_hash": load_s,
        "matmul_peak_gflops": peak,
        "fraction_of_peak": None if peak is None else rate * GFLOP_PER_IMAGE / peak,
        "extrapolated_minutes": {
            "10k_samples": 10_000 / rate / 60,
            "vaepp_protocol_5k_samples_5k_recon_60k_reference": 70_000 / rate / 60,
            "vaepp_protocol_with_cached_reference": 10_000 / rate / 60,
        },
    }
    out = args.out or REPO / "bench" / "results" / f"fid-{socket.gethostname()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
