"""``latentgap report DIR``: a self-contained HTML page of a run or of a reproduced table."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from latentgap.train.rundir import nonempty_path


def add_parser(sub) -> None:
    p = sub.add_parser(
        "report",
        help="write an HTML report of a run, a comparison of runs or a reproduced table",
        description="Write DIR/report/index.html (figures embedded, PNGs beside it) for a run "
        "directory (config.json) or a 'latentgap reproduce' folder (results.json); with "
        "several run directories, a side-by-side comparison (default ./report/index.html).",
    )
    p.add_argument("directory", type=Path, nargs="+", metavar="DIR")
    p.add_argument(
        "--out",
        type=nonempty_path,
        metavar="PATH",
        help="HTML file or folder (default DIR/report/)",
    )
    p.add_argument(
        "--samples",
        action="store_true",
        help="also draw a fresh sample grid for every sampler of each model",
    )
    p.add_argument(
        "--data-dir", help="dataset root for reconstructions (else $LATENTGAP_DATA, ...)"
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from latentgap.report import build_report
    from latentgap.train.run import check_device

    check_device(args.device)
    path = build_report(
        args.directory if len(args.directory) > 1 else args.directory[0],
        args.out,
        samples=args.samples,
        data_dir=args.data_dir,
        device=args.device,
    )
    print(json.dumps({"report": str(path)}))
    return 0
