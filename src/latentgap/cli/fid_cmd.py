"""``latentgap fid A B``: FID and precision/recall between two image sets.

A and B are each an image folder, a ``.npy``/``.npz`` file, a run or export (its samples) or a
dataset name (``mnist``, ``mnist:test``); see :mod:`latentgap.metrics.image_sets`. Prints one
JSON line; before extracting features it says how many images go through the network and, after
the first batch, how long the rest will take.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from latentgap.cli.train_cmd import positive_int


def add_parser(sub) -> None:
    from latentgap.metrics.inception import EXTRACTORS, INCEPTION_ENV

    p = sub.add_parser(
        "fid",
        help="FID and precision/recall between two image sets (folders, arrays, runs, datasets)",
        description="FID, precision and recall between A and B: image folders, .npy/.npz "
        "files, runs or exports (their samples) or dataset names (mnist, mnist:test). "
        "Statistics of fixed sets are cached by the hash of their pixels.",
    )
    p.add_argument("a", metavar="A")
    p.add_argument("b", metavar="B")
    p.add_argument(
        "--num",
        type=positive_int,
        default=5000,
        metavar="N",
        help="samples drawn from a run or export (default 5000)",
    )
    p.add_argument("--sampler", help="sampling method of a run; its default if omitted")
    p.add_argument(
        "--limit", type=positive_int, metavar="M", help="only the first M images of a fixed set"
    )
    p.add_argument(
        "--size",
        type=positive_int,
        metavar="S",
        help="resize folder images to S×S (needed when their sizes differ)",
    )
    p.add_argument("--k", type=positive_int, default=3, help="neighbours for precision/recall")
    p.add_argument("--no-pr", action="store_true", help="FID only, no precision/recall")
    p.add_argument(
        "--extractor",
        choices=sorted(EXTRACTORS),
        default="inception",
        help="feature network (default inception; 'pixels' is a cheap stand-in for tests whose "
        "numbers are not comparable to published FIDs)",
    )
    p.add_argument(
        "--inception",
        type=Path,
        metavar="PATH",
        help=f"Inception weights (default ${INCEPTION_ENV}, else "
        "~/.cache/latentgap/inception-v3-fid-2015-12-05.pt)",
    )
    p.add_argument("--batch-size", type=positive_int, default=100, metavar="B")
    p.add_argument("--cache-dir", type=Path, metavar="DIR", help="where statistics are cached")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--data-dir", help="dataset root for dataset names")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from latentgap.metrics.image_sets import fid_between, resolve_source
    from latentgap.metrics.inception import make_extractor, resolve_inception_path
    from latentgap.train.run import check_device

    check_device(args.device)
    if args.extractor == "inception":
        resolve_inception_path(args.inception)  # fail before reading any images
    options = {
        "num": args.num,
        "sampler": args.sampler,
        "limit": args.limit,
        "size": args.size,
        "data_dir": args.data_dir,
        "device": args.device,
    }
    a = resolve_source(args.a, **options)
    b = resolve_source(args.b, **options)
    extractor = make_extractor(args.extractor, args.inception, args.device)
    results = fid_between(
        a,
        b,
        extractor,
        batch_size=args.batch_size,
        device=args.device,
        seed=args.seed,
        k=args.k,
        precision_recall=not args.no_pr,
        progress=not args.no_progress,
        cache_dir=args.cache_dir,
    )
    print(json.dumps(results))
    return 0
