"""``latentgap export DIR``: trained weights as safetensors plus config.json."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from latentgap.train.rundir import check_export_dir, nonempty_path


def add_parser(sub) -> None:
    p = sub.add_parser("export", help="export trained weights as safetensors + config.json")
    p.add_argument("run_dir", type=Path, metavar="DIR")
    p.add_argument("--out", type=nonempty_path, help="output folder (default DIR/export)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from latentgap.train.checkpoint import export_safetensors
    from latentgap.train.run import load_run

    model, config, _ = load_run(args.run_dir, "cpu", load_data=False)
    out = args.out or args.run_dir / "export"
    check_export_dir(out, args.run_dir)  # never over another run's config.json
    weights = export_safetensors(model, config.to_dict(), out)
    print(json.dumps({"weights": str(weights), "config": str(out / "config.json")}))
    return 0
