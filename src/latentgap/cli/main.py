"""The ``latentgap`` command: parser, dispatch and the error contract.

Bad input (unknown names, non-positive sizes or rates, a checkpoint that does not match, an
existing run directory without ``--resume``/``--force``) prints one line on stderr and exits with
code 2. A diverged training run exits with code 1 and keeps its last good checkpoint.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from latentgap.errors import LatentgapError, TrainingDiverged


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (what is wrong, where to look) and exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message} (see '{self.prog} --help')\n")
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    from latentgap import __version__
    from latentgap.cli import (
        data_cmd,
        evaluate_cmd,
        export_cmd,
        fid_cmd,
        list_cmd,
        plot_cmd,
        quickstart_cmd,
        report_cmd,
        reproduce_cmd,
        sample_cmd,
        train_cmd,
    )

    parser = OneLineParser(
        prog="latentgap",
        description="VAEs with learnable priors and latent-consistency training (VAEPP, LDC-VAE).",
    )
    parser.add_argument("--version", action="version", version=f"latentgap {__version__}")
    parser.add_argument(
        "--import",
        dest="global_imports",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE before the command runs (own nets, models or datasets)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    for module in (
        train_cmd,
        evaluate_cmd,
        sample_cmd,
        export_cmd,
        fid_cmd,
        data_cmd,
        list_cmd,
        quickstart_cmd,
        reproduce_cmd,
        report_cmd,
        plot_cmd,
    ):
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # usage errors (2), --help and --version (0)
        return int(exit_.code or 0)
    if args.command is None:
        parser.print_help()
        return 2
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        from latentgap.plugins import import_modules

        import_modules(args.global_imports)
        return int(args.func(args) or 0)
    except TrainingDiverged as err:
        sys.stderr.write(f"latentgap: {err}\n")
        return 1
    except LatentgapError as err:
        sys.stderr.write(f"latentgap: error: {err}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write(
            "latentgap: interrupted; rerun with --resume (train) or the same command (reproduce)\n"
        )
        return 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
