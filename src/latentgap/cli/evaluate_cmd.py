"""``latentgap evaluate DIR``: metrics of a trained run, printed as JSON and saved to eval.json.

``--nll`` (importance-sampled test NLL), ``--diagnostics`` (VAEPP) and ``--fid`` (FID of samples
and test reconstructions, precision and recall; :func:`latentgap.metrics.fid.evaluate_fid`).

Under ``torchrun --nproc_per_node N -m latentgap evaluate ...`` the test NLL, VAEPP's log Ẑ
(both proposals) and the FID features are sharded across the processes and reduced exactly; rank
0 prints and writes eval.json. ``--consistency`` and ``--diagnostics`` are not sharded.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from latentgap.cli.train_cmd import nonnegative_int, positive_int, seed_int
from latentgap.errors import ConfigError, NonFiniteResult
from latentgap.train.run import finite_or_none, update_eval_json


def add_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="evaluate a trained run (test NLL, FID, ...)")
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
    p.add_argument(
        "--limit-train",
        type=data_limit,
        default=argparse.SUPPRESS,
        metavar="N|all",
        help="training images for log Ẑ and the FID reference (default: the run's limit_train)",
    )
    p.add_argument(
        "--limit-test",
        type=data_limit,
        default=argparse.SUPPRESS,
        metavar="N|all",
        help="test images to load (default: the run's limit_test)",
    )
    p.add_argument("--batch-size", type=positive_int, help="test images per model call")
    p.add_argument(
        "--logz-samples",
        type=positive_int,
        metavar="S",
        help="VAEPP: q-proposal samples per training image for log Ẑ",
    )
    p.add_argument(
        "--consistency",
        action="store_true",
        help="latent consistency: MMD² (permutation p) and classifier accuracy between encoder "
        "codes of test images and generation codes; LDC-VAE adds the within/between particle "
        "spread, the same numbers for its encoder-gmm reference and, with --fid, that "
        "reference's sample FID",
    )
    p.add_argument(
        "--logz-normal-samples",
        type=nonnegative_int,
        metavar="N",
        help="VAEPP: fresh ε for the p_N-proposal diagnostic of log Ẑ (default 0: skip)",
    )
    p.add_argument(
        "--logz",
        choices=("ais", "paper"),
        help="VAEPP: the log Z behind the NLL: 'ais' (annealed importance sampling, the "
        "default; Eq. (8) is reported beside it) or 'paper' (Eq. (8) alone)",
    )
    p.add_argument("--ais-chains", type=positive_int, metavar="N", help="VAEPP: AIS chains")
    p.add_argument("--ais-temps", type=positive_int, metavar="K", help="VAEPP: AIS temperatures")
    p.add_argument(
        "--ais-leapfrog", type=positive_int, metavar="L", help="VAEPP: leapfrog steps per HMC move"
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
    add_fid_arguments(p)
    p.add_argument("--seed", type=seed_int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--data-dir")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def data_limit(text: str) -> int | None:
    """``N`` (a positive integer) or ``all`` (None: the whole split)."""
    if text.lower() in ("all", "none"):
        return None
    return positive_int(text)


def add_fid_arguments(p: argparse.ArgumentParser) -> None:
    from latentgap.metrics.inception import EXTRACTORS, INCEPTION_ENV

    g = p.add_argument_group("FID and precision/recall")
    g.add_argument(
        "--fid",
        action="store_true",
        help="FID of samples and test reconstructions, precision and recall (k = 3)",
    )
    g.add_argument(
        "--fid-samples",
        type=positive_int,
        default=5000,
        metavar="N",
        help="generated images (and at most N test reconstructions) (default 5000)",
    )
    g.add_argument(
        "--fid-reference",
        choices=("train", "test"),
        default="train",
        help="split whose gray images give the reference statistics (default train)",
    )
    g.add_argument(
        "--fid-reference-size",
        type=positive_int,
        metavar="M",
        help="only the first M reference images (default: the whole split; cached)",
    )
    g.add_argument("--sampler", help="sampling method for FID; the model's default if omitted")
    g.add_argument(
        "--inception",
        type=Path,
        metavar="PATH",
        help=f"Inception TorchScript weights (default ${INCEPTION_ENV}, "
        "else ~/.cache/latentgap/inception-v3-fid-2015-12-05.pt)",
    )
    g.add_argument(
        "--fid-extractor",
        choices=sorted(EXTRACTORS),
        default="inception",
        help="feature network (default inception); 'pixels' is a cheap 16x16 pixel-space "
        "stand-in for smoke tests whose numbers are not comparable to published FIDs",
    )
    g.add_argument(
        "--fid-batch-size",
        type=positive_int,
        default=100,
        metavar="B",
        help="images per extractor call (default 100)",
    )
    g.add_argument(
        "--fid-cache-dir",
        type=Path,
        metavar="DIR",
        help="where reference statistics are cached (default ~/.cache/latentgap/fid-stats)",
    )


def log_z_report(results: dict[str, Any], show: bool) -> dict[str, Any]:
    """The NLL under the other log Z estimates (log Z enters the NLL additively, so these are
    exact shifts of the same importance samples), and the AIS sandwich printed to stderr."""
    out: dict[str, Any] = {
        "nll_nats_paper_logz": results["nll_nats"] + results["log_z_paper"] - results["log_z"]
    }
    if results.get("log_z_reverse") is not None:
        out["nll_nats_reverse_logz"] = (
            results["nll_nats"] + results["log_z_reverse"] - results["log_z"]
        )
        if show:
            lo, hi = results["log_z_ais"], results["log_z_reverse"]
            print(
                f"log Z (AIS, {results['ais_chains']:.0f} chains × {results['ais_temps']:.0f} "
                f"temperatures): forward {lo:.2f} ± {results['log_z_ais_std_err']:.2f}, "
                f"reverse {hi:.2f}, coarse schedule {results['log_z_coarse']:.2f}; "
                f"Eq. (8) {results['log_z_paper']:.2f} "
                f"({results['log_z_paper'] - lo:+.2f} nats from AIS)",
                file=sys.stderr,
            )
            if not results.get("ais_agree", True):
                print(
                    f"warning: forward and reverse AIS differ by {hi - lo:.2f} nats; raise "
                    "--ais-temps or --ais-leapfrog before trusting this NLL",
                    file=sys.stderr,
                )
    return out


def run(args: argparse.Namespace) -> int:
    from latentgap.distributed import process_group_scope

    with process_group_scope():
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from latentgap.distributed import init_distributed, resolve_device
    from latentgap.metrics.nll import evaluate_nll
    from latentgap.train.run import check_device, load_run

    if not (args.nll or args.consistency or args.diagnostics or args.fid):
        raise ConfigError("nothing to evaluate: pass --nll, --fid, --diagnostics or --consistency")
    if args.fid and args.fid_extractor == "inception":
        from latentgap.metrics.inception import resolve_inception_path

        resolve_inception_path(args.inception)  # fail before any long computation
    check_device(args.device)
    ctx = init_distributed(args.device)
    device = str(resolve_device(args.device, ctx))
    overrides = {k: getattr(args, k) for k in ("limit_train", "limit_test") if hasattr(args, k)}
    model, config, splits = load_run(args.run_dir, device, args.data_dir, data=overrides)
    inherited = {
        k: getattr(config.data, k)
        for k in ("limit_train", "limit_test")
        if k not in overrides and getattr(config.data, k) is not None
    }
    if args.fid and args.sampler is not None and args.sampler not in model.samplers():
        raise ConfigError(
            f"model {config.model!r} has no sampler {args.sampler!r}; "
            f"choose one of: {', '.join(model.samplers())}"
        )
    test = splits.test.subset(args.limit) if args.limit else splits.test
    logz = {
        "samples_per_image": args.logz_samples,
        "passes": args.logz_passes,
        "normal_samples": args.logz_normal_samples,
        "method": args.logz,
        "ais_chains": args.ais_chains,
        "ais_temps": args.ais_temps,
        "ais_leapfrog": args.ais_leapfrog,
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
            before_repeat=lambda r: model.prepare_evaluation(
                splits.train, repeat=r, ctx=ctx, **logz
            ),
            ctx=ctx,
        )
        results.update(nll.to_dict())
        if "log_z_paper" in results:
            results.update(log_z_report(results, ctx.is_main))
    if args.consistency:
        from latentgap.metrics.consistency import latent_consistency

        results.update(latent_consistency(model, test, n=min(2000, len(test)), seed=args.seed))
    if args.diagnostics:
        if not hasattr(model, "pullback"):
            raise ConfigError(f"--diagnostics is for VAEPP runs; {config.model!r} is not one")
        from latentgap.metrics.vaepp_diagnostics import vaepp_diagnostics

        if not args.nll:
            model.prepare_evaluation(splits.train, ctx=ctx, **logz)
        results.update(vaepp_diagnostics(model, splits.train, test, seed=args.seed))
    if args.fid:
        from latentgap.metrics.fid import evaluate_fid

        fid_args = {
            "n_samples": args.fid_samples,
            "reference": args.fid_reference,
            "reference_size": args.fid_reference_size,
            "extractor": args.fid_extractor,
            "inception_path": args.inception,
            "batch_size": args.fid_batch_size,
            "device": device,
            "seed": args.seed,
            "progress": not args.no_progress,
            "cache_dir": args.fid_cache_dir,
            "ctx": ctx,
        }
        results.update(evaluate_fid(model, splits, sampler=args.sampler, **fid_args))
        if args.consistency and "encoder-gmm" in model.samplers() and args.sampler != "encoder-gmm":
            reference = evaluate_fid(  # the upper reference for LDC-VAE's sampler net
                model,
                splits,
                sampler="encoder-gmm",
                recon=False,
                precision_recall=False,
                **fid_args,
            )
            results["fid_sample_encoder_gmm"] = reference["fid_sample"]
    if ctx.enabled:
        results["world_size"] = ctx.world_size
    for key in ("limit_train", "limit_test"):  # the data evaluated on, when not all of it
        if getattr(config.data, key) is not None:
            results[key] = getattr(config.data, key)
    results, bad = finite_or_none(results)
    if bad:
        results["error"] = (
            f"non-finite {', '.join(bad)} (recorded as null): the model's parameters or "
            "log-densities overflow; retrain it (lower --lr, set --grad-clip)"
        )
    if ctx.is_main:
        update_eval_json(args.run_dir, results)
        print(json.dumps(results, allow_nan=False))
    if bad:
        raise NonFiniteResult(f"evaluation of {args.run_dir} gave {results['error']}")
    if inherited and ctx.is_main:
        listed = ", ".join(f"{k}={v}" for k, v in inherited.items())
        print(
            f"latentgap: note: evaluated with the run's {listed} (log Ẑ and the FID reference "
            "use the training images, the NLL the test images); override with "
            "--limit-train/--limit-test N or all",
            file=sys.stderr,
        )
    return 0
