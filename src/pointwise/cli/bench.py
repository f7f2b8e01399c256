"""The ``bench`` subcommand: parser and runner, nothing more (the work is pointwise.bench).

``add_parsers(sub)`` registers ``bench`` on the program's subparsers; ``run_bench`` returns
an exit status: 0, 1 when any output failed its verification, 2 on a usage error. This
module is also its own program: ``python -m pointwise.cli.bench bench --suite ops --quick``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pointwise.cli.args import default_threads, output_path, positive, seconds
from pointwise.cli.errors import EXIT, CliError

__all__ = ["add_parsers", "main", "run_bench"]


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register ``bench`` on ``sub`` (imports nothing heavy, so ``--help`` stays fast)."""
    from pointwise.bench.suites import SUITES
    p = sub.add_parser(
        "bench", help="time the convs and whole models against their peers, verified",
        description="Measure the machine's roofs, then time pointwise and every importable "
        "peer (torch, numpy, onnxruntime, JAX, TensorFlow) on the ops or models suite. "
        "Every output is verified against a float64 reference before it is timed. "
        "Progress (one line per problem) goes to stderr.")
    p.add_argument("--suite", choices=tuple(SUITES), default="ops",
                   help="ops: the 1x1 shapes (forward, fused, backward); kxk: ResNet-50's 3x3 "
                   "layers and stem (bias + ReLU); blocks: MobileNetV2's 17 inverted "
                   "residuals, fused and unfused; models: ResNet-18/50/101, MobileNet v1/v2, "
                   "GoogLeNet at batch 8 and 1, 224x224, against onnxruntime; burst: per-round "
                   "speed of bursts after idle and of calls interleaved with NumPy and torch "
                   "(default ops)")
    p.add_argument("--quick", action="store_true",
                   help="a smoke run: 3 shapes (models: MobileNetV2 at 96x96), 2 rounds, "
                   "small roofs")
    p.add_argument("--threads", type=positive, default=default_threads(), metavar="T",
                   help="threads for every library, pinned and recorded (default: torch's, "
                   f"OMP_NUM_THREADS or every core: {default_threads()} here)")
    p.add_argument("--repeats", type=positive, metavar="R",
                   help="interleaved rounds (default: ops 15, models 5, burst 16, quick 2)")
    p.add_argument("--shapes", metavar="S[,S...]",
                   help="ops, kxk, blocks: run the shapes whose name contains one of these "
                   "substrings")
    p.add_argument("--modes", metavar="M[,M...]",
                   help="ops: run only these of forward (plain), fused (bias + ReLU) and "
                   "backward (default all three)")
    p.add_argument("--models", metavar="M[,M...]",
                   help="models: zoo names (default resnet18,resnet50,resnet101,mobilenet_v2,"
                   "googlenet)")
    p.add_argument("--after-idle", type=seconds, default=0.0, metavar="SECONDS",
                   help="ops, kxk, blocks, models: sleep this long before each library's turn, "
                   "so every library's threads have gone to sleep (0.3 is longer than any "
                   "pool spins), as in a script that pauses between libraries (default 0: "
                   "the previous library's call is followed at once)")
    p.add_argument("--json", metavar="PATH",
                   help="write the results as JSON; a folder gets a file named after the "
                   "environment ('-': print it instead of the table)")
    p.add_argument("--png", metavar="PATH", help="write the roofline and ratio charts")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.set_defaults(run=run_bench, extra="bench")


def run_bench(args: argparse.Namespace) -> int:
    from pointwise.bench import report, run
    from pointwise.files import strict_json

    json_path = output_path(args.json, "--json", folder=True)
    png_path = output_path(args.png, "--png", stdout=False, folder=True)
    models = tuple(m.strip() for m in args.models.split(",")) if args.models else None
    if models and args.suite == "models":  # before minutes of roofs and other models
        from pointwise.models import names

        unknown = [m for m in models if m not in names()]
        if unknown:
            raise CliError(f"expected --models among the zoo's names, but got {unknown}",
                           hint="`pointwise models` lists them")
    modes = _modes(args.modes, args.suite)
    try:
        if args.quiet:
            doc = run(args.suite, quick=args.quick, threads=args.threads,
                      repeats=args.repeats, shapes=args.shapes, models=models, modes=modes,
                      idle_s=args.after_idle, say=_silent)
        else:
            doc = run(args.suite, quick=args.quick, threads=args.threads,
                      repeats=args.repeats, shapes=args.shapes, models=models, modes=modes,
                      idle_s=args.after_idle)
    except KeyError as e:
        raise CliError(f"expected a known name, but got {e}") from None
    text = doc.pop("text")
    if json_path == "-":
        print(strict_json(doc, indent=1))
    else:
        print(text)
    if json_path not in (None, "-"):
        print(f"wrote {report.write_json(json_path, doc)}", file=sys.stderr)
    if png_path:
        try:
            print(f"wrote {report.write_png(png_path, doc)}", file=sys.stderr)
        except ImportError:
            print("warning: --png needs matplotlib (the 'plot' extra), which does not import",
                  file=sys.stderr)
    if doc["failed"]:
        print("error: failed verification: " + "; ".join(doc["failed"]), file=sys.stderr)
        return EXIT["failed"]
    return 0


def _modes(spec: str | None, suite: str) -> tuple[str, ...] | None:
    """The ops suite's mode names for ``--modes`` (None: all); a CliError for anything else."""
    if spec is None:
        return None
    from pointwise.bench.suites.ops import MODES

    if suite != "ops":
        raise CliError(f"expected --modes with --suite ops (the suite with forward, fused and "
                       f"backward rows), but got --suite {suite}", hint="drop --modes")
    names = [m.strip() for m in spec.split(",") if m.strip()]
    unknown = [m for m in names if m not in MODES]
    if not names or unknown:
        raise CliError(f"expected --modes among {', '.join(MODES)}, but got {spec!r}",
                       hint="for example --modes forward,fused")
    return tuple(MODES[m] for m in dict.fromkeys(names))


def _silent(_: str) -> None:
    pass


def main(argv: Sequence[str] | None = None) -> int:
    """This module as a program: the same as ``pointwise``'s."""
    from pointwise.cli import main as program

    return program(argv)


if __name__ == "__main__":
    sys.exit(main())
