"""Run a paper table cell by cell: train each needed model once, evaluate it, write the results.

The output folder holds one run directory per trained model (``<out>/<run key>/``, shared by the
cells that evaluate it), ``results.json`` (rewritten atomically after every cell and every
training) and ``results.md``. A second invocation skips finished cells, reuses trained models and
cached evaluations, and resumes an interrupted training from its checkpoint.

Under ``torchrun --nproc_per_node N -m latentgap reproduce ...`` every training is data parallel
and every evaluation sharded (as for ``train`` and ``evaluate``); rank 0 alone logs and writes.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from latentgap.config import ExperimentConfig, to_plain
from latentgap.distributed import DistContext, barrier, init_distributed, resolve_device
from latentgap.errors import ConfigError, LatentgapError, TrainingDiverged
from latentgap.presets import PRESETS, deep_merge, set_path
from latentgap.reproduce.markdown import render_markdown
from latentgap.reproduce.tables import BUDGETS, TABLES, Budget, Cell, RunSpec, Table
from latentgap.train.checkpoint import atomic_write_text, load_checkpoint

RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"
CHECKPOINT = "checkpoint.pt"
Log = Callable[[str], None]


def _stderr(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def machine_info(device: str = "cpu") -> dict[str, Any]:
    """CPU model, core count, torch version and threads, and the GPU when ``device`` is CUDA."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "device": device,
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def build_config(run: RunSpec, budget: Budget, *, device: str = "cpu") -> ExperimentConfig:
    """Defaults ← the budget's preset ← the run's overrides ← the budget's overrides ← the
    run's ``replace`` settings.

    A ``data`` section in the run's overrides replaces the preset's (moving a model to another
    dataset drops dataset options such as ``binarize``); everything else merges key by key.
    Raises :class:`ConfigError` for an unregistered preset or an invalid option.
    """
    spec = run.spec(budget.name)
    values = deep_merge(ExperimentConfig().to_dict(), PRESETS.get(spec.preset).values)
    values["preset"] = spec.preset
    overrides = dict(spec.overrides)
    if "data" in overrides:
        values["data"] = {**ExperimentConfig().to_dict()["data"], **overrides.pop("data")}
    values = deep_merge(deep_merge(values, overrides), dict(budget.train_overrides))
    for key, value in spec.replace.items():
        set_path(values, key, value)
    values["train"]["device"] = device
    return ExperimentConfig.from_dict(values)


def skip_reason(config: ExperimentConfig, data_dir: str | None, cache: dict[str, str]) -> str:
    """Why a run cannot be trained here ('' if it can): an unregistered model, or dataset files
    that are missing or fail their checksum (the registry's file check, ``data verify``)."""
    from latentgap.data import DATASETS, resolve_dataset_dir, verify_dataset
    from latentgap.data.root import fix_hint
    from latentgap.models import MODELS

    if config.model not in MODELS:
        return f"model {config.model!r} is not registered in this version"
    name = config.data.name
    if name not in cache:
        try:
            bad = [c for c in verify_dataset(name, data_dir) if not c.ok]
            cache[name] = ""
            if bad:
                more = f"; {len(bad) - 1} more file(s)" if len(bad) > 1 else ""
                folder = resolve_dataset_dir(DATASETS.get(name), data_dir)
                cache[name] = (
                    f"dataset {name!r} is not on this machine ({bad[0].message}{more}); "
                    + fix_hint(name, folder)
                )
        except LatentgapError as err:
            cache[name] = str(err)
    return cache[name]


def select_cells(
    table: Table, rows: Sequence[str] | None = None, columns: Sequence[str] | None = None
) -> list[Cell]:
    """The cells in the chosen rows and columns (by key, label or, for columns, dataset)."""

    def pick(tokens: Sequence[str] | None, labels: dict[str, str], what: str, extra) -> set[str]:
        if not tokens:
            return set(labels)
        chosen: set[str] = set()
        for token in tokens:
            t = token.lower()
            hit = {k for k, v in labels.items() if t in (k.lower(), v.lower()) or t in extra(k)}
            if not hit:
                raise ConfigError(
                    f"table {table.name!r} has no {what} {token!r}; choose from: "
                    + ", ".join(labels)
                )
            chosen |= hit
        return chosen

    datasets = {
        col: {c.run.dataset for c in table.cells if c.column == col} for col in table.columns
    }
    row_set = pick(rows, dict(table.rows), "row", lambda k: ())
    col_set = pick(columns, dict(table.columns), "column", lambda k: datasets[k])
    return [c for c in table.cells if c.row in row_set and c.column in col_set]


class Results:
    """``results.json`` in memory; :meth:`save` writes it and ``results.md`` atomically."""

    def __init__(
        self,
        out: Path,
        table: Table,
        budget: Budget,
        *,
        force: bool,
        device: str,
        ctx: DistContext | None = None,
    ):
        self.out, self.table = out, table
        self.ctx = ctx or DistContext()
        path = out / RESULTS_JSON
        data: dict[str, Any] = {}
        if path.exists():
            try:
                data = json.loads(path.read_text())
            except json.JSONDecodeError:
                data = {}  # a torn file: the run directories still hold the trained models
        if data and data.get("table") != table.name:
            raise ConfigError(
                f"{out} holds results of table {data.get('table')!r}, not {table.name!r}; "
                "use another --out"
            )
        if data and data.get("budget") != budget.name and not force:
            raise ConfigError(
                f"{out} holds results of the {data.get('budget')!r} budget, not {budget.name!r}; "
                "use another --out or --force to start over"
            )
        if data.get("budget") != budget.name:
            data = {}
        self.data = data
        data.update(
            table=table.name,
            title=table.title,
            source=table.source,
            budget=budget.name,
            budget_description=budget.description,
            budget_settings=to_plain(budget),
            machine=machine_info(device),
        )
        data.setdefault("started", _now())
        self._elapsed_before = data.get("elapsed_s", 0.0)  # earlier invocations
        self._t0 = time.perf_counter()
        data.setdefault("runs", {})
        data.setdefault("cells", {})

    @property
    def runs(self) -> dict[str, Any]:
        return self.data["runs"]

    @property
    def cells(self) -> dict[str, Any]:
        return self.data["cells"]

    def save(self) -> None:
        if not self.ctx.is_main:
            return
        self.data["updated"] = _now()
        self.data["elapsed_s"] = round(self._elapsed_before + time.perf_counter() - self._t0, 1)
        self.data["wall_s"] = round(
            sum(r.get("train_wall_s", 0.0) for r in self.runs.values())
            + sum(c.get("eval_wall_s", 0.0) for c in self.cells.values()),
            1,
        )
        from latentgap.train.run import finite_or_none

        data, _ = finite_or_none(self.data)  # JSON has no NaN
        text = json.dumps(data, indent=2, allow_nan=False)
        atomic_write_text(self.out / RESULTS_JSON, text + "\n")
        atomic_write_text(self.out / RESULTS_MD, render_markdown(self.data, self.table))


def _silent(message: str) -> None:
    """The log of ranks other than 0."""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def reproduce(
    table: str | Table,
    out: str | os.PathLike[str],
    *,
    budget: str = "cpu",
    rows: Sequence[str] | None = None,
    columns: Sequence[str] | None = None,
    data_dir: str | None = None,
    device: str = "cpu",
    force: bool = False,
    progress: bool = False,
    inception_path: str | None = None,
    fid_extractor: str | None = None,
    fid_cache_dir: str | os.PathLike[str] | None = None,
    log: Log = _stderr,
) -> dict[str, Any]:
    """Reproduce ``table`` (a name from :data:`TABLES`) into ``out`` under ``budget``.

    Each selected cell is trained (once per run, resuming an interrupted one), evaluated (once
    per run and metric family, cached in ``results.json``) and recorded; a cell whose model or
    dataset is missing here is recorded as skipped with the reason. ``force`` retrains and
    re-evaluates the selected cells. Returns the content of ``results.json``.
    """
    import latentgap.models  # noqa: F401  (model modules register their presets)

    table = TABLES.get(table) if isinstance(table, str) else table
    if budget not in BUDGETS:
        raise ConfigError(f"unknown budget {budget!r}; choose one of: {', '.join(BUDGETS)}")
    b = BUDGETS[budget]
    from latentgap.metrics.inception import EXTRACTORS

    if fid_extractor is not None and fid_extractor not in EXTRACTORS:
        raise ConfigError(  # before any training, not when the first FID cell is evaluated
            f"unknown FID extractor {fid_extractor!r}; choose one of: {', '.join(sorted(EXTRACTORS))}"
        )
    ctx = init_distributed(device)
    if not ctx.is_main:
        log = _silent
    if b.needs_gpu and not device.startswith("cuda"):
        log(f"warning: the {budget!r} budget is sized for a GPU; running on {device}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results = Results(out, table, b, force=force, device=device, ctx=ctx)
    barrier()  # every rank has read results.json before rank 0 rewrites it
    cells = select_cells(table, rows, columns)
    fresh: set[str] = set()  # runs already (re)trained from scratch in this invocation
    data_cache: dict[str, str] = {}
    context = _Context(
        b, out, data_dir, device, progress, inception_path, fid_extractor, fid_cache_dir, ctx
    )
    for i, cell in enumerate(cells, 1):
        prior = results.cells.get(cell.key, {})
        if prior.get("status") == "done" and not force:
            log(f"[{i}/{len(cells)}] {cell.key}: done already ({prior.get('value')})")
            continue
        log(f"[{i}/{len(cells)}] {cell.key}: {cell.metric} of run {cell.run.key}")
        record = {"row": cell.row, "column": cell.column, "metric": cell.metric}
        record |= {"paper": cell.paper, "run": cell.run.key, "sampler": cell.sampler}
        config, reason = None, ""
        try:
            preset = cell.run.spec(b.name).preset
            reason = f"preset {preset!r} is not registered in this version"
            if preset in PRESETS:
                config = build_config(cell.run, b, device=device)
                reason = skip_reason(config, data_dir, data_cache)
        except ConfigError as err:
            reason = str(err)
        if reason or config is None:
            record |= {"status": "skipped", "reason": reason}
            log(f"    skipped: {reason}")
        else:
            retrain = force and cell.run.key not in fresh
            fresh.add(cell.run.key)
            record |= context.run_cell(cell, config, results, retrain=retrain, log=log)
        results.cells[cell.key] = record
        results.save()
    results.save()
    return results.data


@dataclass
class _Context:
    """Budget, folders and options shared by the cells of one invocation."""

    budget: Budget
    out: Path
    data_dir: str | None
    device: str
    progress: bool
    inception_path: str | None
    fid_extractor: str | None  # None: the budget's
    fid_cache_dir: str | os.PathLike[str] | None
    ctx: DistContext

    def run_cell(
        self, cell: Cell, config: ExperimentConfig, results: Results, *, retrain: bool, log: Log
    ) -> dict[str, Any]:
        """Train ``cell``'s run if needed, evaluate it, and return the cell's record."""
        run = results.runs.setdefault(cell.run.key, {})
        if retrain:
            run.clear()
        try:
            self.ensure_trained(cell.run.key, config, run, results, retrain=retrain, log=log)
            eval_key = "nll" if cell.metric in ("nll_nats", "bits_per_dim") else "fid"
            eval_key += f":{cell.sampler}" if eval_key == "fid" and cell.sampler else ""
            evals = run.setdefault("evals", {})
            t0 = time.perf_counter()
            if eval_key not in evals:
                evals[eval_key] = self.evaluate(cell, eval_key)
                evals[eval_key]["wall_s"] = round(time.perf_counter() - t0, 1)
                if self.ctx.is_main:
                    _merge_eval_json(self.out / cell.run.key, evals[eval_key], cell.sampler)
            wall = round(time.perf_counter() - t0, 1)
        except TrainingDiverged as err:
            run["status"] = "diverged"
            log(f"    failed: {err}")
            return {"status": "failed", "reason": str(err)}
        except LatentgapError as err:
            log(f"    failed: {err}")
            return {"status": "failed", "reason": str(err)}
        result = evals[eval_key]
        value = result.get(cell.metric)
        if value is None:
            return {"status": "failed", "reason": f"the evaluation gave no {cell.metric}"}
        record: dict[str, Any] = {"status": "done", "value": value, "eval_wall_s": wall}
        if cell.metric == "nll_nats":
            record["std"] = result.get("nll_std")
        elif cell.metric == "bits_per_dim" and result.get("nll_nats"):
            record["std"] = result["nll_std"] * value / result["nll_nats"]
        log(f"    {cell.metric} = {value:.4g} (paper {cell.paper})")
        return record

    def ensure_trained(
        self,
        key: str,
        config: ExperimentConfig,
        run: dict[str, Any],
        results: Results,
        *,
        retrain: bool,
        log: Log,
    ) -> None:
        """Train run ``key`` unless it is finished; resume from its checkpoint if interrupted."""
        from latentgap.train.run import train

        run_dir = self.out / key
        checkpoint = run_dir / CHECKPOINT
        if not retrain and run.get("status") == "trained" and checkpoint.exists():
            return
        resume = checkpoint.exists() and not retrain
        config.train.progress = self.progress
        run.update(
            status="training",
            preset=config.preset,
            model=config.model,
            dataset=config.data.name,
            epochs=config.train.epochs,
            train_images=config.data.limit_train,
            dir=key,
        )
        results.save()
        log(f"    {'resuming' if resume else 'training'} {key} ({config.train.epochs} epochs)")
        t0 = time.perf_counter()
        try:
            train(config, run_dir, resume=resume, force=not resume, data_dir=self.data_dir)
            state = load_checkpoint(checkpoint)
            run["epochs_trained"] = int(state["epoch"])
            if config.train.stop_metric:
                run["stop_metric"] = config.train.stop_metric
                run["converged"] = (state.get("convergence") or {}).get("converged_at") is not None
        finally:
            run["train_wall_s"] = round(run.get("train_wall_s", 0.0) + time.perf_counter() - t0, 1)
            run["train_calls"] = run.get("train_calls", 0) + 1
            results.save()
        run["status"] = "trained"
        run.pop("evals", None)  # a model trained further invalidates earlier evaluations
        results.save()

    def evaluate(self, cell: Cell, eval_key: str) -> dict[str, Any]:
        """Test NLL (importance sampling, log Ẑ re-estimated per repeat) or FID of the run."""
        from latentgap.train.run import load_run

        b = self.budget
        device = str(resolve_device(self.device, self.ctx))
        model, config, splits = load_run(self.out / cell.run.key, device, self.data_dir)
        if eval_key == "nll":
            from latentgap.metrics.nll import evaluate_nll

            if not model.has_likelihood:
                raise ConfigError(f"model {config.model!r} has no likelihood, so no NLL")
            logz: dict[str, Any] = {"ctx": self.ctx}
            if hasattr(model, "pullback"):  # VAEPP: log Ẑ by Eq. (8) before each repeat
                logz["progress"] = self.progress
                if b.logz_samples is not None:
                    logz["samples_per_image"] = b.logz_samples
            nll = evaluate_nll(
                model,
                splits.test,
                k=b.nll_k,
                repeats=b.nll_repeats,
                progress=self.progress,
                before_repeat=lambda r: model.prepare_evaluation(splits.train, repeat=r, **logz),
                ctx=self.ctx,
            )
            return nll.to_dict()
        from latentgap.metrics.fid import evaluate_fid

        if cell.sampler is not None and cell.sampler not in model.samplers():
            raise ConfigError(f"model {config.model!r} has no sampler {cell.sampler!r}")
        result = evaluate_fid(
            model,
            splits,
            n_samples=b.fid_samples,
            reference="train",
            reference_size=b.fid_reference_size,
            sampler=cell.sampler,
            extractor=self.fid_extractor or b.fid_extractor,
            inception_path=self.inception_path,
            device=device,
            progress=self.progress,
            cache_dir=self.fid_cache_dir,
            ctx=self.ctx,
        )
        return dict(result)


def _merge_eval_json(run_dir: Path, results: dict[str, Any], sampler: str | None) -> None:
    """Merge ``results`` into the run's ``eval.json`` (the keys ``latentgap evaluate`` writes;
    FID keys of a named sampler get an ``@sampler`` suffix)."""
    from latentgap.train.run import update_eval_json

    if sampler is not None:
        results = {
            (f"{k}@{sampler}" if k.startswith("fid_") or k in ("precision", "recall") else k): v
            for k, v in results.items()
        }
    update_eval_json(run_dir, results)


__all__ = ["build_config", "machine_info", "reproduce", "select_cells", "skip_reason"]
