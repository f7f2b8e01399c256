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

from pointwise.cli.args import default_threads, device, input_file, output_path, positive
from pointwise.cli.errors import EXIT, CliError, Renamed

__all__ = ["add_parsers", "main", "run_export", "run_predict", "run_train"]

ONNX_MAGIC = b"\x08"  # an ONNX ModelProto starts with field 1 (ir_version), a varint

_MODEL_HELP = ("the factory that builds a checkpoint's model when it is not a zoo model; a "
               "checkpoint never names code to run itself")


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
    p.add_argument("--threads", type=positive, metavar="T", default=default_threads(),
                   help="torch intra-op threads (default: torch's, OMP_NUM_THREADS or every "
                   f"core: {default_threads()} here); results are bitwise reproducible for a "
                   "fixed T, and on a busy machine 1 is fastest for these small models")
    p.add_argument("--distributed", action="store_true",
                   help="DistributedDataParallel under torchrun (gloo on CPU)")
    p.add_argument("--quiet", action="store_true",
                   help="no progress: no bar (shown on a terminal) and no line per epoch")
    p.add_argument("--no-progress", action=Renamed, nargs=0, hint="--quiet")
    p.set_defaults(run=run_train, extra="train")

    p = sub.add_parser(
        "export", help="export a checkpoint to ONNX and check it in onnxruntime",
        description="Export CHECKPOINT to ONNX with a dynamic batch axis, then require "
        "onnxruntime's logits within 1e-4 of torch's, with the same argmax, on random and "
        "real inputs.")
    p.add_argument("checkpoint", metavar="CHECKPOINT")
    p.add_argument("--onnx", required=True, metavar="PATH", help="the .onnx file to write")
    p.add_argument("--optimize", action="store_true",
                   help="pointwise.nn.convert first: fold BatchNorm, fuse activations")
    p.add_argument("--opset", type=positive, default=17, help="ONNX opset (default 17)")
    p.add_argument("--model", metavar="PACKAGE.MODULE:FACTORY", help=_MODEL_HELP)
    p.set_defaults(run=run_export, extra="onnx")

    p = sub.add_parser(
        "predict", help="accuracy of a checkpoint or .onnx on a test set",
        description="Score a checkpoint or exported .onnx on the test split it was trained "
        "with (or on --data).")
    p.add_argument("source", metavar="CHECKPOINT|MODEL.onnx")
    p.add_argument("--data", metavar="digits|PATH.npz",
                   help="default: the data the model was trained on")
    p.add_argument("--model", metavar="PACKAGE.MODULE:FACTORY", help=_MODEL_HELP)
    p.set_defaults(run=run_predict, extra="onnx")


def run_train(args: argparse.Namespace) -> int:
    import dataclasses

    from pointwise.training import checkpoint
    from pointwise.training.train import CHECKPOINT, TrainConfig, train

    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
             if getattr(args, f.name, None) is not None}
    base = TrainConfig()
    if args.resume:
        if args.out is None:
            raise CliError("expected --out DIR with --resume, but got none",
                           hint="--out names the folder of the run to resume")
        path = Path(args.out) / CHECKPOINT
        if path.exists():  # options left out come from the checkpoint
            base = TrainConfig.from_dict(checkpoint.load(path)["config"])
    config = dataclasses.replace(base, **given)
    config.validate()
    dev = device(args.device)
    def log(line: str) -> None:  # --quiet: what happened, without the line per epoch
        if not (args.quiet and line.startswith("epoch ")):
            print(line, flush=True)
    try:
        train(config, args.out, resume=args.resume, threads=args.threads, device=dev,
              distributed=args.distributed, progress=not args.quiet, log=log)
    except KeyboardInterrupt:
        raise _interrupted(args.out, CHECKPOINT) from None
    return 0


def _interrupted(out: str | None, name: str) -> CliError:
    """Ctrl-C during training: where the last checkpoint is, and how to go on from it."""
    from pointwise.training import checkpoint

    if out is None:
        return CliError("interrupted; nothing was saved (no --out DIR)",
                        code=EXIT["interrupted"])
    path = Path(out) / name
    try:
        state = checkpoint.load(path)
    except (OSError, ValueError):
        return CliError(f"interrupted before the first checkpoint; nothing in {out}",
                        code=EXIT["interrupted"])
    epoch, epochs = state["epoch"], state["config"]["epochs"]
    return CliError(f"interrupted; the last checkpoint is {path}, after epoch {epoch}/{epochs}",
                    hint="run the same command with --resume to go on from it",
                    code=EXIT["interrupted"])


def run_export(args: argparse.Namespace) -> int:
    from pointwise.training.export import export_onnx

    source = _checkpoint_file(args.checkpoint)
    target = output_path(args.onnx, "--onnx", stdout=False) or args.onnx
    try:
        report = export_onnx(source, target, optimize=args.optimize, opset=args.opset,
                             model=args.model)
    except RuntimeError as e:  # onnxruntime disagreed with torch: a failed check, not usage
        raise CliError(str(e), code=EXIT["failed"]) from None
    print(report)
    return 0


def run_predict(args: argparse.Namespace) -> int:
    from pointwise.training.export import predict

    p = input_file(args.source, "CHECKPOINT|MODEL.onnx", folder_hint="checkpoint.pt")
    if p.suffix.lower() != ".onnx":
        _checkpoint_file(args.source)
    accuracy, correct, total = predict(p, args.data, args.model)
    print(f"{args.source}: accuracy {100 * accuracy:.2f}% ({correct}/{total})")
    return 0


def _checkpoint_file(text: str) -> Path:
    """A checkpoint path, checked: a file, and not an ONNX model given in its place."""
    p = input_file(text, "CHECKPOINT", folder_hint="checkpoint.pt")
    with open(p, "rb") as fh:
        start = fh.read(4)
    if p.suffix.lower() == ".onnx" or (start[:1] == ONNX_MAGIC and start != b"PK\x03\x04"):
        raise CliError(f"expected a checkpoint written by `pointwise train --out DIR`, but "
                       f"{text!r} is an ONNX model",
                       hint="export takes the checkpoint.pt the model came from; "
                            "`pointwise predict MODEL.onnx` scores an ONNX model")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """This module as a program: the same as ``pointwise``'s (errors as one line)."""
    from pointwise.cli import main as program

    return program(argv)


if __name__ == "__main__":
    sys.exit(main())
