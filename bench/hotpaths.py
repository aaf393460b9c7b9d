"""Profile the hot paths: where the time goes, how many network passes a step makes, how many
host-device synchronisations it forces.

    python bench/hotpaths.py                      # writes bench/results/hotpaths-<host>.json
    python bench/hotpaths.py --device cuda        # on a GPU (adds CUDA kernel times)

Paths (the paper's MNIST networks at initial weights; cost does not depend on training):
``vaepp-step`` one Algorithm 2 step (ELBO, critic on G(z) and G(ε), gradient penalty, log Ẑ
mixture, backward, Adam), ``vaepp-naive-critic`` one Algorithm 1 critic step, ``mala`` MALA steps
on the pull-back energy, ``ldc-step`` one LDC-VAE encoder/decoder step (SVGD kernel) and one
sampler step, ``nll`` importance weights for K = 1000. For each: the top operators by self time,
the number of decoder and critic calls per iteration (forward hooks) and of
``aten::_local_scalar_dense`` (``.item()``: a host sync on a GPU).
"""

from __future__ import annotations

import argparse
import json
import shlex
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from latentgap.data.base import Batch, DataSpec
from latentgap.models import build_model
from latentgap.presets import PRESETS
from latentgap.reproduce.harness import machine_info

REPO = Path(__file__).resolve().parents[1]
MNIST = DataSpec("mnist", (1, 28, 28), "binary")


def binary_batch(n: int, device: torch.device, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    e = torch.rand(n, 1, 28, 28, generator=g)
    return Batch((torch.rand(e.shape, generator=g) < e).float(), e).to(device)


def count_calls(modules: dict[str, torch.nn.Module]) -> tuple[dict[str, int], Callable]:
    counts = dict.fromkeys(modules, 0)
    handles = []
    for name, module in modules.items():

        def hook(*_, _name=name):
            counts[_name] += 1

        handles.append(module.register_forward_hook(hook))
    return counts, lambda: [h.remove() for h in handles]


def training_step(model, step: str, group_params, batch: Batch) -> Callable[[], None]:
    opt = torch.optim.Adam(group_params, lr=1e-4)

    def run() -> None:
        out = model(step, batch)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()

    return run


def profile_path(
    name: str, fn: Callable[[], None], iters: int, device: torch.device, watch: dict, top: int
) -> dict:
    fn()  # warm-up (allocations, lazy init)
    counts, remove = count_calls(watch)
    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    t0 = time.perf_counter()
    with profile(activities=activities) as prof:
        for _ in range(iters):
            fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
    wall = (time.perf_counter() - t0) / iters
    remove()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    rows = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:top]
    syncs = sum(e.count for e in events if e.key == "aten::_local_scalar_dense")
    return {
        "path": name,
        "iterations": iters,
        "wall_ms_per_iter_profiled": wall * 1000,
        "calls_per_iter": {k: v / iters for k, v in counts.items()},
        "host_syncs_per_iter": syncs / iters,
        "top_ops": [
            {
                "op": e.key,
                "calls_per_iter": e.count / iters,
                "self_cpu_ms_per_iter": e.self_cpu_time_total / 1000 / iters,
                "self_cpu_share": e.self_cpu_time_total / total,
            }
            for e in rows
        ],
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--top", type=int, default=8)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--only", action="append", help="profile only these paths (repeatable)")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    batch = binary_batch(128, device)
    results = []

    def want(name: str) -> bool:
        return not args.only or name in args.only

    vaepp_options = PRESETS.get("vaepp-mnist").values["model_options"]
    for model_name, step, label in (
        ("vaepp", "vaepp", "vaepp-step"),
        ("vaepp-naive", "critic", "vaepp-naive-critic"),
    ):
        if not want(label):
            continue
        model = build_model(model_name, vaepp_options, MNIST).to(device).train()
        model.n_train.fill_(60_000.0)
        group = "vae" if step == "vaepp" else "critic"
        fn = training_step(model, step, model.parameter_groups()[group], batch)
        watch = {"decoder": model.decoder, "critic": model.critic, "encoder": model.encoder}
        results.append(profile_path(label, fn, args.iters, device, watch, args.top))

    if want("mala"):
        model = build_model("vaepp", vaepp_options, MNIST).to(device).eval()
        g = torch.Generator(device=device).manual_seed(0)

        def mala_run() -> None:
            model.sample_latents(128, generator=g, sampler="mala", mala_steps=5)

        watch = {"decoder": model.decoder, "critic": model.critic}
        entry = profile_path("mala (128 chains × 5 steps)", mala_run, 1, device, watch, args.top)
        results.append(entry)

    if want("ldc-step"):
        ldc = PRESETS.get("ldc-vae-mnist-mlp").values["model_options"]
        spec = DataSpec("mnist", (1, 28, 28), "continuous")
        model = build_model("ldc-vae", ldc, spec).to(device).train()
        groups = model.parameter_groups()
        x = batch.e[:100]
        cont = Batch(x, x)
        ae = training_step(model, "autoencoder", groups["autoencoder"], cont)
        sampler = training_step(model, "sampler", groups["sampler"], cont)

        def ldc_run() -> None:
            ae()
            sampler()

        watch = {"decoder": model.decoder}
        results.append(profile_path("ldc-step", ldc_run, args.iters, device, watch, args.top))

    if want("nll"):
        from latentgap.metrics.nll import log_likelihood

        vae = PRESETS.get("vae-mnist-small").values["model_options"]
        model = build_model("vae", vae, MNIST).to(device).eval()
        small = Batch(batch.x[:4], batch.e[:4])

        def nll_run() -> None:
            log_likelihood(model, small, 1000)

        watch = {"decoder": model.decoder}
        results.append(profile_path("nll (4 images × K=1000)", nll_run, 2, device, watch, args.top))

    report = {
        "benchmark": "hotpaths",
        "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
        "machine": machine_info(),
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "results": results,
    }
    out = args.out or REPO / "bench" / "results" / f"hotpaths-{socket.gethostname()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    for r in results:
        print(
            f"{r['path']}: {r['wall_ms_per_iter_profiled']:.1f} ms/iter, calls {r['calls_per_iter']}, "
            f"host syncs {r['host_syncs_per_iter']:.0f}"
        )
        for op in r["top_ops"][:5]:
            print(
                f"    {op['op']:<40} {op['self_cpu_share']:6.1%}  {op['calls_per_iter']:.0f} calls"
            )
    return report


if __name__ == "__main__":
    main()
