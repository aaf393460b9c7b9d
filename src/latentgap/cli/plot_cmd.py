"""``latentgap plot DIR [DIR ...] --curves OUT.png``: training curves of any logged term (one
panel per term; several runs overlaid against the optimizer step), and
``--latent-tsne OUT.png``: the LDC-VAE paper's Fig. 2.

One panel per run: t-SNE (scikit-learn, after PCA to 50 dimensions when the latent space is
larger) of encoder codes of test images against the codes generation decodes (prior samples for
a VAE, sampler-net samples for LDC-VAE, GMM samples for an RAE), with the consistency numbers of
:mod:`latentgap.metrics.consistency` in each title.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from latentgap.cli.train_cmd import positive_int
from latentgap.errors import ConfigError


def add_parser(sub) -> None:
    p = sub.add_parser("plot", help="figures of trained runs (training curves, latent t-SNE)")
    p.add_argument("run_dirs", type=Path, nargs="+", metavar="DIR")
    p.add_argument("--curves", type=Path, metavar="OUT.png", help="training curves")
    p.add_argument(
        "--terms",
        metavar="A,B,...",
        help="logged terms to plot with --curves (default: the losses and the ELBO); see the "
        "keys of metrics.jsonl, e.g. loss,kl,rec,beta",
    )
    p.add_argument("--latent-tsne", type=Path, metavar="OUT.png", help="t-SNE of latent codes")
    p.add_argument("--num", type=positive_int, default=2000, help="codes per set (default 2000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--data-dir")
    p.set_defaults(func=run)


def _tsne(codes, seed: int):
    try:
        from sklearn.decomposition import PCA
        from sklearn.manifold import TSNE
    except ImportError:
        raise ConfigError(
            "--latent-tsne needs scikit-learn: pip install scikit-learn (a dependency of latentgap)"
        ) from None
    x = codes
    if x.shape[1] > 50:
        x = PCA(50, random_state=seed).fit_transform(x)
    return TSNE(2, init="pca", random_state=seed, perplexity=30).fit_transform(x)


def plot_curves(args: argparse.Namespace) -> dict:
    from latentgap.report import figures
    from latentgap.train.metrics_log import read_metrics

    if args.curves.suffix.lower() != ".png":
        raise ConfigError(f"--curves must name a .png file, got {args.curves}")
    runs = []
    for run_dir in args.run_dirs:
        path = Path(run_dir) / "metrics.jsonl"
        if not path.exists():
            raise ConfigError(f"{run_dir} has no metrics.jsonl; is it a run directory?")
        runs.append((Path(run_dir).name, read_metrics(path)))
    terms = [t.strip() for t in args.terms.split(",") if t.strip()] if args.terms else None
    if terms is not None:
        logged = {k for _, records in runs for r in records for k in r}
        missing = [t for t in terms if t not in logged]
        if missing:
            valid = sorted(k for k in logged if k not in ("time", "split", "phase", "event"))
            raise ConfigError(
                f"no run logged {', '.join(map(repr, missing))}; logged terms: {', '.join(valid)}"
            )
    if len(runs) == 1:
        records = runs[0][1]
        if terms is None:
            path = figures.loss_curves(records, args.curves)
        else:
            path = figures.curves(records, terms, args.curves)
    else:
        path = figures.overlay_curves(runs, terms, args.curves)
    if path is None:
        raise ConfigError("nothing to plot: the runs logged none of these terms during training")
    return {"curves": str(path), "terms": terms or "losses"}


def run(args: argparse.Namespace) -> int:
    if args.curves is None and args.latent_tsne is None:
        raise ConfigError("nothing to plot: pass --curves OUT.png and/or --latent-tsne OUT.png")
    result = plot_curves(args) if args.curves is not None else {}
    if args.latent_tsne is not None:
        result.update(plot_tsne(args))
    print(json.dumps(result))
    return 0


def plot_tsne(args: argparse.Namespace) -> dict:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError(
            "plotting needs matplotlib: pip install matplotlib (a dependency of latentgap)"
        ) from None
    import numpy as np

    from latentgap.metrics.consistency import classifier_accuracy, collect_codes, mmd_test
    from latentgap.report import figures
    from latentgap.train.run import load_run, update_eval_json

    if args.latent_tsne.suffix.lower() != ".png":
        raise ConfigError(f"--latent-tsne must name a .png file, got {args.latent_tsne}")
    from latentgap.train.rundir import check_output_file

    check_output_file(args.latent_tsne, "--latent-tsne")
    panels = []
    for run_dir in args.run_dirs:
        model, config, splits = load_run(run_dir, args.device, args.data_dir)
        n = min(args.num, len(splits.test))  # as many generation codes as test codes
        codes = collect_codes(model, splits.test, n, args.seed)
        mmd2, p = mmd_test(codes.encoder, codes.generation, seed=args.seed)
        acc = classifier_accuracy(codes.encoder, codes.generation, args.seed)
        numbers = {"consistency_mmd2": mmd2, "consistency_mmd_p": p, "consistency_c2st": acc}
        update_eval_json(run_dir, numbers)
        both = np.concatenate([codes.encoder.numpy(), codes.generation.numpy()])
        panels.append((run_dir, config.model, _tsne(both, args.seed), len(codes.encoder), numbers))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.4), squeeze=False)
    for ax, (run_dir, model_name, xy, n, numbers) in zip(axes[0], panels, strict=True):
        ax.scatter(*xy[:n].T, s=2, c="tab:blue", label="encoder (test images)")
        ax.scatter(*xy[n:].T, s=2, c="tab:orange", label="generation codes")
        ax.set_title(
            f"{model_name} ({run_dir.name})\nMMD² {numbers['consistency_mmd2']:.3g}, "
            f"C2ST acc {numbers['consistency_c2st']:.2f}",
            fontsize=9,
        )
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0][0].legend(loc="lower left", fontsize=7, markerscale=4)
    fig.tight_layout()
    figures.save_figure(fig, args.latent_tsne, dpi=110)
    plt.close(fig)
    return {"out": str(args.latent_tsne), "runs": {str(r): nums for r, _, _, _, nums in panels}}
