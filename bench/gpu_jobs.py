"""The measurements of the GPU check (``bench/gpu_check.py``), each run in its own process.

A job builds its model from a preset the way ``latentgap train --preset`` does (defaults ←
preset ← flags) or from a table run the way ``latentgap reproduce --budget full`` does, drives
the library's :class:`~latentgap.train.trainer.Trainer` (``bench/trainer_timing.py``), and
returns plain data. Training images are synthetic (uniform random pixels of the dataset's shape
and kind): no operation of these models branches on pixel values, so the time per iteration is
that of the real data, and the check needs no dataset files on the GPU machine.

Jobs: ``train:<variant>`` (the ``vaepp-mnist`` epoch time under fp32, bf16, torch.compile or CUDA
graphs), ``vaepp_eval`` (AIS and NLL throughput on a briefly trained ``vaepp-mnist``, and the
per-epoch extras of its training), ``plan`` (the training throughput of every distinct
configuration of the tables' full-budget runs, for ``bench/gpu_plan.py``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from gpu_plan import data_layout, distinct_configs, planned_runs
from models import FlopCount, iteration_flops
from trainer_timing import QUIET, bench_trainer

PRESET = "vaepp-mnist"  # the target: one epoch of 60,000 MNIST images ≤ 5 s
EPOCH_IMAGES = 60_000
VARIANTS: dict[str, dict[str, Any]] = {
    "fp32": {},
    "bf16": {"precision": "bf16"},
    "compile": {"compile": "default"},
    "cudagraphs": {"compile": "reduce-overhead"},
}


@dataclass(frozen=True)
class Settings:
    """Sizes of every measurement (the defaults: the GPU run; :data:`QUICK`: a wiring test)."""

    warmup_iterations: int = 10
    iterations: int = 50  # timed training iterations per variant
    batch_size: int | None = None  # None: the preset's
    model_overrides: dict[str, Any] = field(default_factory=dict)  # where the model has them
    steps_before_eval: int = 20  # training iterations before AIS / NLL (prior off its init)
    ais_chains: int | None = None  # None: the preset's ais_chains
    ais_pilot_chains: int | None = None  # None: ais_log_z's default
    ais_temps: int = 100  # timed temperatures (per-temperature cost is constant: scaled)
    nll_images: int = 200
    nll_k: int = 1000
    mala_steps: int = 200  # of the per-epoch sample grid, scaled to the preset's mala_steps
    epoch_ais_chains: int | None = None  # None: the preset's epoch_ais_chains
    epoch_ais_temps: int | None = None  # None: the preset's epoch_ais_temps
    eval_batches: int = 10  # test batches of the per-epoch test loss (TrainConfig's default)
    plan_warmup: int = 3
    plan_iterations: int = 10
    plan_phase_seconds: float = 5.0  # fewer timed iterations for a phase slower than that
    plan_configs: int | None = None  # distinct plan configurations to time (None: all)
    peak_size: int = 8192  # n of the n×n×n matmul peak
    peak_seconds: float = 1.0  # per dtype


FULL = Settings()
QUICK = Settings(
    warmup_iterations=1,
    iterations=2,
    steps_before_eval=2,
    ais_chains=8,
    ais_pilot_chains=8,
    ais_temps=3,
    nll_images=1,
    nll_k=100,
    mala_steps=2,
    epoch_ais_chains=4,
    epoch_ais_temps=2,
    eval_batches=1,
    plan_warmup=1,
    plan_iterations=1,
    plan_configs=1,
    peak_size=512,
    peak_seconds=0.2,
)
# On a CPU the ResNet step is dominated by the 128 persistent chains: shrink them and the batch
# so that the whole check runs in well under a minute (it tests the script, it measures nothing)
QUICK_CPU = dataclasses.replace(QUICK, batch_size=4, model_overrides={"pcd_chains": 4})


def settings_for(device: str, quick: bool) -> Settings:
    if not quick:
        return FULL
    return QUICK_CPU if device == "cpu" else QUICK


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory(device: torch.device) -> dict[str, Any]:
    """torch.cuda.max_memory_allocated since the job started (None off CUDA)."""
    if device.type != "cuda":
        return {"peak_memory_bytes": None, "peak_memory_note": "CUDA only"}
    peak = torch.cuda.max_memory_allocated(device)
    return {"peak_memory_bytes": peak, "peak_memory_gib": peak / 2**30}


# --- configs and data ----------------------------------------------------------------------------
def _with_settings(values: dict[str, Any], device: str, s: Settings, train: dict) -> Any:
    """An ExperimentConfig from plain ``values``, made quiet and put on ``device``, with the
    settings' batch size and model overrides (only those the model's options have)."""
    from latentgap.config import ExperimentConfig
    from latentgap.models import MODELS

    fields = {f.name for f in dataclasses.fields(MODELS.get(values["model"]).config_class)}
    values["model_options"].update({k: v for k, v in s.model_overrides.items() if k in fields})
    values["train"].update(QUIET, device=device, **train)
    if s.batch_size:
        values["train"]["batch_size"] = s.batch_size
    return ExperimentConfig.from_dict(values)


def preset_config(preset: str, device: str, s: Settings, **train: Any):
    """The config ``latentgap train --preset PRESET --device DEVICE`` builds, quiet."""
    import latentgap.models  # noqa: F401  (registers the presets)
    from latentgap.config import ExperimentConfig
    from latentgap.presets import PRESETS, deep_merge

    values = deep_merge(ExperimentConfig().to_dict(), PRESETS.get(preset).values)
    values["preset"] = preset
    return _with_settings(values, device, s, train)


def table_run_config(table: str, run_key: str, device: str, s: Settings):
    """The config ``latentgap reproduce TABLE --budget full`` trains for run ``run_key``."""
    from latentgap.reproduce.harness import build_config
    from latentgap.reproduce.tables import BUDGETS, TABLES

    run = next(c.run for c in TABLES.get(table).cells if c.run.key == run_key)
    values = build_config(run, BUDGETS["full"], device=device).to_dict()
    return _with_settings(values, device, s, {})


def synthetic_splits(config, n_train: int, n_test: int, seed: int = 0):
    """Uniform random images of the config's dataset layout (module docstring)."""
    from latentgap.data.base import DataSpec, ImageSet, Splits

    shape, kind, binarize = data_layout(config.data.name, config.data.options)
    spec = DataSpec(config.data.name, shape, kind)
    g = torch.Generator().manual_seed(seed)

    def images(n: int) -> ImageSet:
        pixels = torch.randint(0, 256, (n, *shape), generator=g, dtype=torch.uint8)
        if kind == "binary" and binarize == "none":  # a fixed binarisation: 0 or 1
            pixels = (pixels >= 128).to(torch.uint8) * 255
        return ImageSet(pixels, spec=spec, binarize="dynamic" if binarize == "dynamic" else "none")

    return Splits(spec, images(n_train), images(n_test))


def draws_per_iteration(phase) -> int:
    """Fresh batches one iteration of ``phase`` takes (``Step.reuse_batch`` steps take none)."""
    draws, have = 0, False
    for step in phase.steps:
        for _ in range(step.repeat):
            if not (step.reuse_batch and have):
                draws += 1
                have = True
    return draws


@contextmanager
def trainer_for(config, device: torch.device, iterations: int) -> Iterator[Any]:
    """A trainer on synthetic data with enough images for ``iterations`` of any phase."""
    from latentgap.data.base import DataSpec
    from latentgap.models import build_model

    shape, kind, _ = data_layout(config.data.name, config.data.options)
    with torch.device("meta"):
        phases = build_model(config.model, config.model_options, DataSpec("x", shape, kind)).phases(
            config.train.epochs
        )
    n = config.train.batch_size * max(draws_per_iteration(p) for p in phases) * iterations
    splits = synthetic_splits(config, n, 10 * config.train.batch_size)
    with bench_trainer(config, splits, n, device=str(device)) as trainer:
        yield trainer


def time_phase(
    trainer, phase, warmup: int, iterations: int, max_seconds: float | None = None
) -> dict[str, Any]:
    """Seconds of ``warmup`` then ``iterations`` training iterations of ``phase`` (each through
    ``Trainer._run_epoch`` on a slice of exactly that many iterations' batches, synchronised).
    With ``max_seconds``, fewer timed iterations (at least one) where the warm-up's pace says
    that many would take longer."""
    draws = draws_per_iteration(phase)
    batch = trainer.tc.batch_size
    full = trainer.train_set

    def run(n: int) -> float:
        trainer.train_set = full.subset(n * draws * batch)
        sync(trainer.device)
        t0 = time.perf_counter()
        trainer._run_epoch(phase)
        sync(trainer.device)
        return time.perf_counter() - t0

    try:
        warm = run(warmup) if warmup else 0.0
        if max_seconds is not None and warmup:
            iterations = max(1, min(iterations, int(max_seconds * warmup / warm)))
        seconds = run(iterations)
    finally:
        trainer.train_set = full
    return {
        "phase": phase.name,
        "batch_size": batch,
        "batches_per_iteration": draws,
        "warmup_iterations": warmup,
        "warmup_seconds": warm,
        "iterations": iterations,
        "seconds": seconds,
        "seconds_per_iteration": seconds / iterations,
        "images_per_s": iterations * draws * batch / seconds,
    }


def timed(device: torch.device, fn: Callable[[], Any]) -> tuple[float, Any]:
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t0, out


def compile_counters() -> dict[str, Any]:
    """What torch.compile did in this process: graphs, graph breaks and, for CUDA graphs, how
    often inductor fell back to running without them (then the variant is not what it says)."""
    try:
        from torch._dynamo.utils import counters
    except ImportError as err:  # a private module: its absence is recorded, not fatal
        return {"unavailable": str(err)}
    inductor = counters.get("inductor", {})
    return {
        "unique_graphs": counters.get("stats", {}).get("unique_graphs"),
        "graph_breaks": dict(counters.get("graph_break", {})),
        "cudagraph_counters": {k: v for k, v in inductor.items() if "cudagraph" in k},
    }


# --- jobs ------------------------------------------------------------------------------------
def job_train(variant: str, device: torch.device, s: Settings) -> dict[str, Any]:
    """The ``vaepp-mnist`` VAE-phase (Algorithm 2) step under ``variant``, extrapolated to an
    epoch of 60,000 images."""
    config = preset_config(PRESET, str(device), s, **VARIANTS[variant])
    with trainer_for(config, device, max(s.warmup_iterations, s.iterations)) as trainer:
        phase = trainer.phases[0]
        result = time_phase(trainer, phase, s.warmup_iterations, s.iterations)
        if variant == "fp32":  # FLOPs are the same in every variant: count them once, eagerly
            batch = next(trainer.train_set.batches(result["batch_size"], shuffle=True, seed=1))
            result["gflop_per_iteration"] = iteration_flops(trainer, phase, batch) / 1e9
        if config.train.compile:
            result["compiled"] = compile_counters()
    epoch = EPOCH_IMAGES / result["images_per_s"]
    return {
        "variant": variant,
        "preset": PRESET,
        "precision": config.train.precision,
        "compile": config.train.compile,
        **result,
        "epoch_images": EPOCH_IMAGES,
        "epoch_seconds": epoch,
        "extrapolation": (
            f"epoch_seconds = {EPOCH_IMAGES:,} images ÷ images_per_s of {result['iterations']} "
            f"timed iterations at batch {result['batch_size']} after {result['warmup_iterations']} "
            "warm-up iterations (compilation and CUDA-graph capture happen in the warm-up); "
            "iterations only: no test loss, sample grid, AIS log Z or checkpoint (see "
            "vaepp_eval.per_epoch_extras)"
        ),
        **peak_memory(device),
    }


def job_vaepp_eval(device: torch.device, s: Settings) -> dict[str, Any]:
    """AIS and NLL throughput on ``vaepp-mnist`` after a few training steps, and the per-epoch
    extras of its training (sample grid, AIS log Z, test loss, checkpoint)."""
    from latentgap.metrics.nll import evaluate_nll

    config = preset_config(PRESET, str(device), s)
    out: dict[str, Any] = {"preset": PRESET}
    with trainer_for(config, device, s.steps_before_eval) as trainer:
        phase = trainer.phases[0]
        out["trained_iterations"] = time_phase(trainer, phase, 0, s.steps_before_eval)["iterations"]
        model = trainer.model.eval()
        c = model.config
        chains = s.ais_chains or c.ais_chains

        def ais(n_chains: int, temps: int, leapfrog: int, pilot: int | None):
            return model.estimate_log_z_ais(
                n_chains, temps, leapfrog, reverse=False, coarse_fraction=None, pilot_chains=pilot
            )

        ais(chains, 2, c.ais_leapfrog, s.ais_pilot_chains)  # warm-up: kernels, allocator
        seconds, run = timed(
            device, lambda: ais(chains, s.ais_temps, c.ais_leapfrog, s.ais_pilot_chains)
        )
        evals = (chains + run.pilot_chains) * s.ais_temps * c.ais_leapfrog
        z = torch.randn(256, c.latent_dim, device=device, requires_grad=True)
        with FlopCount() as count:
            torch.autograd.grad(model.log_weight(z).sum(), z)
        rate = evals / seconds
        # the preset's evaluation AIS differs from the timed one only in its temperatures (their
        # cost is constant per temperature); --quick times fewer chains, which does not scale
        preset_size = chains == c.ais_chains and s.ais_pilot_chains is None
        full_evals = (chains + run.pilot_chains) * c.ais_temps * c.ais_leapfrog
        out["ais"] = {
            "chains": chains,
            "pilot_chains": run.pilot_chains,
            "temps": s.ais_temps,
            "leapfrog": c.ais_leapfrog,
            "seconds": seconds,
            "grad_evals": evals,
            "grad_evals_per_s": rate,
            "gflop_per_grad_eval": count.total / 256 / 1e9,
            "log_z": run.log_z,
            "preset_run": f"{c.ais_chains} chains × {c.ais_temps} temperatures × {c.ais_leapfrog}",
            "preset_run_seconds_at_this_rate": full_evals / rate if preset_size else None,
        }
        model.log_z.fill_(run.log_z)  # the NLL's log Ẑ (its value does not change the cost)

        test = trainer.splits.test.subset(s.nll_images)
        evaluate_nll(model, test.subset(1), k=s.nll_k)  # warm-up
        seconds, nll = timed(device, lambda: evaluate_nll(model, test, k=s.nll_k))
        out["nll"] = {
            "images": s.nll_images,
            "k": s.nll_k,
            "seconds": seconds,
            "images_per_s": s.nll_images / seconds,
            "finite": math.isfinite(nll.nll_nats),
        }
        out["per_epoch_extras"] = per_epoch_extras(trainer, model, s)
    out.update(peak_memory(device))
    return out


def per_epoch_extras(trainer, model, s: Settings) -> dict[str, Any]:
    """What the trainer does once per epoch besides iterating, timed (scaled where stated)."""
    device, c = trainer.device, model.config
    g = torch.Generator(device=device).manual_seed(1)
    seconds, _ = timed(device, lambda: model.sample(64, generator=g, mala_steps=s.mala_steps))
    grid = seconds * c.mala_steps / s.mala_steps
    chains = s.epoch_ais_chains or c.epoch_ais_chains
    temps = s.epoch_ais_temps or c.epoch_ais_temps
    seconds, _ = timed(
        device,
        lambda: model.estimate_log_z_ais(chains, temps, 2, reverse=False, coarse_fraction=None),
    )
    epoch_ais = seconds * c.epoch_ais_temps / temps
    from latentgap.config import TrainConfig

    trainer.tc.eval_batches = s.eval_batches
    model.train()
    test_s, _ = timed(device, lambda: trainer._evaluate_test(trainer.phases[0]))
    test_batches = TrainConfig().eval_batches  # the presets keep the default
    save_s, _ = timed(device, trainer.save)
    return {
        "sample_grid_seconds": grid,
        "sample_grid": f"64 MALA chains × {c.mala_steps} steps (the VAE-phase sampler), timed at "
        f"{s.mala_steps} steps and scaled (one decoder + critic pass per step)",
        "epoch_ais_seconds": epoch_ais,
        "epoch_ais": f"{chains} chains × {c.epoch_ais_temps} temperatures × 2 leapfrog steps, "
        f"timed at {temps} temperatures and scaled (VAE phase only)",
        "test_loss_seconds": test_s * test_batches / s.eval_batches,
        "checkpoint_seconds": save_s,
    }


def job_plan(device: torch.device, s: Settings, write: Callable[[dict], None], deadline: float):
    """Training throughput of each distinct configuration of the tables' full-budget runs, in
    the order :func:`gpu_plan.distinct_configs` gives, until ``deadline`` (perf_counter time).
    ``write`` gets the results so far after every configuration (a kill keeps them)."""
    results: dict[str, Any] = {}
    configs = distinct_configs(planned_runs(), first=PRESET)
    for i, entry in enumerate(configs):
        key = entry["id"]
        if s.plan_configs is not None and i >= s.plan_configs:
            results[key] = {"not_measured": "--quick times only the first configuration"}
            continue
        if time.perf_counter() > deadline:
            results[key] = {"not_measured": "the time budget ran out before this configuration"}
            continue
        results[key] = time_config(entry, device, s)
        write(results)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    write(results)
    return results


def time_config(entry: dict[str, Any], device: torch.device, s: Settings) -> dict[str, Any]:
    """Every phase of one plan configuration, timed; an error is recorded, not raised."""
    out: dict[str, Any] = {
        "timing_key": entry["timing_key"],
        "runs_sharing_it": entry["runs"],
        "phases": {},
    }
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    try:
        config = table_run_config(entry["table"], entry["run"], str(device), s)
        with trainer_for(config, device, max(s.plan_warmup, s.plan_iterations)) as trainer:
            for phase in trainer.phases:
                try:
                    out["phases"][phase.name] = time_phase(
                        trainer, phase, s.plan_warmup, s.plan_iterations, s.plan_phase_seconds
                    )
                except Exception as err:  # noqa: BLE001 - recorded per phase, the rest go on
                    out["phases"][phase.name] = {"error": f"{type(err).__name__}: {err}"}
    except Exception as err:  # noqa: BLE001 - recorded per configuration
        out["error"] = f"{type(err).__name__}: {err}"
    out["seconds"] = time.perf_counter() - t0
    out.update(peak_memory(device))
    return out


JOBS = {f"train:{v}" for v in VARIANTS} | {"vaepp_eval", "plan"}


def run_job(name: str, device: torch.device, s: Settings, result: Path, budget_s: float) -> None:
    """Run job ``name`` and write its JSON to ``result`` (the plan: after each configuration)."""

    def write(data: dict) -> None:
        tmp = result.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        tmp.replace(result)

    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.cuda.reset_peak_memory_stats(device)
    if name.startswith("train:"):
        write(job_train(name.split(":", 1)[1], device, s))
    elif name == "vaepp_eval":
        write(job_vaepp_eval(device, s))
    elif name == "plan":
        job_plan(device, s, write, time.perf_counter() + budget_s)
    else:
        raise ValueError(f"unknown job {name!r}; jobs: {', '.join(sorted(JOBS))}")


__all__ = ["FULL", "JOBS", "QUICK", "VARIANTS", "Settings", "run_job"]
