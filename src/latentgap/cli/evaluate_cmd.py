"""``latentgap evaluate DIR``: metrics of a trained run, printed as JSON and saved to eval.json."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from latentgap.cli.train_cmd import positive_int
from latentgap.errors import ConfigError
from latentgap.train.checkpoint import atomic_write_text


def add_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="evaluate a trained run (test NLL, ...)")
    p.add_argument("run_dir", type=Path, metavar="DIR")
    p.add_argument("--nll", action="store_true", help="test NLL by importance sampling")
    p.add_argument(
        "--iw-samples",
        type=positive_int,
        default=1000,
        metavar="K",
        help="importance samples per test image (default 1000)",
    )
    p.add_argument(
        "--repeats",
        type=positive_int,
        default=1,
        metavar="R",
        help="repeat the whole evaluation R times; report mean ± std",
    )
    p.add_argument("--limit", type=positive_int, metavar="N", help="only the first N test images")
    p.add_argument("--batch-size", type=positive_int, help="test images per model call")
    p.add_argument(
        "--logz-samples",
        type=positive_int,
        metavar="S",
        help="VAEPP: q-proposal samples per training image for log Ẑ",
    )
    p.add_argument(
        "--logz-passes",
        type=positive_int,
        metavar="P",
        help="VAEPP: sweeps over the training set for log Ẑ",
    )
    p.add_argument(
        "--diagnostics",
        action="store_true",
        help="VAEPP: E_q D vs E_p D, KL(p_N||p), KL bound, β, variance of log Ẑ",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--data-dir")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def update_eval_json(run_dir: Path, results: dict[str, Any]) -> dict[str, Any]:
    """Merge ``results`` into ``DIR/eval.json`` (written atomically) and return the merged dict."""
    path = run_dir / "eval.json"
    merged: dict[str, Any] = {}
    if path.exists():
        try:
            merged = json.loads(path.read_text())
        except json.JSONDecodeError:
            merged = {}
    merged.update(results)
    atomic_write_text(path, json.dumps(merged, indent=2, sort_keys=True) + "\n")
    return merged


def run(args: argparse.Namespace) -> int:
    from latentgap.metrics.nll import evaluate_nll
    from latentgap.train.run import load_run

    if not (args.nll or args.diagnostics):
        raise ConfigError("nothing to evaluate: pass --nll and/or --diagnostics")
    model, config, splits = load_run(args.run_dir, args.device, args.data_dir)
    test = splits.test.subset(args.limit) if args.limit else splits.test
    logz = {
        "samples_per_image": args.logz_samples,
        "passes": args.logz_passes,
        "progress": not args.no_progress,
    }
    logz = {k: v for k, v in logz.items() if v is not None} if hasattr(model, "pullback") else {}
    results: dict[str, Any] = {
        "run": str(args.run_dir),
        "model": config.model,
        "dataset": config.data.name,
    }
    if args.nll:
        if not model.has_likelihood:
            raise ConfigError(f"model {config.model!r} has no likelihood, so no NLL; use --fid")
        nll = evaluate_nll(
            model,
            test,
            k=args.iw_samples,
            repeats=args.repeats,
            batch_size=args.batch_size,
            seed=args.seed,
            progress=not args.no_progress,
            before_repeat=lambda r: model.prepare_evaluation(splits.train, repeat=r, **logz),
        )
        results.update(nll.to_dict())
    if args.diagnostics:
        if not hasattr(model, "pullback"):
            raise ConfigError(f"--diagnostics is for VAEPP runs; {config.model!r} is not one")
        from latentgap.metrics.vaepp_diagnostics import vaepp_diagnostics

        if not args.nll:
            model.prepare_evaluation(splits.train, **logz)
        results.update(vaepp_diagnostics(model, splits.train, test, seed=args.seed))
    update_eval_json(args.run_dir, results)
    print(json.dumps(results))
    return 0
