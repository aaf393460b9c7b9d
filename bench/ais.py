"""AIS of the pull-back prior's log Z on the ``vaepp-mnist-small`` nets, and VAEPP's training-step
cost (paper log Ẑ vs persistent chains) relative to the VAE's step on the same nets.

    python bench/ais.py                       # writes bench/results/ais-<host>.json
    python bench/ais.py --chains 10000 --temps 1000 --leapfrog 3

At the nets' initial weights (the cost of a leapfrog step does not depend on training). Throughput
is in gradient evaluations (one decoder + critic forward and backward per chain) per second and
as a fraction of the fp32 matmul peak measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import shlex
import socket
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from models import FlopCount  # noqa: E402
from throughput import REPO, machine_info, matmul_peak_gflops  # noqa: E402


def one_step(model, batch) -> float:
    """Seconds of one loss + backward on ``batch``."""
    t0 = time.perf_counter()
    out = model("vaepp" if hasattr(model, "pullback") else "loss", batch)
    out.loss.backward()
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - t0


def interleaved_medians(models: dict, batch, repeats: int) -> dict[str, float]:
    """Median step seconds per model, the models timed in turn within each round, so a noisy
    machine slows all of them alike."""
    times: dict[str, list[float]] = {k: [] for k in models}
    for r in range(repeats + 1):
        for name, model in models.items():
            t = one_step(model, batch)
            if r:
                times[name].append(t)
    return {k: sorted(v)[len(v) // 2] for k, v in times.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--chains", type=int, default=2048)
    p.add_argument("--temps", type=int, default=1000)
    p.add_argument("--leapfrog", type=int, default=3)
    p.add_argument("--step-repeats", type=int, default=20)
    p.add_argument("--out", type=Path)
    args = p.parse_args()

    from latentgap.data.base import Batch, DataSpec
    from latentgap.models import build_model
    from latentgap.presets import PRESETS

    spec = DataSpec("mnist", (1, 28, 28), "binary")
    options = PRESETS.get("vaepp-mnist-small").values["model_options"]
    torch.manual_seed(0)
    model = build_model("vaepp", options, spec).eval()
    peak = matmul_peak_gflops()

    t0 = time.perf_counter()
    ais = model.estimate_log_z_ais(
        args.chains, args.temps, args.leapfrog, reverse=False, coarse_fraction=None
    )
    seconds = time.perf_counter() - t0
    grad_evals = (args.chains + ais.pilot_chains) * args.temps * args.leapfrog
    z = torch.randn(256, options["latent_dim"], requires_grad=True)
    with FlopCount() as count:
        (g,) = torch.autograd.grad(model.log_weight(z).sum(), z)
    flops_per_eval = count.total / 256

    # training-step cost on one batch of 128 binarised images
    x = (torch.rand(128, 1, 28, 28) < 0.15).float()
    batch = Batch(x=x, e=x, y=None)
    models = {
        "vae": build_model(
            "vae", {k: options[k] for k in ("arch", "latent_dim", "arch_options")}, spec
        ).train()
    }
    for mode in ("paper", "persistent"):
        m = build_model("vaepp", options | {"train_logz": mode}, spec).train()
        m.prepare_training(type("T", (), {"__len__": lambda self: 60000})())
        models[f"vaepp_{mode}"] = m
    steps = interleaved_medians(models, batch, args.step_repeats)
    result = {
        "benchmark": "vaepp-small-ais-and-step-cost",
        "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": machine_info(),
        "torch_threads": torch.get_num_threads(),
        "matmul_peak_gflops": peak,
        "nets": "vaepp-mnist-small: MLP 784-256-256 decoder and critic, z = 13",
        "ais": {
            "chains": args.chains,
            "temps": args.temps,
            "leapfrog": args.leapfrog,
            "pilot_chains": ais.pilot_chains,
            "seconds": seconds,
            "grad_evals_per_s": grad_evals / seconds,
            "mflop_per_grad_eval": flops_per_eval / 1e6,
            "fraction_of_peak": grad_evals / seconds * flops_per_eval / (peak * 1e9),
            "acceptance": ais.acceptance,
            "seconds_for_1e4_chains_1e3_temps": 1e4 * 1e3 * args.leapfrog / (grad_evals / seconds),
        },
        "train_step_seconds_batch_128": steps,
        "vaepp_step_over_vae_step": {k: v / steps["vae"] for k, v in steps.items() if k != "vae"},
    }
    out = args.out or REPO / "bench" / "results" / f"ais-{socket.gethostname()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
