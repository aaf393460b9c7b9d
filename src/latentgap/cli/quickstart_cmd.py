"""``latentgap quickstart``: the main job end to end on real MNIST in a few CPU minutes.

Fetches MNIST if it is not there yet, trains the default model, evaluates its test NLL with
1000 importance samples, writes sample grids, and prints where everything went.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from latentgap.cli.train_cmd import positive_int

DEFAULT_PRESET = "vaepp-mnist-small"


def add_parser(sub) -> None:
    p = sub.add_parser(
        "quickstart", help="fetch MNIST, train, evaluate NLL, sample (a few minutes)"
    )
    p.add_argument("--out", type=Path, help="run directory (default runs/quickstart-<time>)")
    p.add_argument("--preset", default=DEFAULT_PRESET, help=f"default {DEFAULT_PRESET}")
    p.add_argument("--epochs", type=positive_int, help="override the preset's epochs")
    p.add_argument("--iw-samples", type=positive_int, default=1000, metavar="K")
    p.add_argument(
        "--nll-limit",
        type=positive_int,
        metavar="N",
        help="evaluate NLL on the first N test images (default: all)",
    )
    p.add_argument(
        "--limit-train",
        type=positive_int,
        metavar="N",
        help="train on the first N images only (a quick look)",
    )
    p.add_argument(
        "--fid-samples",
        type=int,
        default=1000,
        metavar="N",
        help="sample FID of N samples against N test images (default 1000; 0: skip); needs the "
        "Inception weights (--inception, $LATENTGAP_INCEPTION or the cache)",
    )
    p.add_argument("--inception", type=Path, metavar="PATH", help="Inception weights for FID")
    p.add_argument("--ais-chains", type=positive_int, metavar="N", help="VAEPP: AIS chains")
    p.add_argument("--ais-temps", type=positive_int, metavar="K", help="VAEPP: AIS temperatures")
    p.add_argument("--data-dir")
    p.add_argument("--device", default="cpu")
    p.add_argument("--force", action="store_true", help="overwrite --out if it holds a run")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from latentgap.config import ExperimentConfig
    from latentgap.data import DATASETS, fetch_dataset, resolve_dataset_dir
    from latentgap.data.root import missing_files
    from latentgap.metrics.nll import evaluate_nll
    from latentgap.presets import PRESETS, deep_merge
    from latentgap.train.images import save_image_grid
    from latentgap.train.run import train

    preset = PRESETS.get(args.preset)
    values = deep_merge(ExperimentConfig().to_dict(), preset.values)
    values["preset"] = args.preset
    values["train"]["device"] = args.device
    if args.epochs:
        values["train"]["epochs"] = args.epochs
    if args.limit_train:
        values["data"]["limit_train"] = args.limit_train
    config = ExperimentConfig.from_dict(values)
    out = args.out or Path("runs") / time.strftime("quickstart-%Y%m%d-%H%M%S")

    info = DATASETS.get(config.data.name)
    folder = resolve_dataset_dir(info, args.data_dir)
    if missing_files(info, folder):
        print(f"[1/4] {config.data.name} not found; fetching it ...", flush=True)
        folder = fetch_dataset(config.data.name, args.data_dir)
    print(f"[1/4] data: {folder}", flush=True)

    print(
        f"[2/4] training {config.model} ({args.preset}) for {config.train.epochs} epochs -> {out}",
        flush=True,
    )
    result = train(config, out, force=args.force, data_dir=args.data_dir)

    print(
        f"[3/4] log Z (AIS), then test NLL with K={args.iw_samples} importance samples ...",
        flush=True,
    )
    from latentgap.train.run import load_splits, update_eval_json

    splits = load_splits(config, args.data_dir)
    test = splits.test.subset(args.nll_limit) if args.nll_limit else splits.test
    model = result.model.eval()
    ais = {"ais_chains": args.ais_chains, "ais_temps": args.ais_temps}
    ais = {k: v for k, v in ais.items() if v is not None} if hasattr(model, "pullback") else {}
    nll = evaluate_nll(
        model,
        test,
        k=args.iw_samples,
        progress=True,
        before_repeat=lambda r: model.prepare_evaluation(splits.train, repeat=r, **ais),
    )
    results = {"model": config.model, "dataset": config.data.name, **nll.to_dict()}
    if "log_z_paper" in results:
        from latentgap.cli.evaluate_cmd import log_z_report

        results.update(log_z_report(results, show=True))
    update_eval_json(out, results)

    print("[4/4] sample grids and sample FID ...", flush=True)
    import torch

    grids = {}
    for sampler in model.samplers():
        if sampler.startswith("gan") and not bool(getattr(model, "gan_trained", True)):
            print(f"  {sampler}: skipped, the latent GAN did not train in this run", flush=True)
            continue
        g = torch.Generator(device=args.device).manual_seed(0)
        images = model.sample(64, generator=g, sampler=sampler)
        grids[sampler] = str(save_image_grid(images, out / f"samples-{sampler}.png"))
    fid = _sample_fid(model, splits, args, out)
    summary = {
        "run_dir": str(out),
        "config": str(out / "config.json"),
        "checkpoint": str(out / "checkpoint.pt"),
        "metrics": str(out / "metrics.jsonl"),
        "samples": grids,
        "eval": str(out / "eval.json"),
        "test_nll_nats": round(nll.nll_nats, 3),
        "bits_per_dim": round(nll.bits_per_dim, 4),
        "n_test": nll.n_examples,
        **fid,
    }
    for key in ("log_z", "log_z_reverse", "log_z_paper", "nll_nats_paper_logz"):
        if results.get(key) is not None:
            summary["test_" + key if key.startswith("nll") else key] = round(results[key], 3)
    print(json.dumps(summary, indent=2))
    return 0


def _sample_fid(model, splits, args: argparse.Namespace, out: Path) -> dict:
    """The sample FID of ``--fid-samples`` samples against as many test images, or why not."""
    from latentgap.errors import ConfigError
    from latentgap.metrics.fid import evaluate_fid
    from latentgap.metrics.inception import resolve_inception_path
    from latentgap.train.run import update_eval_json

    if not args.fid_samples:
        return {}
    try:
        resolve_inception_path(args.inception)
    except ConfigError as err:
        print(f"  sample FID skipped: {err}", flush=True)
        return {"fid_skipped": str(err)}
    n = min(args.fid_samples, len(splits.test))
    sampler = (
        "gan+mala"
        if "gan+mala" in model.samplers() and bool(getattr(model, "gan_trained", False))
        else None
    )
    fid = evaluate_fid(
        model,
        splits,
        n_samples=n,
        reference="test",
        reference_size=n,
        sampler=sampler,
        inception_path=args.inception,
        device=args.device,
        progress=True,
        recon=False,
    )
    update_eval_json(out, fid)
    return {
        "fid_sample": round(fid["fid_sample"], 2),
        "fid_samples": n,
        "fid_reference": f"first {n} test images",
        "fid_sampler": sampler or "default",
    }
