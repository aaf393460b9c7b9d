"""``latentgap sample DIR``: a PNG grid of samples from a trained run."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch

from latentgap.cli.train_cmd import positive_int, seed_int
from latentgap.errors import ConfigError
from latentgap.train.rundir import check_output_file, nonempty_path


def add_parser(sub) -> None:
    p = sub.add_parser("sample", help="write a grid of samples from a trained run")
    p.add_argument("run_dir", type=Path, metavar="DIR")
    p.add_argument("--num", type=positive_int, default=64, help="number of samples (default 64)")
    p.add_argument("--out", type=nonempty_path, help="PNG file (default DIR/samples-<sampler>.png)")
    p.add_argument("--sampler", help="sampling method; the model's default if omitted")
    p.add_argument("--nrow", type=positive_int, help="images per row")
    p.add_argument("--seed", type=seed_int, default=0)
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from latentgap.train.images import save_image_grid
    from latentgap.train.run import load_run

    if args.nrow is not None and args.nrow > args.num:
        raise ConfigError(f"--nrow {args.nrow} is more than --num {args.num} images; lower it")
    if args.out is not None:
        if args.out.suffix.lower() != ".png":
            raise ConfigError(f"--out must be a .png file, got {args.out}")
        check_output_file(args.out)
    model, config, _ = load_run(args.run_dir, args.device, load_data=False)
    check_memory(args.num, model.spec.shape)
    samplers = model.samplers()
    sampler = args.sampler or samplers[0]
    if sampler not in samplers:
        raise ConfigError(
            f"model {config.model!r} has no sampler {sampler!r}; choose one of: {', '.join(samplers)}"
        )
    out = args.out or args.run_dir / f"samples-{sampler}.png"
    check_output_file(out)
    g = torch.Generator(device=args.device).manual_seed(args.seed)
    images = model.sample(args.num, generator=g, sampler=sampler)
    save_image_grid(images, out, nrow=args.nrow)
    print(json.dumps({"out": str(out), "num": args.num, "sampler": sampler}))
    return 0


BYTES_PER_VALUE = 4 * 4  # float32 samples, decoder outputs, clamped copy and uint8 grid, roughly


def available_memory() -> int | None:
    """Bytes of memory available to new allocations (Linux ``MemAvailable``), or None."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_memory(num: int, shape: tuple[int, ...]) -> None:
    """ConfigError if ``num`` samples of ``shape`` would not fit in the memory available."""
    need = num * math.prod(shape) * BYTES_PER_VALUE
    have = available_memory()
    if have is not None and need > have:
        raise ConfigError(
            f"--num {num} samples of {'x'.join(map(str, shape))} would need about "
            f"{need / 2**30:.1f} GiB of memory, {have / 2**30:.1f} GiB are available; "
            "lower --num"
        )
