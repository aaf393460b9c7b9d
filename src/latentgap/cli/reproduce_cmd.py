"""``latentgap reproduce TABLE``: train and evaluate the cells of a paper table, resumably.

Writes ``DIR/results.json`` (after every cell) and ``DIR/results.md`` (ours beside the paper's
numbers), plus one run directory per trained model. Run it again to continue where it stopped.
"""

from __future__ import annotations

import argparse
import json

from latentgap.errors import ConfigError
from latentgap.train.rundir import nonempty_path


def add_parser(sub) -> None:
    p = sub.add_parser(
        "reproduce",
        help="reproduce a table of the VAEPP or LDC-VAE paper (see --list)",
        description="Train and evaluate every cell of a paper table into DIR; rerun to resume. "
        "Cells whose dataset or model is missing here are reported as skipped.",
    )
    p.add_argument("table", nargs="?", metavar="TABLE", help="table name (see --list)")
    p.add_argument("--list", action="store_true", help="list the tables and budgets, then exit")
    p.add_argument(
        "--out", type=nonempty_path, metavar="DIR", help="output folder (results + runs)"
    )
    p.add_argument(
        "--budget",
        choices=("smoke", "cpu", "cpu-long", "full"),
        default="cpu",
        help="full: the paper presets (GPU); cpu: *-small presets, ~1 h per table's MNIST + "
        "Fashion part on 2 cores (default); cpu-long: MLP nets trained until the test loss "
        "stops improving (MNIST-family cells; hours, resumable cell by cell); smoke: a tiny "
        "wiring check",
    )
    p.add_argument(
        "--only",
        action="append",
        metavar="ROW",
        help="only this row (key or label; repeatable)",
    )
    p.add_argument(
        "--column",
        action="append",
        metavar="COL",
        help="only this column (key, label or dataset, e.g. mnist; repeatable)",
    )
    p.add_argument(
        "--data-dir", help="dataset root (else $LATENTGAP_DATA, else ~/.cache/latentgap)"
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument(
        "--fid-extractor",
        metavar="NAME",
        help="FID features: inception or pixels (default: the budget's)",
    )
    p.add_argument("--inception", metavar="PATH", help="Inception weights file for FID")
    p.add_argument(
        "--force", action="store_true", help="retrain and re-evaluate the selected cells"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def list_tables() -> str:
    """The tables (name, cells, title) and budgets, one per line."""
    from latentgap.reproduce import BUDGETS, TABLES

    lines = ["tables:"]
    width = max(len(n) for n in TABLES.names())
    for name, table in TABLES.items():
        runs = len({c.run.key for c in table.cells})
        lines.append(
            f"  {name:<{width}}  {len(table.cells):>2} cells, {runs:>2} runs  {table.title}"
        )
    lines.append("budgets:")
    lines += [f"  {name:<{width}}  {b.description}" for name, b in BUDGETS.items()]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if args.list:
        print(list_tables())
        return 0
    from latentgap.reproduce import TABLES, reproduce

    if args.table is None:
        raise ConfigError("name a table to reproduce, or pass --list to see them")
    TABLES.get(args.table)  # unknown name: one line listing the valid ones
    if args.out is None:
        raise ConfigError("--out DIR is required: the folder for results and runs")
    from latentgap.train.run import check_device
    from latentgap.train.rundir import check_output_dir

    check_output_dir(args.out)
    check_device(args.device)
    from latentgap.distributed import init_distributed, process_group_scope

    with process_group_scope():
        results = reproduce(
            args.table,
            args.out,
            budget=args.budget,
            rows=args.only,
            columns=args.column,
            data_dir=args.data_dir,
            device=args.device,
            force=args.force,
            progress=not args.no_progress,
            inception_path=args.inception,
            fid_extractor=args.fid_extractor,
        )
        is_main = init_distributed(args.device).is_main  # the group reproduce() joined
    if not is_main:
        return 0
    counts: dict[str, int] = {}
    for cell in results["cells"].values():
        counts[cell["status"]] = counts.get(cell["status"], 0) + 1
    summary = {"out": str(args.out), "results": str(args.out / "results.md"), **counts}
    print(json.dumps(summary))
    return 0
