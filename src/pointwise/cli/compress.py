"""``pointwise compress``: a trained checkpoint's 1×1 convs replaced by PCA-fitted pairs."""

from __future__ import annotations

import argparse

from pointwise.cli.args import default_threads, output_path, strict_json, threads, write_output

__all__ = ["add_parsers", "run_compress"]


def _energy(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(
            f"expected a share of variance 0 < E <= 1, e.g. 0.99, but got {text!r}")
    return value


def _rank(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer K >= 1, but got {text!r}")
    return value


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register ``compress`` on ``sub`` (imports nothing heavy: ``--help`` stays fast)."""
    p = sub.add_parser(
        "compress", help="replace a checkpoint's 1×1 convs by PCA-fitted C→k→F pairs",
        description="Fit the principal subspace of every 1×1 conv's responses on the "
        "checkpoint's training split and replace the conv by a C→k conv and a k→F conv "
        "where that saves MACs (Zhang, Zou, He and Sun, 2015). Prints MACs, params and "
        "test accuracy before and after, on the held-out split `train` reports; with "
        "--out, writes OUT/checkpoint.pt, which `export` and `predict` accept.")
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="a checkpoint of `pointwise train`")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--energy", type=_energy, metavar="E",
                     help="keep this share of each layer's response variance (default 0.99)")
    how.add_argument("--rank", type=_rank, metavar="K", help="the same k for every layer")
    p.add_argument("--layers", nargs="+", metavar="NAME",
                   help="compress only these layers (qualified names or globs such as "
                   "'features.*'; default: every 1×1 conv)")
    p.add_argument("--asymmetric", action="store_true",
                   help="then refit each replaced layer, in order, to the inputs the "
                   "compressed model gives it (the same k and MACs; less error passed on)")
    p.add_argument("--data", metavar="digits|PATH.npz",
                   help="default: the data the checkpoint was trained on, with its split")
    p.add_argument("--out", metavar="DIR", help="folder for checkpoint.pt (default: none)")
    p.add_argument("--json", metavar="PATH",
                   help="write the result as JSON to PATH ('-': print it instead of the text)")
    p.add_argument("--threads", type=threads, metavar="T", default=default_threads(),
                   help="torch intra-op threads (default: torch's, OMP_NUM_THREADS or every "
                   f"core: {default_threads()} here)")
    p.set_defaults(run=run_compress, extra="train")


def run_compress(args: argparse.Namespace) -> int:
    import torch

    from pointwise.cli.train import _checkpoint_file
    from pointwise.training.compress import compress_checkpoint

    source = _checkpoint_file(args.checkpoint)
    json_path = output_path(args.json, "--json")
    output_path(args.out, "--out", stdout=False, folder=True)
    torch.set_num_threads(args.threads)
    result = compress_checkpoint(source, args.out, energy=args.energy, rank=args.rank,
                                 layers=args.layers, data=args.data,
                                 asymmetric=args.asymmetric)
    if json_path is not None:
        write_output(json_path, strict_json(result.to_dict()))
    if json_path != "-":
        print(result)
    return 0
