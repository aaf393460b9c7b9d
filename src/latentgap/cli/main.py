"""The ``latentgap`` command: parser, dispatch and the error contract.

Bad input (unknown names, non-positive sizes or rates, a checkpoint that does not match, an
existing run directory without ``--resume``/``--force``) and failed file operations (a full disk,
a read-only folder) print one line on stderr and exit with code 2. A diverged training run, or an
evaluation with non-finite results, exits with code 1 (training keeps its last good checkpoint).
SIGINT exits with 130 and SIGTERM, handled the same way, with 143.
"""

from __future__ import annotations

import argparse
import errno
import re
import signal
import sys
import threading
import warnings
from collections.abc import Sequence

from latentgap.errors import LatentgapError, NonFiniteResult, TrainingDiverged


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


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that writes in progress finish or are abandoned cleanly
    (atomic writes remove their temporary file) and the run can be resumed."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    text = " ".join(str(message).split())
    (file or sys.stderr).write(f"latentgap: warning: {text}\n")


def describe_os_error(err: OSError) -> str:
    """One line for a failed file operation: what, where, and what to do."""
    where = f" ({err.filename})" if err.filename else ""
    if err.errno == errno.ENOSPC:
        return f"disk full: no space left on device{where}; free some space or write elsewhere"
    if err.errno in (errno.EACCES, errno.EPERM):
        return f"permission denied{where}; choose a location you can write to"
    if err.errno == errno.EROFS:
        return f"read-only file system{where}; choose a location you can write to"
    return f"{err.strerror or type(err).__name__}{where}"


def is_out_of_memory(err: BaseException) -> bool:
    """MemoryError, torch's (CUDA) OutOfMemoryError, or the CPU allocator's RuntimeError."""
    text = str(err)
    return (
        isinstance(err, MemoryError)
        or type(err).__name__ == "OutOfMemoryError"
        or "can't allocate memory" in text
        or "out of memory" in text.lower()
    )


def describe_out_of_memory(err: BaseException) -> str:
    match = re.search(r"allocate (\d+) bytes", str(err))
    need = f" (one allocation of {int(match.group(1)) / 2**30:.1f} GiB)" if match else ""
    return (
        f"out of memory{need}; use smaller sizes (--batch-size, --latent-dim, layer widths, "
        "--num, --iw-samples)"
    )


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
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if in_main_thread else None
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warning
            from latentgap.plugins import import_modules

            import_modules(args.global_imports)
            return int(args.func(args) or 0)
    except (TrainingDiverged, NonFiniteResult) as err:
        sys.stderr.write(f"latentgap: {err}\n")
        return 1
    except LatentgapError as err:
        sys.stderr.write(f"latentgap: error: {err}\n")
        return 2
    except OSError as err:
        sys.stderr.write(f"latentgap: error: {describe_os_error(err)}\n")
        return 2
    except (MemoryError, RuntimeError) as err:
        if not is_out_of_memory(err):
            raise
        sys.stderr.write(f"latentgap: error: {describe_out_of_memory(err)}\n")
        return 2
    except Terminated:
        sys.stderr.write(
            "latentgap: terminated (SIGTERM); rerun with --resume (train) or the same command "
            "(reproduce)\n"
        )
        return 143
    except KeyboardInterrupt:
        sys.stderr.write(
            "latentgap: interrupted; rerun with --resume (train) or the same command (reproduce)\n"
        )
        return 130
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
