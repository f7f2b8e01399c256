"""The ``train``, ``export`` and ``predict`` subcommands: parsers and runners, nothing more.

``add_parsers(sub)`` registers the three on the program's subparsers; each runner returns
an exit status. Until ``pointwise.cli`` calls ``add_parsers``, this module is its own
program: ``python -m pointwise.cli.train train nin_digits --data digits``, and under
torchrun ``torchrun --nproc_per_node=2 -m pointwise.cli.train train ... --distributed``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["add_parsers", "main", "run_export", "run_predict", "run_train"]

USAGE_ERROR = 2


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register ``train``, ``export`` and ``predict`` on ``sub``."""
    from pointwise.training.config import DEFAULT_LR, TrainConfig  # no torch: keeps --help fast

    d = TrainConfig()
    p = sub.add_parser(
        "train", help="train a zoo model on digits or an .npz, with checkpoints",
        description="Train MODEL, writing OUT/checkpoint.pt atomically after every epoch. "
        "With --resume, options left out are taken from the checkpoint.")
    p.add_argument("model", metavar="MODEL",
                   help="a zoo name (e.g. nin_digits) or package.module:factory")
    # None = "not given", so --resume can tell the checkpoint's settings from new ones
    p.add_argument("--data", metavar="digits|PATH.npz", help=f"default {d.data}")
    p.add_argument("--epochs", type=int, metavar="E", help=f"default {d.epochs}")
    p.add_argument("--batch-size", type=int, metavar="B",
                   help=f"global batch (split over DDP ranks); default {d.batch_size}")
    p.add_argument("--lr", type=float, metavar="LR",
                   help="peak of the one-cycle schedule; default "
                   + ", ".join(f"{v:g} ({k})" for k, v in DEFAULT_LR.items()))
    p.add_argument("--optimizer", choices=sorted(DEFAULT_LR), help=f"default {d.optimizer}")
    p.add_argument("--weight-decay", type=float, metavar="WD",
                   help=f"default {d.weight_decay:g}")
    p.add_argument("--seed", type=int, metavar="S", help=f"default {d.seed}")
    p.add_argument("--limit-batches", type=int, metavar="K",
                   help="at most K steps per epoch (smoke tests)")
    p.add_argument("--out", metavar="DIR", help="folder for checkpoint.pt (default: none)")
    p.add_argument("--resume", action="store_true",
                   help="continue from OUT/checkpoint.pt (start afresh if there is none yet)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--threads", type=int, metavar="T", default=1,
                   help="torch intra-op threads (default 1, fastest for these small models "
                   "and immune to a busy machine); results are bitwise reproducible for a "
                   "fixed T")
    p.add_argument("--distributed", action="store_true",
                   help="DistributedDataParallel under torchrun (gloo on CPU)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=run_train)

    p = sub.add_parser(
        "export", help="export a checkpoint to ONNX and check it in onnxruntime",
        description="Export CHECKPOINT to ONNX with a dynamic batch axis, then require "
        "onnxruntime's logits within 1e-4 of torch's, with the same argmax, on random and "
        "real inputs.")
    p.add_argument("checkpoint", metavar="CHECKPOINT")
    p.add_argument("--onnx", required=True, metavar="PATH", help="the .onnx file to write")
    p.add_argument("--optimize", action="store_true",
                   help="pointwise.nn.convert first: fold BatchNorm, fuse activations")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    p.set_defaults(run=run_export)

    p = sub.add_parser(
        "predict", help="accuracy of a checkpoint or .onnx on a test set",
        description="Score a checkpoint or exported .onnx on the test split it was trained "
        "with (or on --data).")
    p.add_argument("source", metavar="CHECKPOINT|MODEL.onnx")
    p.add_argument("--data", metavar="digits|PATH.npz",
                   help="default: the data the model was trained on")
    p.set_defaults(run=run_predict)


def run_train(args: argparse.Namespace) -> int:
    import dataclasses

    from pointwise.training import checkpoint
    from pointwise.training.train import CHECKPOINT, TrainConfig, train

    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
             if getattr(args, f.name, None) is not None}
    base = TrainConfig()
    if args.resume:
        if args.out is None:
            raise ValueError("expected --out DIR with --resume, but got none")
        path = Path(args.out) / CHECKPOINT
        if path.exists():  # options left out come from the checkpoint
            base = TrainConfig.from_dict(checkpoint.load(path)["config"])
    config = dataclasses.replace(base, **given)
    train(config, args.out, resume=args.resume, threads=args.threads, device=args.device,
          distributed=args.distributed, progress=not args.no_progress)
    return 0


def run_export(args: argparse.Namespace) -> int:
    from pointwise.training.export import export_onnx

    try:
        report = export_onnx(args.checkpoint, args.onnx, optimize=args.optimize,
                             opset=args.opset)
    except RuntimeError as e:  # onnxruntime disagreed with torch: a failed check, not usage
        print(f"pointwise: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 1
    print(report)
    return 0


def run_predict(args: argparse.Namespace) -> int:
    from pointwise.training.export import predict

    accuracy, correct, total = predict(args.source, args.data)
    print(f"{args.source}: accuracy {100 * accuracy:.2f}% ({correct}/{total})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """This module as a program, with ``pointwise.cli``'s error convention: one line on
    stderr and status 2, never a traceback."""
    parser = argparse.ArgumentParser(prog="pointwise")
    add_parsers(parser.add_subparsers(title="commands", metavar="COMMAND"))
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else USAGE_ERROR
    if getattr(args, "run", None) is None:
        parser.print_help(sys.stderr)
        return USAGE_ERROR
    try:
        return int(args.run(args))
    except (ValueError, TypeError, OSError, ImportError) as e:
        print(f"pointwise: error: {' '.join(str(e).split())}", file=sys.stderr)
        return USAGE_ERROR


if __name__ == "__main__":
    sys.exit(main())
