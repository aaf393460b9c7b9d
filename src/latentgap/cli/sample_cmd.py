"""``latentgap sample DIR``: a PNG grid of samples from a trained run."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from latentgap.cli.train_cmd import positive_int
from latentgap.errors import ConfigError


def add_parser(sub) -> None:
    p = sub.add_parser("sample", help="write a grid of samples from a trained run")
    p.add_argument("run_dir", type=Path, metavar="DIR")
    p.add_argument("--num", type=positive_int, default=64, help="number of samples (default 64)")
    p.add_argument("--out", type=Path, help="PNG file (default DIR/samples-<sampler>.png)")
    p.add_argument("--sampler", help="sampling method; the model's default if omitted")
    p.add_argument("--nrow", type=positive_int, help="images per row")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from latentgap.train.images import save_image_grid
    from latentgap.train.run import load_run

    model, config, _ = load_run(args.run_dir, args.device, load_data=False)
    samplers = model.samplers()
    sampler = args.sampler or samplers[0]
    if sampler not in samplers:
        raise ConfigError(
            f"model {config.model!r} has no sampler {sampler!r}; choose one of: {', '.join(samplers)}"
        )
    if args.out is not None and args.out.suffix.lower() != ".png":
        raise ConfigError(f"--out must be a .png file, got {args.out}")
    out = args.out or args.run_dir / f"samples-{sampler}.png"
    g = torch.Generator(device=args.device).manual_seed(args.seed)
    images = model.sample(args.num, generator=g, sampler=sampler)
    save_image_grid(images, out, nrow=args.nrow)
    print(json.dumps({"out": str(out), "num": args.num, "sampler": sampler}))
    return 0
