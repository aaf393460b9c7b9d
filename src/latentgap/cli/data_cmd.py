"""``latentgap data list | verify NAME | fetch NAME``."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser("data", help="list, verify or fetch datasets")
    dsub = p.add_subparsers(
        dest="data_command", metavar="ACTION", required=True, parser_class=type(p)
    )
    lp = dsub.add_parser("list", help="registered datasets and where their files are")
    lp.add_argument("--data-dir")
    lp.set_defaults(func=run_list)
    vp = dsub.add_parser("verify", help="check a dataset's files (md5 of the decoded content)")
    vp.add_argument("name")
    vp.add_argument("--data-dir")
    vp.set_defaults(func=run_verify)
    fp = dsub.add_parser("fetch", help="download a dataset from its canonical sources")
    fp.add_argument("name")
    fp.add_argument("--data-dir")
    fp.set_defaults(func=run_fetch)


def run_list(args: argparse.Namespace) -> int:
    from latentgap.data import DATASETS
    from latentgap.data.root import missing_files, resolve_dataset_dir

    width = max(len(n) for n in DATASETS.names())
    for name, info in DATASETS.items():
        if not info.files:
            status = "built in"
        else:
            folder = resolve_dataset_dir(info, args.data_dir)
            status = f"missing ({folder})" if missing_files(info, folder) else f"present ({folder})"
        print(f"{name:<{width}}  {status:<60}  {info.description}")
    return 0


def run_verify(args: argparse.Namespace) -> int:
    from latentgap.data import DATASETS, verify_dataset

    DATASETS.get(args.name)
    checks = verify_dataset(args.name, args.data_dir)
    if not checks:
        print(f"{args.name}: generated in memory, no files needed")
        return 0
    for check in checks:
        print(f"{'ok  ' if check.ok else 'FAIL'}  {check.file}  {check.message}")
    bad = [c for c in checks if not c.ok]
    if bad:
        print(
            f"{len(bad)} of {len(checks)} files failed; fix with: "
            f"latentgap data fetch {args.name}"
            + (f" --data-dir {args.data_dir}" if args.data_dir else "")
        )
        return 1
    print(f"{args.name}: all {len(checks)} files verified")
    return 0


def run_fetch(args: argparse.Namespace) -> int:
    from latentgap.data import DATASETS, fetch_dataset

    DATASETS.get(args.name)
    folder = fetch_dataset(args.name, args.data_dir)
    print(f"{args.name}: files in {folder}")
    return 0
