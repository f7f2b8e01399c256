"""``pointwise explain``: a 1×1 conv written out pixel by pixel, with its cost."""

from __future__ import annotations

import argparse
import json
import sys

from pointwise.cli.args import load_array, parse_bias, positive, shape
from pointwise.explain import explain, random_filter, random_input, tutorial_example
from pointwise.layout import LAYOUTS

__all__ = ["add_parsers"]


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "explain",
        help="write out a 1×1 conv pixel by pixel, with its cost",
        description=(
            "Write out every output pixel of a 1×1 convolution as its sum of products, then "
            "its parameters and MACs beside a 3×3 conv's. With no options: the tutorial's "
            "(3, 3, 2) example and its 2→1 filter."
        ),
    )
    source = p.add_mutually_exclusive_group()
    source.add_argument("--input", metavar="FILE", help="input array, .npy or .json")
    source.add_argument(
        "--random", metavar="HxWxC", type=shape,
        help="a random input of integers 0..9 (NxHxWxC for a batched layout)",
    )
    weights = p.add_mutually_exclusive_group()
    weights.add_argument("--filter", metavar="FILE", help="filter, .npy or .json (HWIO or OIHW)")
    weights.add_argument(
        "--filters", metavar="F", type=positive,
        help="a random filter of integers -3..3 with F output channels (default with --random: 1)",
    )
    p.add_argument("--seed", metavar="S", type=int, default=0, help="seed for --random/--filters")
    p.add_argument(
        "--layout", type=str.upper, choices=list(LAYOUTS), default="HWC",
        help="axis order of the input (default HWC); the filter is HWIO for HWC/NHWC and "
        "OIHW for CHW/NCHW",
    )
    p.add_argument("--bias", metavar="B1,B2,...", help="one bias per filter, comma-separated")
    p.add_argument(
        "--max-pixels", metavar="K", type=positive,
        help="write out at most K pixel lines (one per pixel and filter; default 16)",
    )
    p.add_argument("--json", action="store_true", help="print the trace as JSON")
    p.add_argument("--png", metavar="PATH", help="also draw input, filter and output to a PNG")
    p.set_defaults(run=run_explain)


def run_explain(args: argparse.Namespace) -> int:
    layout = args.layout
    x = None
    if args.input is not None:
        x = load_array(args.input, "x")
    elif args.random is not None:
        x = random_input(args.random, layout=layout, seed=args.seed)
    if args.filter is not None:
        w = load_array(args.filter, "weight")
    elif args.filters is not None or args.random is not None:
        base = x if x is not None else tutorial_example(layout)[0]
        w = random_filter(base, args.filters or 1, layout=layout, seed=args.seed)
    elif x is not None:
        raise ValueError(
            "expected --filter FILE or --filters F with --input, but got neither; "
            "e.g. --filters 1 for one random filter"
        )
    else:
        w = None  # the tutorial's filter
    bias = None if args.bias is None else parse_bias(args.bias, x)
    limit = {} if args.max_pixels is None else {"max_pixels": args.max_pixels}
    trace = explain(x, w, bias, layout=layout, **limit)
    # Draw first: a PNG that cannot be written fails the command before anything is printed.
    path = None if args.png is None else trace.to_png(args.png)
    print(json.dumps(trace.to_dict()) if args.json else trace.to_text())
    if path is not None:
        print(f"pointwise: wrote {path}", file=sys.stderr)
    return 0
