"""``pointwise models`` and ``pointwise analyze``: the zoo's names, and where a model's
params and MACs are."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from pointwise.cli.args import input_shape, parse, positive

__all__ = ["add_parsers"]


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``models`` and ``analyze`` on ``sub``."""
    _add_models(sub)
    _add_analyze(sub)


def _add_models(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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


def _add_analyze(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
        "--input", metavar="NxCxHxW",
        help="input shape (default: 1xCx224x224, C the input channels of the model's first "
        "conv; 1xF for a model that starts with a linear layer of F features)",
    )
    p.add_argument("--group-depth", metavar="N", type=positive,
                   help="one row per module-name prefix of N parts (1: inception3a, layer1…)")
    p.add_argument("--savings", action="store_true",
                   help="what each 1×1 reduction saves the k×k conv it feeds")
    p.add_argument("--paper", action="store_true",
                   help="the published table for this model beside our counts "
                   "(googlenet, mobilenet_v1, resnet18..resnet152)")
    p.add_argument("--format", choices=("table", "json", "csv"), default="table",
                   help="table (default), json, or csv (one table: the paper's, the savings, "
                   "the groups or the layers, the first that was asked for)")
    p.add_argument("--png", metavar="PATH", help="also draw MACs and params per group to a PNG")
    p.set_defaults(run=_run_analyze)


def _run_analyze(args: argparse.Namespace) -> int:
    from pointwise.analysis import analyze
    from pointwise.analysis.papers import paper_table
    from pointwise.models import load_model

    shape = None if args.input is None else parse(input_shape, args.input, "--input")
    model, name = load_model(args.model)
    shape = shape or _default_input(model)
    report = analyze(model, shape, name=name)
    paper = paper_table(name, report) if args.paper else None
    depth, savings = args.group_depth, args.savings
    # Draw first: a PNG that cannot be written fails the command before anything is printed.
    path = None if args.png is None else report.to_png(args.png, depth=depth or 1)
    if args.format == "json":
        d = report.to_dict(depth=depth, savings=savings)
        if paper is not None:
            d["paper"] = paper.as_dict()
        print(json.dumps(d))
    elif args.format == "csv":
        print(paper.to_csv() if paper is not None
              else report.to_csv(depth=depth, savings=savings), end="")
    else:
        text = report.to_text(depth=depth, savings=savings)
        print(text if paper is None else f"{text}\n\n{paper.to_text()}")
    if path is not None:
        print(f"pointwise: wrote {path}", file=sys.stderr)
    return 0


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
