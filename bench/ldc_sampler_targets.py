"""Which target lets LDC-VAE's sampler net cover the encoder's aggregate codes (issue 12)?

Loads a trained LDC-VAE run, freezes its encoder and decoder, and for each variant trains a
*fresh* sampler net (same initialisation seed) by the model's own sampler step (SVGD towards the
variant's target, Adam at the run's learning rate) on training batches in the trainer's order;
the encoder step is replaced by pushing one code per image into the KDE memory, as the encoder
step does. Then it measures how far the sampler's codes are from the encoder codes of 2,000 test
images: MMD² (Gaussian kernel, median bandwidth) and the 5-fold accuracy of a logistic-regression
two-sample test (0.5 = indistinguishable), and, as the reference, the same numbers for the
10-component GMM fitted to the training codes (``encoder-gmm``).

    python bench/ldc_sampler_targets.py RUN_DIR --steps 1200 --out bench/results/ldc-sampler-targets.json

Freezing the autoencoder isolates the sampler's problem (cover a fixed mixture of sharp modes)
from the moving target of joint training, at a fraction of its cost; the chosen default is then
checked by a joint run (docs/results.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
import time
from pathlib import Path

import torch

from latentgap.data.base import epoch_seed
from latentgap.metrics.consistency import classifier_accuracy, collect_codes, mmd_test
from latentgap.metrics.precision_recall import precision_recall
from latentgap.models.ldc_vae import build_sampler_net
from latentgap.reproduce.harness import machine_info
from latentgap.samplers.gmm import GaussianMixture
from latentgap.train.run import load_run

VARIANTS: dict[str, dict] = {
    "paired (literal Algorithm 1 line 6)": {"sampler_target": "paired"},
    "mixture, sinkhorn, M=100": {"sampler_target": "mixture", "sampler_particles": 100},
    "mixture, sinkhorn, M=400": {"sampler_target": "mixture", "sampler_particles": 400},
    "mixture, sinkhorn, M=100, sigma2 annealed 30x->1": {
        "sampler_target": "mixture",
        "sampler_particles": 100,
        "sampler_anneal": 30.0,
        "sampler_anneal_iters": 600,
    },
    "kde, Scott bandwidth, M=100": {"sampler_target": "kde", "kde_bandwidth": 1.0},
    "kde, 0.3 x Scott, M=100": {"sampler_target": "kde", "kde_bandwidth": 0.3},
    "kde, 0.1 x Scott, M=100": {"sampler_target": "kde", "kde_bandwidth": 0.1},
    "kde, 0.3 x Scott, M=400": {
        "sampler_target": "kde",
        "kde_bandwidth": 0.3,
        "sampler_particles": 400,
    },
    "kde, 0.3 x Scott, M=100, 3 sampler steps per batch": {
        "sampler_target": "kde",
        "kde_bandwidth": 0.3,
        "sampler_steps": 3,
    },
    # the SVGD estimator without its j = i self-attraction (stein.svgd, leave_one_out)
    "mixture, sinkhorn, M=100, leave-one-out": {
        "sampler_target": "mixture",
        "sampler_leave_one_out": True,
    },
    "kde, Scott bandwidth, M=100, leave-one-out": {
        "sampler_target": "kde",
        "sampler_leave_one_out": True,
    },
    "kde, 0.3 x Scott, M=100, leave-one-out": {
        "sampler_target": "kde",
        "kde_bandwidth": 0.3,
        "sampler_leave_one_out": True,
    },
    "kde, 1.5 x Scott, M=100, leave-one-out": {
        "sampler_target": "kde",
        "kde_bandwidth": 1.5,
        "sampler_leave_one_out": True,
    },
    "kde, 0.7 x Scott, M=100, leave-one-out": {
        "sampler_target": "kde",
        "kde_bandwidth": 0.7,
        "sampler_leave_one_out": True,
    },
    "kde, Scott bandwidth, M=100, leave-one-out, 3 sampler steps per batch": {
        "sampler_target": "kde",
        "sampler_leave_one_out": True,
        "sampler_steps": 3,
    },
    "kde, Scott bandwidth, M=200, leave-one-out": {
        "sampler_target": "kde",
        "sampler_particles": 200,
        "sampler_leave_one_out": True,
    },
    "kde, Scott bandwidth, M=400, leave-one-out": {
        "sampler_target": "kde",
        "sampler_particles": 400,
        "sampler_leave_one_out": True,
    },
    "kde, 0.5 x Scott, M=400, leave-one-out": {
        "sampler_target": "kde",
        "kde_bandwidth": 0.5,
        "sampler_particles": 400,
        "sampler_leave_one_out": True,
    },
    # issue 12, second round: the whitened kernel h²Σ (kde_metric), trained 5× longer
    "kde, isotropic Scott, M=100, leave-one-out": {
        "sampler_target": "kde",
        "kde_metric": "isotropic",
        "sampler_leave_one_out": True,
    },
    "kde, whitened Scott, M=100, leave-one-out": {
        "sampler_target": "kde",
        "kde_metric": "whitened",
        "sampler_leave_one_out": True,
    },
    "kde, whitened 1.5 x Scott, M=100, leave-one-out": {
        "sampler_target": "kde",
        "kde_metric": "whitened",
        "kde_bandwidth": 1.5,
        "sampler_leave_one_out": True,
    },
    "kde, whitened Scott, M=400, leave-one-out": {
        "sampler_target": "kde",
        "kde_metric": "whitened",
        "sampler_particles": 400,
        "sampler_leave_one_out": True,
    },
    "kde, whitened 1.2 x Scott, M=400, leave-one-out": {
        "sampler_target": "kde",
        "kde_metric": "whitened",
        "kde_bandwidth": 1.2,
        "sampler_particles": 400,
        "sampler_leave_one_out": True,
    },
    "kde, whitened 0.5 x Scott, M=400, leave-one-out": {
        "sampler_target": "kde",
        "kde_metric": "whitened",
        "kde_bandwidth": 0.5,
        "sampler_particles": 400,
        "sampler_leave_one_out": True,
    },
    "kde, whitened Scott, M=100, leave-one-out, 3 sampler steps per batch": {
        "sampler_target": "kde",
        "kde_metric": "whitened",
        "sampler_steps": 3,
        "sampler_leave_one_out": True,
    },
    # issue 12, third round: a GMM of the encoder's codes as the target (sampler_target="gmm"),
    # its responsibilities Sinkhorn-balanced to the mixture weights (target_balance_iters) or not
    "gmm target, 10 components, M=400, unbalanced": {
        "sampler_target": "gmm",
        "target_balance_iters": 0,
        "sampler_particles": 400,
        "sampler_leave_one_out": True,
    },
    "gmm target, 10 components, M=400, balanced": {
        "sampler_target": "gmm",
        "sampler_particles": 400,
        "sampler_leave_one_out": True,
    },
    "gmm target, 30 components, memory 5000, M=400, balanced": {
        "sampler_target": "gmm",
        "target_components": 30,
        "kde_memory": 5000,
        "sampler_particles": 400,
        "sampler_leave_one_out": True,
    },
    "gmm target, 10 components, memory 5000, M=400, balanced": {
        "sampler_target": "gmm",
        "kde_memory": 5000,
        "sampler_particles": 400,
        "sampler_leave_one_out": True,
    },
    "gmm target, 10 components, M=1000, balanced": {
        "sampler_target": "gmm",
        "sampler_particles": 1000,
        "sampler_leave_one_out": True,
    },
    "gmm target, 10 components, M=2000, balanced": {
        "sampler_target": "gmm",
        "sampler_particles": 2000,
        "sampler_leave_one_out": True,
    },
    # session 6: is the under-dispersion (std ratio 0.87) a matter of convergence (more updates
    # per batch), of the sampler net's input (784-pixel noise images vs a 64-d noise vector)?
    "gmm target, M=1000, 3 sampler steps per batch": {
        "sampler_target": "gmm",
        "sampler_particles": 1000,
        "sampler_leave_one_out": True,
        "sampler_steps": 3,
    },
    # the gmm rows above ran SVGD on the raw codes (this bench's isotropic default); the joint
    # runs of session 5 on whitened codes (the model's default then)
    "gmm target, M=1000, whitened SVGD coordinates": {
        "sampler_target": "gmm",
        "sampler_particles": 1000,
        "sampler_leave_one_out": True,
        "target_metric": "whitened",
    },
    "gmm target, M=1000, sampler lr x3": {
        "sampler_target": "gmm",
        "sampler_particles": 1000,
        "sampler_leave_one_out": True,
        "sampler_lr_scale": 3.0,
    },
    "gmm target, M=1000, mlp sampler on 64-d noise": {
        "sampler_target": "gmm",
        "sampler_particles": 1000,
        "sampler_leave_one_out": True,
        "sampler_net": "mlp",
    },
}


def train_sampler(
    model, base, train, options: dict, steps: int, lr: float, seed: int, probe=None, every=0
) -> float:
    """Re-initialise the sampler and train it for ``steps`` batches with the run's config
    ``base`` changed by ``options``; seconds (of training: ``probe(done)`` is called every
    ``every`` batches, outside the clock, to record the trajectory)."""
    # the first-round rows predate kde_metric and the 400-particle default: they ran with the
    # isotropic kernel and 100 particles, which a row's name says unless it sets them
    # (and the 1,000-code memory of the third round's defaults)
    defaults = {
        "sampler_leave_one_out": False,
        "kde_metric": "isotropic",
        "sampler_particles": 100,
        "kde_memory": 1000,
    }
    model.config = dataclasses.replace(base, **{**defaults, **options})
    torch.manual_seed(seed)
    c = model.config
    model.sampler_shape, model.sampler = build_sampler_net(c, model.spec)  # the variant's net
    for m in model.sampler.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
    model.sampler_updates.zero_()
    model.memory_count.zero_()
    # buffers sized or created by the config: rebuilt for the variant
    model.code_memory = torch.zeros(c.kde_memory, c.latent_dim)
    if c.sampler_target == "gmm":
        model.target_density = GaussianMixture(c.target_components, c.latent_dim)
        model.register_buffer("target_fitted_at", torch.tensor(-1, dtype=torch.long))
    opt = torch.optim.Adam(model.sampler.parameters(), lr=lr * c.sampler_lr_scale)
    model.train()
    model.encoder.eval()
    t0 = time.perf_counter()
    done, epoch = 0, 0
    while done < steps:
        torch.manual_seed(epoch_seed(seed, epoch))
        for batch in train.batches(100, shuffle=True, seed=seed, epoch=epoch):
            with torch.no_grad():
                model._remember(model.encode(batch.x, 1)[:, 0])
            for _ in range(model.config.sampler_steps):
                out = model("sampler", batch)
                opt.zero_grad(set_to_none=True)
                out.loss.backward()
                opt.step()
            done += 1
            if probe is not None and every and done % every == 0 and done < steps:
                t_probe = time.perf_counter()
                model.eval()
                probe(done)
                model.train()
                model.encoder.eval()
                t0 += time.perf_counter() - t_probe
            if done >= steps:
                break
        epoch += 1
    model.eval()
    return time.perf_counter() - t0


def distance(model, test, sampler: str, n: int, seed: int) -> dict[str, float]:
    codes = collect_codes(model, test, n, seed, sampler=sampler)
    mmd2, p = mmd_test(codes.encoder, codes.generation, 200, seed)
    spread = codes.generation.std(0).mean() / codes.encoder.std(0).mean()
    # k-NN precision (generated codes inside the encoder codes' manifold) and recall (the
    # reverse), k = 5: MMD² and a linear C2ST hardly see mass *between* the code clusters
    precision, recall = precision_recall(codes.encoder, codes.generation, k=5)
    return {
        "mmd2": mmd2,
        "mmd_p": p,
        "c2st": classifier_accuracy(codes.encoder, codes.generation, seed),
        "std_ratio": float(spread),  # generation / encoder, per-dimension std averaged
        "precision": precision,
        "recall": recall,
    }


def kde_sample_distances(model, train, test, n: int, seed: int) -> dict[str, dict[str, float]]:
    """The same distances for samples of the KDE targets themselves (one code per image of the
    first ``kde_memory`` training images, Scott's bandwidth × a factor): what a sampler that
    matched its target exactly would score."""
    from latentgap.models.ldc_vae import scott_bandwidth2, whiten, whitening

    g = torch.Generator().manual_seed(seed)
    model.eval()
    with torch.no_grad():
        mem = torch.cat(
            [
                model.latent_codes(b, generator=g)
                for b in train.subset(model.config.kde_memory).batches(500)
            ]
        )
        enc = torch.cat([model.latent_codes(b, generator=g) for b in test.subset(n).batches(500)])
    mean, chol = whitening(mem)
    out = {}
    for metric, factors in (("isotropic", (1.0,)), ("whitened", (1.0, 0.7, 0.5, 0.3))):
        for f in factors:
            pick = mem[torch.randint(len(mem), (n,), generator=g)]
            noise = torch.randn(n, mem.shape[1], generator=g)
            if metric == "whitened":
                h = f * scott_bandwidth2(whiten(mem, mean, chol)).sqrt()
                s = pick + h * noise @ chol.T
            else:
                s = pick + f * scott_bandwidth2(mem).sqrt() * noise
            mmd2, p = mmd_test(enc, s, 200, seed)
            precision, recall = precision_recall(enc, s, k=5)
            out[f"kde samples, {metric}, {f:g} x Scott"] = {
                "mmd2": mmd2,
                "mmd_p": p,
                "std_ratio": float(s.std(0).mean() / enc.std(0).mean()),
                "precision": precision,
                "recall": recall,
            }
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--steps", type=int, default=1200, help="sampler batches per variant")
    p.add_argument("--n", type=int, default=2000, help="codes per two-sample test")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", action="append", help="variant names to run (default: all)")
    p.add_argument("--out", type=Path)
    p.add_argument(
        "--eval-every", type=int, default=0, help="also record the distances every N batches"
    )
    p.add_argument(
        "--kde-samples", action="store_true", help="also score samples of the KDE targets"
    )
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    model, config, splits = load_run(args.run_dir)
    for param in [*model.encoder.parameters(), *model.decoder.parameters()]:
        param.requires_grad_(False)
    model.fit_reference_density(splits.train)
    base = model.config
    results = {
        "command": shlex.join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
        "run": str(args.run_dir),
        "steps": args.steps,
        "machine": machine_info(),
        "encoder-gmm": distance(model, splits.test, "encoder-gmm", args.n, args.seed),
        "variants": {},
    }
    print(json.dumps({"encoder-gmm": results["encoder-gmm"]}), flush=True)
    if args.kde_samples:
        results["kde-samples"] = kde_sample_distances(
            model, splits.train, splits.test, args.n, args.seed
        )
        print(json.dumps({"kde-samples": results["kde-samples"]}), flush=True)
    for name, options in VARIANTS.items():
        if args.only and name not in args.only:
            continue
        trajectory: dict[int, dict[str, float]] = {}

        def probe(done: int, name: str = name, trajectory: dict = trajectory) -> None:
            trajectory[done] = distance(model, splits.test, "sampler-net", args.n, args.seed)
            print(json.dumps({name: {done: trajectory[done]}}), flush=True)

        seconds = train_sampler(
            model,
            base,
            splits.train,
            options,
            args.steps,
            config.train.lr,
            args.seed,
            probe,
            args.eval_every,
        )
        row = {"options": options, "seconds": seconds}
        if trajectory:
            row["trajectory"] = trajectory
        row.update(distance(model, splits.test, "sampler-net", args.n, args.seed))
        results["variants"][name] = row
        print(json.dumps({name: row}), flush=True)
        if args.out:
            args.out.write_text(json.dumps(results, indent=2) + "\n")
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
