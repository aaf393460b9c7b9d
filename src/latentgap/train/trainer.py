"""The trainer: optimisers, schedules, phases, devices, logging, checkpoints and resume.

Models declare *what* to optimise (parameter groups, named losses, phases of steps); the trainer
decides *how*: one Adam per group, the learning rate halved every N epochs, a fresh batch for each
repeat of each step (or the previous step's batch, ``Step.reuse_batch``), rank-0-only I/O, an
atomic checkpoint at epoch ends, and a stop on NaN that never overwrites the last good checkpoint.

Determinism: data order and binarisation are functions of (seed, epoch, batch index), and the
global torch RNG is reseeded from (seed, epoch, rank) at each epoch start, so ``--resume`` after a
kill reaches the same parameters as an uninterrupted run with the same seed, whatever the number
of processes the checkpoint was written with.

Data parallel (under torchrun): the model is wrapped in DistributedDataParallel, each rank takes
a disjoint shard of every epoch's permutation, ``batch_size`` is per process (the global batch is
``world_size × batch_size``; learning rates are not rescaled), gradients are averaged, and at every
checkpoint the ranks' parameters are compared (a mismatch stops training: it would be a bug).
Every rank draws its own noise; steps that must agree across ranks (a phase's end, e.g. fitting
an ex-post density) run with a rank-independent seed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from latentgap.config import ExperimentConfig
from latentgap.data.base import Batch, Splits, epoch_seed
from latentgap.distributed import DistContext
from latentgap.errors import CheckpointError, ConfigError, TrainingDiverged
from latentgap.models.base import GenerativeModel, Phase
from latentgap.train.checkpoint import load_model_state, save_checkpoint
from latentgap.train.convergence import ConvergenceCheck
from latentgap.train.images import save_image_grid
from latentgap.train.metrics_log import MetricsLog

CHECKPOINT = "checkpoint.pt"


def phase_at(phases: list[Phase], epoch: int) -> Phase:
    """The phase that runs during (0-based) ``epoch``."""
    start = 0
    for phase in phases:
        if phase.epochs is None or epoch < start + phase.epochs:
            return phase
        start += phase.epochs
    return phases[-1]


def _adam(params: list, lr: float, betas: tuple[float, float], weight_decay: float):
    """Adam with the fused kernel where this build supports it (one pass over each tensor:
    about 30% faster training of the MLP VAE on CPU than foreach), else the foreach one."""
    try:
        return torch.optim.Adam(params, lr=lr, betas=betas, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, lr=lr, betas=betas, weight_decay=weight_decay, foreach=True)


class _TermMeans:
    """Running means of the logged terms, per step: one stacked tensor per step, so an update
    costs two tensor ops however many terms it logs, and a step repeated k times per iteration
    (critic steps) is averaged over its k updates, not summed."""

    def __init__(self) -> None:
        self.parts: dict[str, list] = {}  # step -> [keys, sums (T,), updates]

    def add(self, step: str, terms: dict[str, torch.Tensor]) -> None:
        keys = tuple(terms)
        values = torch.stack(list(terms.values()))  # (T,)
        part = self.parts.get(step)
        if part is None or part[0] != keys:
            self.parts[step] = [keys, values.clone(), 1]
        else:
            part[1] += values
            part[2] += 1

    def means(self) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for keys, sums, updates in self.parts.values():
            out.update(zip(keys, (sums / updates).unbind(), strict=True))
        return out

    def __bool__(self) -> bool:
        return bool(self.parts)


class Trainer:
    """Trains ``model`` on ``splits`` as ``config`` says, writing into ``out_dir``."""

    def __init__(
        self,
        model: GenerativeModel,
        config: ExperimentConfig,
        splits: Splits,
        out_dir: Path,
        device: torch.device,
        ctx: DistContext | None = None,
    ) -> None:
        self.model = model.to(device)
        self.config = config
        self.tc = config.train
        self.splits = splits
        self.out_dir = Path(out_dir)
        self.device = device
        self.ctx = ctx or DistContext()
        # MNIST-size sets live on the GPU: no host-to-device copies per batch.
        self.train_set = splits.train.to(device) if device.type == "cuda" else splits.train
        self.memory_format = torch.channels_last if self.tc.channels_last else None
        if self.memory_format is not None:
            self.model.to(memory_format=self.memory_format)  # 4-d (conv) weights only
        self.wrapped: nn.Module = self.model
        if self.ctx.enabled:
            from torch.nn.parallel import DistributedDataParallel

            ids = [device.index] if device.type == "cuda" else None
            # Steps that train different parameter groups (VAE, critic, latent GAN, sampler)
            # leave some parameters unused in each backward; DDP must then search the graph
            # every step, which one-group models are spared.
            groups = [g for g in model.parameter_groups().values() if g]
            self.wrapped = DistributedDataParallel(
                self.model,
                device_ids=ids,
                find_unused_parameters=len(groups) > 1,
                gradient_as_bucket_view=True,
            )
        if self.tc.compile:
            if model.compile_unsupported:
                raise ConfigError(
                    f"--compile does not work with model {config.model!r}: "
                    f"{model.compile_unsupported}; drop --compile"
                )
            self.wrapped = torch.compile(self.wrapped, mode=self.tc.compile)
        self.phases = model.phases(self.tc.epochs)
        self.optimizers = self._build_optimizers()
        self.schedulers = {
            name: torch.optim.lr_scheduler.StepLR(opt, self.tc.lr_halve_every, gamma=0.5)
            for name, opt in self.optimizers.items()
            if self.tc.lr_halve_every
        }
        self.convergence = (
            ConvergenceCheck(
                self.tc.stop_metric, self.tc.stop_window, self.tc.stop_tolerance, self.tc.stop_mode
            )
            if self.tc.stop_metric
            else None
        )
        self.epochs_cut = 0  # epochs the convergence rule took off the plan
        self.epoch = 0  # epochs completed
        self.iteration = 0
        self.step = 0  # optimizer updates, every group: the step experiment trackers log at
        loggers = (*self.tc.loggers, *(("tensorboard",) if self.tc.tensorboard else ()))
        self.log = MetricsLog(self.out_dir, self.ctx.is_main, loggers=loggers)
        self.check_every_step = device.type == "cpu"

    # --- set-up ----------------------------------------------------------------------------
    def _build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        optimizers = {}
        for name, params in self.model.parameter_groups().items():
            if not params:
                continue
            opts = self.model.group_options(name)
            wd = self.tc.weight_decay if opts.weight_decay is None else opts.weight_decay
            lr = self.tc.lr if opts.lr is None else opts.lr
            optimizers[name] = _adam(params, lr * opts.lr_scale, opts.betas, wd)
        return optimizers

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizers": {k: v.state_dict() for k, v in self.optimizers.items()},
            "schedulers": {k: v.state_dict() for k, v in self.schedulers.items()},
            "epoch": self.epoch,
            "iteration": self.iteration,
            "step": self.step,
            "world_size": self.ctx.world_size,
            "phases": [[phase.name, phase.epochs] for phase in self.phases],
            "epochs_cut": self.epochs_cut,
            "convergence": self.convergence.state_dict() if self.convergence else None,
            "spec": {
                "name": self.splits.spec.name,
                "shape": list(self.splits.spec.shape),
                "kind": self.splits.spec.kind,
            },
            "config": self.config.to_dict(),
        }

    def load_state_dict(self, state: dict[str, Any], source: Path) -> None:
        load_model_state(self.model, state["model"], source)
        if self.memory_format is not None:
            self.model.to(memory_format=self.memory_format)
        try:
            for name, opt in self.optimizers.items():
                opt.load_state_dict(state["optimizers"][name])
            for name, sched in self.schedulers.items():
                if name in state["schedulers"]:
                    sched.load_state_dict(state["schedulers"][name])
        except (KeyError, ValueError) as err:
            raise CheckpointError(
                f"optimiser state in {source} does not match this model ({err}); "
                "start a new run with --force"
            ) from None
        self.epoch = int(state["epoch"])
        self.iteration = int(state["iteration"])
        self.step = int(state.get("step", state["iteration"]))
        self._keep_phase_plan(state.get("phases"))
        self.epochs_cut = int(state.get("epochs_cut", 0))
        if self.convergence:
            self.convergence.load_state_dict(state.get("convergence"))
        saved_world = int(state.get("world_size", 1))
        if saved_world != self.ctx.world_size:
            b = self.tc.batch_size
            msg = (
                f"resuming a checkpoint written by {saved_world} process(es) with "
                f"{self.ctx.world_size}: the global batch changes from {saved_world * b} to "
                f"{self.ctx.world_size * b} (--batch-size is per process)"
            )
            self.log.write(
                {"event": "world_size_changed", "from": saved_world, "to": self.ctx.world_size}
            )
            if self.ctx.is_main:
                print(f"latentgap: note: {msg}", file=sys.stderr)

    def _keep_phase_plan(self, saved: list | None) -> None:
        """Resuming with more epochs extends the last phase; it does not re-plan the phases
        (a plan derived from the epoch count, e.g. VAEPP's default latent-GAN half, would
        otherwise move the boundaries under the epochs already trained)."""
        if not saved or [name for name, _ in saved] != [p.name for p in self.phases]:
            return
        lengths = [None if i == len(saved) - 1 else n for i, (_, n) in enumerate(saved)]
        self.phases = [
            dataclasses.replace(p, epochs=n) for p, n in zip(self.phases, lengths, strict=True)
        ]

    def save(self) -> Path:
        """Write the checkpoint, unless a parameter is no longer finite (then stop, keeping the
        previous checkpoint). Buffers may hold NaN as "not estimated yet" (VAEPP's log Ẑ)."""
        path = self.out_dir / CHECKPOINT
        self.check_in_sync()
        for name, value in self.model.named_parameters():
            if not bool(torch.isfinite(value).all()):
                self._diverged(f"parameter {name}", "non-finite", self.epoch)
        if self.ctx.is_main:
            save_checkpoint(path, self.state_dict())
        return path

    @torch.no_grad()
    def check_in_sync(self) -> None:
        """Under data parallelism, stop if the ranks' parameters differ (they are bitwise equal
        after every synchronised step; a mismatch means a rank trained on its own)."""
        if not self.ctx.enabled:
            return
        flat = torch.cat([p.detach().reshape(-1).double() for p in self.model.parameters()])
        ramp = torch.linspace(0.5, 1.5, flat.numel(), device=flat.device, dtype=torch.float64)
        fingerprint = torch.stack([flat.sum(), (ramp * flat).sum(), flat.square().sum()])  # (3,)
        every = self.ctx.all_gather_cat(fingerprint[None])  # (W, 3)
        if not torch.equal(every, every[:1].expand_as(every)):
            raise RuntimeError(
                f"data-parallel ranks hold different parameters at epoch {self.epoch} "
                f"(fingerprints {every.tolist()}); gradients were not synchronised"
            )

    # --- training ------------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        """Train until ``config.train.epochs`` epochs are complete; returns the last epoch's record."""
        tc = self.tc
        self.model.prepare_training(self.train_set)
        if self.epoch > 0:
            self.log.write({"event": "resume", "epoch": self.epoch, "iteration": self.iteration})
        else:
            self.log.hparams(self.config.to_dict())
        record: dict[str, Any] = {}
        while self.epoch < self.planned_epochs:
            phase = phase_at(self.phases, self.epoch)
            torch.manual_seed(epoch_seed(tc.seed + 7_777_777, self.epoch, self.ctx.rank))
            record = self._run_epoch(phase)
            self.epoch += 1
            for sched in self.schedulers.values():
                sched.step()
            record.update(self._evaluate_test(phase))
            self._check_finite(record, self.epoch)  # a NaN test loss: no samples, no checkpoint
            with self._same_rng_on_every_rank():
                record.update(self.model.end_epoch(phase.name, self.train_set))
            if self._converged(phase, record):
                phase = self.phases[0]
            planned = self.planned_epochs
            next_phase = phase_at(self.phases, self.epoch) if self.epoch < planned else None
            if next_phase is not phase:
                with self._same_rng_on_every_rank():
                    self.model.end_phase(phase.name, self.train_set)
            last = self.epoch == planned
            if self.ctx.is_main and (
                last or (tc.sample_every and self.epoch % tc.sample_every == 0)
            ):
                self.write_samples()
            self.log.write(record, step=self.step)
            if last or self.epoch % tc.checkpoint_every == 0:
                self.save()
        for name in ("config.json", "samples.png"):
            if (self.out_dir / name).exists():
                self.log.artifact(self.out_dir / name)
        self.log.close()
        return record

    @property
    def planned_epochs(self) -> int:
        """Epochs this run trains: ``train.epochs`` less what the convergence rule cut."""
        return self.tc.epochs - self.epochs_cut

    def _converged(self, phase: Phase, record: dict[str, Any]) -> bool:
        """Apply the convergence rule to the first phase; when it fires, end that phase now
        (later phases keep their planned epochs) and note it in ``record``."""
        if not self.convergence or phase is not self.phases[0]:
            return False
        if not self.convergence.update(self.epoch, record):
            return False
        if phase.epochs is None:  # the only open-ended phase: the run ends
            cut = self.tc.epochs - self.epoch
        else:
            cut = phase.epochs - self.epoch
            self.phases[0] = dataclasses.replace(phase, epochs=self.epoch)
        self.epochs_cut += cut
        record["converged"] = True
        self.log.write(
            {
                "event": "converged",
                "epoch": self.epoch,
                "metric": self.convergence.metric,
                "window": self.convergence.window,
                "tolerance": self.convergence.tolerance,
                "mode": self.convergence.mode,
                "best": self.convergence.best,
                "epochs_cut": cut,
            }
        )
        return True

    @contextlib.contextmanager
    def _same_rng_on_every_rank(self) -> Iterator[None]:
        """A forked RNG seeded from (seed, epoch) only: what runs inside agrees across ranks."""
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(epoch_seed(self.tc.seed + 3_333_333, self.epoch))
            yield

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.tc.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _run_epoch(self, phase: Phase) -> dict[str, Any]:
        tc, ctx = self.tc, self.ctx
        self.model.train()
        batches = self.train_set.batches(
            tc.batch_size,
            shuffle=True,
            seed=tc.seed,
            epoch=self.epoch,
            rank=ctx.rank,
            world_size=ctx.world_size,
        )
        n_batches = self.train_set.num_batches(tc.batch_size, world_size=ctx.world_size)
        bar = None
        if tc.progress and ctx.is_main:
            from tqdm.auto import tqdm

            bar = tqdm(
                total=n_batches,
                desc=f"epoch {self.epoch + 1}/{self.planned_epochs} [{phase.name}]",
                leave=False,
                dynamic_ncols=True,
            )
        epoch_terms, window = _TermMeans(), _TermMeans()
        images = 0
        t0 = time.perf_counter()
        exhausted = False
        while not exhausted:
            batch = None
            updated = False
            for step in phase.steps:
                for _ in range(step.repeat):
                    if not (step.reuse_batch and batch is not None):
                        batch = next(batches, None)
                        if batch is None:
                            exhausted = True
                            break
                        batch = batch.to(self.device, memory_format=self.memory_format)
                        images += len(batch)
                    terms = self._update(step.loss, step.group, batch)
                    updated = True
                    epoch_terms.add(step.loss, terms)
                    window.add(step.loss, terms)
                    if bar is not None:
                        bar.update(1)
                if exhausted:
                    break
            if exhausted and not window:
                break
            if updated:  # a pass that found no batch is not an iteration
                self.iteration += 1
            if exhausted or self.iteration % tc.log_every == 0:
                means = self._reduce(window.means())
                self._check_finite(means)
                if bar is not None:
                    bar.set_postfix({k: f"{v:.4g}" for k, v in list(means.items())[:3]})
                self.log.write(
                    {
                        "split": "train",
                        "epoch": self.epoch + 1,
                        "iteration": self.iteration,
                        "step": self.step,
                        "phase": phase.name,
                        **means,
                    },
                    step=self.step,
                )
                window = _TermMeans()
        if bar is not None:
            bar.close()
        elapsed = time.perf_counter() - t0
        means = self._reduce(epoch_terms.means())
        self._check_finite(means)
        lrs = {f"lr_{k}": opt.param_groups[0]["lr"] for k, opt in self.optimizers.items()}
        return {
            "split": "epoch",
            "epoch": self.epoch + 1,
            "iteration": self.iteration,
            "step": self.step,
            "phase": phase.name,
            "images_per_s": images * ctx.world_size / max(elapsed, 1e-9),
            "epoch_seconds": elapsed,
            **lrs,
            **means,
        }

    def _update(self, loss_name: str, group: str, batch: Batch) -> dict[str, torch.Tensor]:
        with self._autocast():
            out = self.wrapped(loss_name, batch)
        loss = out.loss.float()
        if self.check_every_step and self.ctx.any(not torch.isfinite(loss).item()):
            self._diverged(loss_name, float(loss.detach()))
        self.model.zero_grad(set_to_none=True)
        loss.backward()
        opt = self.optimizers[group]
        if self.tc.grad_clip:
            params = [p for g in opt.param_groups for p in g["params"]]
            torch.nn.utils.clip_grad_norm_(params, self.tc.grad_clip)
        opt.step()
        self.step += 1
        terms = {"loss" if loss_name == "loss" else f"{loss_name}_loss": loss.detach()}
        terms.update({k: v.detach().float() for k, v in out.terms.items()})  # bf16 → fp32 sums
        return terms

    def _reduce(self, values: dict[str, Any]) -> dict[str, float]:
        if not values:
            return {}
        keys = list(values)
        stacked = torch.stack(
            [torch.as_tensor(values[k], dtype=torch.float32, device=self.device) for k in keys]
        )
        if self.ctx.enabled:
            stacked = self.ctx.all_reduce_sum(stacked) / self.ctx.world_size
        return dict(zip(keys, stacked.tolist(), strict=True))

    def _check_finite(self, values: dict[str, Any], epoch: int | None = None) -> None:
        for key, value in values.items():
            if (key == "loss" or key.endswith("_loss")) and not math.isfinite(value):
                self._diverged(key, value, epoch)

    def _diverged(self, name: str, value: float | str, epoch: int | None = None) -> None:
        """Stop training (TrainingDiverged); ``epoch`` (1-based) defaults to the running one."""
        epoch = self.epoch + 1 if epoch is None else epoch
        path = self.out_dir / CHECKPOINT
        kept = (
            f"the last good checkpoint ({path}) is kept"
            if path.exists()
            else "no checkpoint was written"
        )
        self.log.write(
            {
                "event": "diverged",
                "loss": name,
                "epoch": epoch,
                "iteration": self.iteration,
            }
        )
        self.log.close()
        raise TrainingDiverged(
            f"training stopped: {name} became {value} in epoch {epoch} "
            f"(iteration {self.iteration}); {kept}; lower --lr (now {self.tc.lr:g}) or set --grad-clip"
        )

    @torch.no_grad()
    def _evaluate_test(self, phase: Phase) -> dict[str, float]:
        """Mean terms of the phase's first loss on up to ``eval_batches`` test batches."""
        if not self.tc.eval_batches:
            return {}
        self.model.eval()
        sums: dict[str, torch.Tensor] = {}
        n = 0
        loss_name = phase.steps[0].loss
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(self.tc.seed + 7)
            for i, batch in enumerate(
                self.splits.test.batches(
                    self.tc.batch_size,
                    rank=self.ctx.rank,
                    world_size=self.ctx.world_size,
                    seed=self.tc.seed,
                )
            ):
                if i >= self.tc.eval_batches:
                    break
                out = self.model(loss_name, batch.to(self.device))
                for key, value in {"loss": out.loss, **out.terms}.items():
                    sums[key] = sums.get(key, 0.0) + value.detach().float()
                n += 1
        self.model.train()
        means = self._reduce({k: v / max(n, 1) for k, v in sums.items()})
        return {f"test_{k}": v for k, v in means.items()}

    @torch.no_grad()
    def write_samples(self, n: int = 64) -> Path:
        """Sample grid ``samples.png`` (and a per-epoch copy under ``samples/``)."""
        g = torch.Generator(device=self.device).manual_seed(self.tc.seed + 1)
        was_training = self.model.training
        self.model.eval()
        try:
            images = self.model.sample(n, generator=g)
        finally:
            self.model.train(was_training)
        save_image_grid(images, self.out_dir / "samples" / f"epoch_{self.epoch:04d}.png")
        path = save_image_grid(images, self.out_dir / "samples.png")
        self.log.image("samples", path, step=self.step)
        return path
