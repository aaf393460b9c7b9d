"""Can an SVGD-trained sampler net reach a fixed Gaussian mixture, and what limits it (issue 12)?

LDC-VAE's default sampler target is a 10-component GMM of the encoder's codes. This bench takes
the autoencoder out entirely: it fits that GMM once (EM, the model's own ``GaussianMixture``) to
one encoder code per image of the first 5,000 training images of a trained LDC-VAE run, then
trains a fresh sampler net z = S(ε) by amortised SVGD towards that *fixed* mixture with the
model's pieces (``mixture_score`` with Sinkhorn-balanced responsibilities, the model's kernel,
the leave-one-out estimator, ``svgd_surrogate_loss``), and measures the sampler's codes against
fresh samples of the mixture itself: MMD² (Gaussian kernel, median bandwidth), the per-dimension
std ratio, and k-NN precision / recall (k = 5). Two independent samples of the mixture give the
floor of each number.

    python bench/ldc_sampler_svgd_gmm.py RUN_DIR --steps 3000 --lr 3e-3 --metric isotropic --out bench/results/x.json

The sampler is an MLP on a 64-d Gaussian noise vector (two hidden layers of ``--hidden``),
``--categories`` > 0 appends a uniformly drawn one-hot category to the noise. ``--metric``
chooses the SVGD coordinates: the raw codes or the codes whitened by their covariance.
``--objective mmd`` trains the same net by minimising the unbiased MMD² (WAE-MMD's multi-scale
kernel, base bandwidth 2·D·s², s² the codes' mean variance per dimension) between its output and
as many fresh draws of the mixture per update: a sample-based objective instead of SVGD's score;
``--objective svgd+mmd`` adds ``--mmd-weight`` × that MMD² to the SVGD surrogate (their gradients
per particle are of one size on these codes, ~5e-6 each at the mixture).
``--objective mixture-mmd`` is the model's ``sampler_mixture``: the net's input also carries a
one-hot component k ~ w of the mixture, and the loss is Σ_k (n_k/M)·MMD²_k between the net's
outputs and draws of component k (IMQ kernels at base 2·tr(Σ_k)); a continuous net on Gaussian
noise must stretch between separated modes, one told the mode need not.
``--fid N`` also decodes N codes of the sampler and N draws of the mixture itself through the
run's decoder at the end and gives both sample FIDs (Inception, against the first
``--fid-reference`` training images): what the sampler costs in image space against the
mixture it is trained towards.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import torch
from torch import nn

from latentgap.metrics.consistency import mmd_test
from latentgap.metrics.fid import evaluate_fid
from latentgap.metrics.precision_recall import precision_recall
from latentgap.mmd import KERNELS as MMD_KERNELS
from latentgap.mmd import TOLSTIKHIN_SCALES, mmd_squared
from latentgap.models.ldc_vae import mixture_score, whiten, whitening
from latentgap.reproduce.harness import machine_info
from latentgap.samplers.gmm import GaussianMixture, component_draws
from latentgap.stein import build_kernel, svgd_direction, svgd_surrogate_loss
from latentgap.train.run import load_run


def target_codes(model, splits, n: int, seed: int) -> torch.Tensor:
    """One encoder code per image of the first ``n`` training images of the run (eval mode)."""
    model.eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        return torch.cat(
            [model.latent_codes(b, generator=g) for b in splits.train.subset(n).batches(500)]
        )


class Decoded:
    """Images D(z) of the run's decoder for codes z = ``draw(n, generator)``: what
    :func:`evaluate_fid` samples from."""

    def __init__(self, model, draw) -> None:
        self.model, self.draw = model, draw

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        with torch.no_grad():
            return self.model.decode(self.draw(n, generator).float()).clamp(0, 1)


def distances(reference: torch.Tensor, codes: torch.Tensor, seed: int) -> dict[str, float]:
    mmd2, _ = mmd_test(reference, codes, 50, seed)
    precision, recall = precision_recall(reference, codes, k=5)
    spread = codes.std(0).mean() / reference.std(0).mean()
    return {"mmd2": mmd2, "std_ratio": float(spread), "precision": precision, "recall": recall}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--steps", type=int, default=3000, help="sampler updates")
    p.add_argument("--particles", type=int, default=1000, help="sampler particles per update")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate of the sampler")
    p.add_argument(
        "--objective", choices=("svgd", "mmd", "svgd+mmd", "mixture-mmd"), default="svgd"
    )
    p.add_argument("--mmd-kernel", choices=tuple(MMD_KERNELS), default="imq")
    p.add_argument("--mmd-scales", type=float, nargs="+", default=list(TOLSTIKHIN_SCALES))
    p.add_argument("--mmd-weight", type=float, default=1.0, help="MMD² weight of svgd+mmd")
    p.add_argument("--metric", choices=("isotropic", "whitened"), default="isotropic")
    p.add_argument("--kernel", default="rbf-paper")
    p.add_argument("--kernel-options", type=json.loads, default={}, help='JSON, e.g. {"scale": 4}')
    p.add_argument("--balance", type=int, default=20, help="Sinkhorn steps (0: plain score)")
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--categories", type=int, default=0)
    p.add_argument("--components", type=int, default=10)
    p.add_argument("--codes", type=int, default=5000, help="training codes the GMM is fitted to")
    p.add_argument("--reports", type=int, default=3, help="evaluations along the way")
    p.add_argument("--n", type=int, default=2000, help="codes per comparison")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fid", type=int, default=0, help="decoded codes per sample FID (0: none)")
    p.add_argument("--fid-reference", type=int, default=2000, help="training images of the FID")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    if args.objective == "mixture-mmd" and args.categories:
        p.error("--categories and --objective mixture-mmd both set the net's one-hot input")
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)

    model, _, splits = load_run(args.run_dir)
    codes = target_codes(model, splits, args.codes, args.seed)
    dim = codes.shape[1]
    gmm = GaussianMixture(args.components, dim)
    gmm.fit(codes, seed=args.seed, reg_covar=1e-4 * float(codes.var(0).mean()))
    means, covs, weights = gmm.means, gmm.covariances, gmm.weights
    mean, chol = whitening(codes)
    g = torch.Generator().manual_seed(args.seed + 1)
    reference, second = gmm.sample(args.n, generator=g), gmm.sample(args.n, generator=g)

    noise_dim = 64
    width = args.hidden
    one_hot = args.components if args.objective == "mixture-mmd" else args.categories
    net = nn.Sequential(
        nn.Linear(noise_dim + one_hot, width),
        nn.ReLU(),
        nn.Linear(width, width),
        nn.ReLU(),
        nn.Linear(width, dim),
    )

    def noise(
        n: int, generator: torch.Generator | None = None, cat: torch.Tensor | None = None
    ) -> torch.Tensor:
        eps = torch.randn(n, noise_dim, generator=generator)
        if args.objective == "mixture-mmd":
            if cat is None:
                cat = torch.multinomial(weights.float(), n, True, generator=generator)
            eps = torch.cat([eps, nn.functional.one_hot(cat, args.components).float()], 1)
        elif args.categories:
            cat = torch.randint(args.categories, (n,), generator=generator)
            eps = torch.cat([eps, nn.functional.one_hot(cat, args.categories).float()], 1)
        return eps

    def mixture_mmd() -> torch.Tensor:
        k = torch.multinomial(weights.float(), args.particles, True, generator=draws)
        z = net(noise(args.particles, cat=k))
        target = component_draws(means, gmm.scale_tril, k, draws).float()
        loss = z.new_zeros(())
        for j in k.unique().tolist():
            mask = k == j
            if int(mask.sum()) >= 2:
                kernel = MMD_KERNELS[args.mmd_kernel](2.0 * float(covs[j].trace()), args.mmd_scales)
                loss = loss + mask.float().mean() * mmd_squared(z[mask], target[mask], kernel)
        return loss

    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    kernel = build_kernel(args.kernel, **args.kernel_options)
    mmd_kernel = MMD_KERNELS[args.mmd_kernel](
        2.0 * dim * float(codes.var(0).mean()), args.mmd_scales
    )
    draws = torch.Generator().manual_seed(args.seed + 3)
    results = {
        "command": shlex.join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
        "run": str(args.run_dir),
        "machine": machine_info(),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "mixture vs mixture (floor)": distances(reference, second, args.seed),
        "trajectory": {},
    }
    print(json.dumps(results["mixture vs mixture (floor)"]), flush=True)

    def svgd_loss(z: torch.Tensor) -> torch.Tensor:
        score = mixture_score(z.detach(), means, covs, weights, args.balance)
        if args.metric == "whitened":  # SVGD on u = L⁻¹(z − μ); z moves by L φ_u
            u = whiten(z.detach(), mean, chol)
            phi = svgd_direction(u[None], (score @ chol)[None], kernel, True)[0] @ chol.T
        else:
            phi = svgd_direction(z.detach()[None], score[None], kernel, True)[0]
        return svgd_surrogate_loss(z, phi)

    every = max(1, args.steps // args.reports)
    seconds = 0.0
    for step in range(1, args.steps + 1):
        t0 = time.perf_counter()
        if args.objective == "mixture-mmd":
            loss = mixture_mmd()
        else:
            z = net(noise(args.particles))
            loss = svgd_loss(z) if args.objective != "mmd" else 0.0
        if args.objective in ("mmd", "svgd+mmd"):
            mmd2 = mmd_squared(z, gmm.sample(args.particles, generator=draws), mmd_kernel)
            loss = loss + (args.mmd_weight if args.objective == "svgd+mmd" else 1.0) * mmd2
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        seconds += time.perf_counter() - t0
        if step % every == 0 or step == args.steps:
            with torch.no_grad():
                sample = net(noise(args.n, torch.Generator().manual_seed(args.seed + 2)))
            row = {"seconds": seconds, **distances(reference, sample, args.seed)}
            results["trajectory"][step] = row
            print(json.dumps({step: row}), flush=True)
            if args.out:
                args.out.write_text(json.dumps(results, indent=2) + "\n")
    if args.fid:
        draws_of = {
            "sampler": lambda n, g: net(noise(n, g)),
            "mixture": lambda n, g: gmm.sample(n, generator=g),
        }
        results["fid"] = {"samples": args.fid, "reference": args.fid_reference}
        for name, draw in draws_of.items():
            results["fid"][name] = evaluate_fid(
                Decoded(model, draw),
                splits,
                n_samples=args.fid,
                reference_size=args.fid_reference,
                seed=args.seed,
                recon=False,
                precision_recall=False,
            )["fid_sample"]
            print(json.dumps({"fid " + name: results["fid"][name]}), flush=True)
        if args.out:
            args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
