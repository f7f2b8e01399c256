"""The ``bench`` subcommand: parser and runner, nothing more (the work is pointwise.bench).

``add_parsers(sub)`` registers ``bench`` on the program's subparsers; ``run_bench`` returns
an exit status: 0, 1 when any output failed its verification, 2 on a usage error. This
module is also its own program: ``python -m pointwise.cli.bench bench --suite ops --quick``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["add_parsers", "main", "run_bench"]


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register ``bench`` on ``sub`` (imports nothing heavy, so ``--help`` stays fast)."""
    from pointwise.bench.suites import SUITES
    p = sub.add_parser(
        "bench", help="time the 1×1 conv against its peers, verified, on this machine",
        description="Measure the machine's roofs, then time pointwise and every importable "
        "peer (torch, numpy, onnxruntime, JAX, TensorFlow) on the ops or models suite. "
        "Every output is verified against a float64 reference before it is timed.")
    p.add_argument("--suite", choices=tuple(SUITES), default="ops",
                   help="ops: the 1x1 shapes (forward, fused, backward); models: ResNet-50, "
                   "MobileNetV2, GoogLeNet at batch 8, 224x224 (default ops)")
    p.add_argument("--quick", action="store_true",
                   help="a smoke run in seconds: 3 shapes (models: MobileNetV2 at 96x96), "
                   "2 rounds, small roofs")
    p.add_argument("--threads", type=int, default=2, metavar="T",
                   help="threads for every library, pinned and recorded (default 2)")
    p.add_argument("--repeats", type=int, metavar="R",
                   help="interleaved rounds (default: ops 15, models 5, quick 2)")
    p.add_argument("--shapes", metavar="S[,S...]",
                   help="ops: run the shapes whose name contains one of these substrings")
    p.add_argument("--models", metavar="M[,M...]",
                   help="models: zoo names (default resnet50,mobilenet_v2,googlenet)")
    p.add_argument("--json", metavar="PATH",
                   help="write the results; a folder gets a file named after the environment")
    p.add_argument("--png", metavar="PATH", help="write the roofline and ratio charts")
    p.set_defaults(run=run_bench)


def run_bench(args: argparse.Namespace) -> int:
    from pointwise.bench import report, run

    if args.threads < 1 or (args.repeats is not None and args.repeats < 1):
        print("error: expected --threads and --repeats >= 1", file=sys.stderr)
        return 2
    models = tuple(m.strip() for m in args.models.split(",")) if args.models else None
    try:
        doc = run(args.suite, quick=args.quick, threads=args.threads, repeats=args.repeats,
                  shapes=args.shapes, models=models)
    except (ValueError, RuntimeError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(doc.pop("text"))
    if args.json:
        print(f"\nwrote {report.write_json(args.json, doc)}")
    if args.png:
        try:
            print(f"wrote {report.write_png(args.png, doc)}")
        except ImportError:
            print("warning: --png needs matplotlib, which does not import", file=sys.stderr)
    if doc["failed"]:
        print("FAILED verification: " + "; ".join(doc["failed"]), file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pointwise")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    add_parsers(sub)
    args = parser.parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
