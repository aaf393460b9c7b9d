"""``latentgap export DIR``: a loadable export (safetensors weights, config, data spec, model
card); see :mod:`latentgap.train.export`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from latentgap.train.rundir import check_export_dir, nonempty_path


def add_parser(sub) -> None:
    p = sub.add_parser(
        "export", help="export a run: safetensors weights, config, data spec, model card"
    )
    p.add_argument("run_dir", type=Path, metavar="DIR")
    p.add_argument("--out", type=nonempty_path, help="output folder (default DIR/export)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from latentgap.train.export import export_run

    out = args.out or args.run_dir / "export"
    check_export_dir(out, args.run_dir)  # never over another run's config.json
    print(json.dumps(export_run(args.run_dir, out)))
    return 0
