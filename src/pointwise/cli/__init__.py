"""The ``pointwise`` program: argparse subcommands over the library, and nothing more.

One module per subcommand group, each with ``add_parsers(sub)`` (registers its parsers,
importing nothing heavy so that ``--help`` stays fast) and the runners they point to:
:mod:`~pointwise.cli.explain`, :mod:`~pointwise.cli.analyze` (``models``, ``analyze``),
:mod:`~pointwise.cli.cost`, :mod:`~pointwise.cli.train` (``train``, ``export``,
``predict``) and :mod:`~pointwise.cli.bench`; :mod:`~pointwise.cli.args` turns arguments
into values. Errors from the library (bad files, shapes, dtypes) become one line on stderr
and exit status 2, never a traceback.

>>> main(["--version"])  # doctest: +ELLIPSIS
pointwise ...
0
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from pointwise import __version__
from pointwise.cli import analyze, bench, cost, explain, train

__all__ = ["build_parser", "main", "main_entry"]

USAGE_ERROR = 2  # as argparse uses for a bad command line

Runner = Callable[[argparse.Namespace], int]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the program on ``argv`` (default: ``sys.argv[1:]``) and return its exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, or a usage error argparse already printed
        return e.code if isinstance(e.code, int) else USAGE_ERROR
    run: Runner | None = getattr(args, "run", None)
    if run is None:
        parser.print_help(sys.stderr)
        return USAGE_ERROR
    try:
        return run(args)
    except BrokenPipeError:  # `pointwise explain | head`: the reader left; stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except (ValueError, TypeError, OSError, ImportError) as e:  # json errors are ValueErrors
        message = " ".join(str(e).split()) or type(e).__name__
        print(f"pointwise: error: {message}", file=sys.stderr)
        return USAGE_ERROR


def main_entry() -> None:
    """The console script ``pointwise``."""
    sys.exit(main())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pointwise",
        description="The 1×1 (pointwise) convolution, and tools to see into it.",
    )
    parser.add_argument("--version", action="version", version=f"pointwise {__version__}")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    explain.add_parsers(sub)
    analyze.add_parsers(sub)
    cost.add_parsers(sub)
    train.add_parsers(sub)
    bench.add_parsers(sub)
    return parser
