"""The ``pointwise`` program: argparse subcommands over the library, and nothing more.

One module per subcommand group, each with ``add_parsers(sub)`` (registers its parsers,
importing nothing heavy so that ``--help`` stays fast) and the runners they point to:
:mod:`~pointwise.cli.explain`, :mod:`~pointwise.cli.analyze` (``models``, ``analyze``),
:mod:`~pointwise.cli.cost`, :mod:`~pointwise.cli.train` (``train``, ``export``,
``predict``), :mod:`~pointwise.cli.compress` and :mod:`~pointwise.cli.bench`.
:mod:`~pointwise.cli.args` turns arguments into values and holds the conventions every option
follows (stated in ``pointwise --help``); :mod:`~pointwise.cli.errors` turns every failure
into one ``error:`` line (and maybe a ``hint:`` line) on stderr with a documented exit
status, never a traceback.

A new subcommand: ``p = sub.add_parser(...)`` (a :class:`~pointwise.cli.errors.Parser`),
options named as :data:`CONVENTIONS` says, ``p.set_defaults(run=runner, extra="torch")``
(the pyproject extra it needs, named in the hint when an import fails).

>>> main(["--version"])  # doctest: +ELLIPSIS
pointwise ...
0
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pointwise import __version__
from pointwise.cli import analyze, bench, compress, cost, explain, train
from pointwise.cli.errors import EXIT, Parser, run_command

__all__ = ["CONVENTIONS", "build_parser", "main", "main_entry"]

CONVENTIONS = """\
conventions (every command):
  --input FILE        an input file; a tensor's size is --input-size
  --input-size SIZE   CxHxW or NxCxHxW, PyTorch's order, whatever --layout says
  --layout L          NHWC, HWC, NCHW or CHW (upper case, as in the library)
  --json PATH         write the result as strict JSON ('-': stdout, instead of the text),
                      creating its folder; likewise --csv PATH; --png PATH draws a picture
  --threads T         threads for torch, NumPy and pointwise (default: torch's, i.e.
                      OMP_NUM_THREADS when set, else every core this process may use)
  --quiet             no progress (a live bar on a terminal; one line per epoch or
                      problem when piped)
  options are never abbreviated (--group-dept is an error)

exit status: 0 done; 1 a check failed (bench's verification, export's comparison);
  2 usage: a bad option, or an input missing, of the wrong kind or malformed;
  3 this machine lacks what is needed (an extra, a device, memory); 4 a bug in
  pointwise (POINTWISE_TRACEBACK=1 shows it); 130 interrupted (Ctrl-C); 141 broken pipe.
  Errors are one 'error:' line on stderr, sometimes with a 'hint:' line.
"""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the program on ``argv`` (default: ``sys.argv[1:]``) and return its exit status."""
    parser = build_parser()
    args: argparse.Namespace | None = None

    def parse() -> int:
        nonlocal args
        try:
            args = parser.parse_args(argv)
        except SystemExit as e:  # --help or --version, printed by argparse
            return e.code if isinstance(e.code, int) else EXIT["usage"]
        return EXIT["ok"]

    status = run_command(parse)
    if args is None:
        return status
    if getattr(args, "run", None) is None:
        parser.print_help(sys.stderr)
        return EXIT["usage"]
    return run_command(lambda: args.run(args), extra=getattr(args, "extra", None))


def main_entry() -> None:
    """The console script ``pointwise``."""
    sys.exit(main())


def build_parser() -> Parser:
    parser = Parser(
        prog="pointwise",
        description="The 1×1 (pointwise) convolution, and tools to see into it.",
        epilog=CONVENTIONS, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"pointwise {__version__}")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    explain.add_parsers(sub)
    analyze.add_parsers(sub)
    cost.add_parsers(sub)
    train.add_parsers(sub)
    compress.add_parsers(sub)
    bench.add_parsers(sub)
    return parser
