"""``pointwise models`` and ``pointwise analyze``: the zoo's names, and where a model's
params and MACs are."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from pointwise.cli.args import output_path, positive, size, strict_json, write_output
from pointwise.cli.errors import CliError, Renamed

__all__ = ["add_parsers"]


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register ``models`` and ``analyze`` on ``sub``."""
    _add_models(sub)
    _add_analyze(sub)


def _add_models(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "models", help="list the model zoo's names",
        description="List the registered models whose names match PATTERN (fnmatch "
        "wildcards: *, ?, [seq]).",
    )
    p.add_argument("pattern", metavar="PATTERN", nargs="?", default="*",
                   help="e.g. '*resnet*' (default: all)")
    p.set_defaults(run=_run_models)


def _run_models(args: argparse.Namespace) -> int:
    import pointwise.models as pm

    found = pm.names(args.pattern)
    if not found:
        raise ValueError(f"expected a pattern that matches a model, but {args.pattern!r} "
                         f"matches none of: {', '.join(pm.names())}")
    print("\n".join(found))
    return 0


def _add_analyze(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "analyze", help="count the params and MACs of a model, layer by layer",
        description=(
            "Trace a model on torch's meta device (no arithmetic runs) and count params and "
            "MACs per layer, per module, and held by 1×1 convs. NAME is a registered model "
            "(see `pointwise models`); module:attr names, in an importable module, a "
            "function that returns an nn.Module, or an nn.Module."
        ),
    )
    p.add_argument("model", metavar="NAME|module:attr", help="e.g. resnet50, or mypkg.nets:build")
    p.add_argument(
        "--input-size", metavar="SIZE", type=size,
        help="CxHxW or NxCxHxW, PyTorch's order (default: 1xCx224x224, C the input channels "
        "of the model's first conv; 1xF for a model that starts with a linear layer of F "
        "features)",
    )
    p.add_argument("--input", action=Renamed, hint="the size is --input-size CxHxW or "
                   "NxCxHxW, PyTorch's order, e.g. --input-size 3x224x224")
    p.add_argument("--group-depth", metavar="N", type=positive,
                   help="one row per module-name prefix of N parts (1: inception3a, layer1…)")
    p.add_argument("--savings", action="store_true",
                   help="what each 1×1 reduction saves the k×k conv it feeds")
    p.add_argument("--paper", action="store_true",
                   help="the published table for this model beside our counts "
                   "(googlenet, mobilenet_v1, resnet18..resnet152)")
    p.add_argument("--json", metavar="PATH",
                   help="write the report as JSON to PATH ('-': print it instead of the table)")
    p.add_argument("--csv", metavar="PATH",
                   help="write one table as CSV to PATH ('-': print it instead): the paper's, "
                   "the savings, the groups or the layers, the first that was asked for")
    p.add_argument("--format", action=Renamed, hint="--json PATH or --csv PATH ('-' prints "
                   "it), as every command writes its formats")
    p.add_argument("--png", metavar="PATH", help="also draw MACs and params per group to a PNG")
    p.set_defaults(run=_run_analyze, extra="torch")


def _run_analyze(args: argparse.Namespace) -> int:
    json_path = output_path(args.json, "--json")
    csv_path = output_path(args.csv, "--csv")
    png_path = output_path(args.png, "--png", stdout=False)
    if json_path == "-" and csv_path == "-":
        raise CliError("expected one of --json and --csv on stdout ('-'), but got both",
                       hint="write one of them to a file")
    from pointwise.analysis import analyze
    from pointwise.analysis.papers import paper_table
    from pointwise.models import load_model

    model, name = load_model(args.model)
    shape = args.input_size or _default_input(model)
    _check_channels(model, name, shape)
    shape = (1, *shape) if len(shape) == 3 else shape  # CxHxW: one image
    report = analyze(model, shape, name=name)
    paper = paper_table(name, report) if args.paper else None
    depth, savings = args.group_depth, args.savings
    # Draw first: a PNG that cannot be written fails the command before anything is printed.
    path = None if png_path is None else report.to_png(png_path, depth=depth or 1)
    if json_path is not None:
        d = report.to_dict(depth=depth, savings=savings)
        if paper is not None:
            d["paper"] = paper.as_dict()
        write_output(json_path, strict_json(d))
    if csv_path is not None:
        write_output(csv_path, paper.to_csv() if paper is not None
                     else report.to_csv(depth=depth, savings=savings))
    if "-" not in (json_path, csv_path):
        text = report.to_text(depth=depth, savings=savings)
        print(text if paper is None else f"{text}\n\n{paper.to_text()}")
    if path is not None:
        print(f"wrote {path}", file=sys.stderr)
    return 0


def _check_channels(model: Any, name: str, shape: tuple[int, ...]) -> None:
    """An image size whose channels do not match the first conv's, named before tracing."""
    want = _default_input(model)
    if len(want) != 4 or len(shape) < 3:
        return
    c = shape[-3]
    if c != want[1]:
        hwc = shape[-1] == want[1]
        size = "x".join(map(str, (*shape[:-3], shape[-1], shape[-3], shape[-2]) if hwc
                            else (*shape[:-3], want[1], *shape[-2:])))
        raise CliError(f"expected --input-size with {want[1]} channels first for {name} "
                       f"(CxHxW, PyTorch's order), but got {'x'.join(map(str, shape))}, "
                       f"{c} channels", hint=f"--input-size {size}")


def _default_input(model: Any) -> tuple[int, ...]:
    """1×C×224×224 for the model's first conv, 1×F for a first linear layer."""
    for m in model.modules():
        channels = getattr(m, "in_channels", None)
        if isinstance(channels, int) and hasattr(m, "weight"):
            return (1, channels, 224, 224)
        features = getattr(m, "in_features", None)
        if isinstance(features, int) and hasattr(m, "weight"):
            return (1, features)
    return (1, 3, 224, 224)
