"""``pointwise explain``: a 1×1 conv written out pixel by pixel, with its cost."""

from __future__ import annotations

import argparse
import math
import sys

import numpy as np

from pointwise.cli.args import (
    check_fits,
    load_array,
    output_path,
    parse_bias,
    positive,
    size,
    strict_json,
    write_output,
)
from pointwise.cli.errors import CliError
from pointwise.explain import (
    explain,
    explain_pca,
    explain_taps,
    random_filter,
    random_input,
    tutorial_example,
)
from pointwise.layout import LAYOUTS

__all__ = ["MAX_VALUES", "add_parsers"]

# explain writes arrays out in full in --json and computes its trace in int64/float64: past
# this many values of x or y it is no longer an explanation (and --json would take GBs).
MAX_VALUES = 1 << 24


def layout(text: str) -> str:
    """``--layout``: one of the library's layouts, spelled as the library spells them."""
    if text not in LAYOUTS:
        fix = f"; use {text.upper()!r}" if text.upper() in LAYOUTS else ""
        raise argparse.ArgumentTypeError(
            f"expected one of {', '.join(LAYOUTS)} (upper case, as in the library), but got "
            f"{text!r}{fix}")
    return text


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "explain",
        help="write out a 1×1 conv pixel by pixel (or a k×k conv tap by tap), with its cost",
        description=(
            "Write out every output pixel of a 1×1 convolution as its sum of products, then "
            "its parameters and MACs beside a 3×3 conv's. With no options: the tutorial's "
            "(3, 3, 2) example and its 2→1 filter. With --kernel K: a K×K convolution "
            "(zero padding, same size) as K² 1×1 convolutions on shifted views of the input, "
            "each tap's partial result and the running sum."
        ),
    )
    source = p.add_mutually_exclusive_group()
    source.add_argument("--input", metavar="FILE", help="input array, .npy or .json")
    source.add_argument(
        "--random", metavar="SIZE", type=size,
        help="a random input of integers 0..9 of this size, CxHxW or NxCxHxW (PyTorch's "
        "order whatever --layout; N for a batched layout)",
    )
    weights = p.add_mutually_exclusive_group()
    weights.add_argument("--filter", metavar="FILE", help="filter, .npy or .json (HWIO or OIHW)")
    weights.add_argument(
        "--filters", metavar="F", type=positive,
        help="a random filter of integers -3..3 with F output channels (default with --random: 1)",
    )
    p.add_argument("--seed", metavar="S", type=int, default=0, help="seed for --random/--filters")
    p.add_argument(
        "--layout", type=layout, default="HWC",
        help="axis order of the arrays in memory: HWC (default), NHWC, CHW or NCHW; the "
        "filter is HWIO for HWC/NHWC and OIHW for CHW/NCHW",
    )
    p.add_argument("--bias", metavar="B1,B2,...", help="one bias per filter, comma-separated")
    p.add_argument(
        "--kernel", metavar="K", type=positive, default=1,
        help="kernel size (default 1): with K > 1, a K×K conv as K² shifted 1×1 convs; "
        "--filters then draws a K×K filter",
    )
    p.add_argument(
        "--max-pixels", metavar="K", type=positive,
        help="write out at most K pixel lines (one per pixel and filter; default 16)",
    )
    p.add_argument(
        "--pca", action="store_true",
        help="instead: the 1×1 conv that best reduces the input's C channels to the filter's "
        "F (PCA of the pixels), beside the filter, with the variance each keeps",
    )
    p.add_argument("--json", metavar="PATH",
                   help="write the trace as JSON to PATH ('-': print it instead of the text)")
    p.add_argument("--png", metavar="PATH", help="also draw input, filter, bias and output "
                   "to a PNG")
    p.set_defaults(run=run_explain, extra="plot")


def run_explain(args: argparse.Namespace) -> int:
    layout = args.layout
    json_path = output_path(args.json, "--json")
    png_path = output_path(args.png, "--png", stdout=False)
    x = None
    if args.input is not None:
        x = load_array(args.input, "x")
    elif args.random is not None:
        x = random_input(_hwc(args.random, layout), layout=layout, seed=args.seed)
    if x is not None:
        _check_size(x.shape, "x")
    if args.filter is not None:
        w = load_array(args.filter, "weight")
        filters = w.shape[-1 if LAYOUTS[layout][0] else 0] if w.ndim else 1
    elif args.filters is not None or args.random is not None or args.kernel > 1:
        filters = args.filters or 1
        _check_output(x, filters, layout)
        base = x if x is not None else tutorial_example(layout)[0]
        w = random_filter(base, filters, layout=layout, seed=args.seed, kernel=args.kernel)
    elif x is not None:
        raise CliError("expected --filter FILE or --filters F with --input, but got neither",
                       hint="--filters 1 for one random filter")
    else:
        w, filters = None, 1  # the tutorial's filter
    _check_output(x, filters, layout)
    if args.kernel > 1:
        if args.pca:
            raise CliError("expected --pca or --kernel, but got both",
                           hint="--pca explains 1×1 filters; drop --kernel")
        bias = None if args.bias is None else parse_bias(args.bias, x)
        return _run_taps(args, x, w, bias, json_path)
    limit = {} if args.max_pixels is None else {"max_pixels": args.max_pixels}
    if args.pca:
        return _run_pca(args, x, w, json_path, limit)
    bias = None if args.bias is None else parse_bias(args.bias, x)
    trace = explain(x, w, bias, layout=layout, **limit)
    # Draw first: a PNG that cannot be written fails the command before anything is printed.
    path = None if png_path is None else trace.to_png(png_path)
    if json_path is not None:
        write_output(json_path, strict_json(trace.to_dict()))
    if json_path != "-":
        print(trace.to_text())
    if path is not None:
        print(f"wrote {path}", file=sys.stderr)
    return 0


def _run_pca(args: argparse.Namespace, x: np.ndarray | None, w: np.ndarray | None,
             json_path: str | None, limit: dict[str, int]) -> int:
    if args.bias is not None:
        raise CliError(f"expected no --bias with --pca, but got --bias {args.bias}",
                       hint="--pca compares what filters keep, which a bias does not change")
    if args.png is not None:
        raise CliError(f"expected no --png with --pca, but got --png {args.png}",
                       hint="--pca writes text, or JSON with --json PATH")
    result = explain_pca(x, w, layout=args.layout, **limit)
    if json_path is not None:
        write_output(json_path, strict_json(result.to_dict()))
    if json_path != "-":
        print(result.to_text())
    return 0


def _run_taps(args: argparse.Namespace, x: np.ndarray | None, w: np.ndarray | None,
              bias: np.ndarray | None, json_path: str | None) -> int:
    """``--kernel K``: the K×K conv as K² shifted 1×1 convs (no PNG, no pixel limit)."""
    for flag, given in (("--png", args.png), ("--max-pixels", args.max_pixels)):
        if given is not None:
            raise CliError(f"expected {flag} without --kernel, but got both",
                           hint=f"{flag} applies to the 1×1 explanation; drop it or --kernel")
    trace = explain_taps(x, w, bias, layout=args.layout, kernel=args.kernel)
    if trace.kernel != (args.kernel, args.kernel):
        raise CliError(f"expected a {args.kernel}×{args.kernel} filter for --kernel "
                       f"{args.kernel}, but got a {trace.kernel[0]}×{trace.kernel[1]} one",
                       hint=f"--filters F for a random {args.kernel}×{args.kernel} filter")
    if json_path is not None:
        write_output(json_path, strict_json(trace.to_dict()))
    if json_path != "-":
        print(trace.to_text())
    return 0


def _hwc(dims: tuple[int, ...], layout: str) -> tuple[int, ...]:
    """A --random size, (N,)C,H,W, as random_input takes it: (N,)H,W,C."""
    batched = LAYOUTS[layout][1]
    if len(dims) == 4 and not batched:
        raise CliError(f"expected --random CxHxW for layout {layout}, but got a batch "
                       f"{'x'.join(map(str, dims))}", hint=f"--layout N{layout} for a batch")
    _check_size(dims, "--random")
    check_fits(dims, np.dtype(np.int64).itemsize, "--random")
    *n, c, h, w = dims
    return (*n, h, w, c)


def _check_size(shape: tuple[int, ...], name: str) -> None:
    count = math.prod(shape)
    if count > MAX_VALUES:
        raise CliError(f"expected {name} of at most {MAX_VALUES:,} values to write out, but "
                       f"got {'x'.join(map(str, shape))} = {count:,}",
                       hint="explain is for small examples; pointwise.conv1x1 computes "
                            "large arrays from Python")


def _check_output(x: np.ndarray | None, filters: int, layout: str) -> None:
    """y has x's pixels times ``filters`` values: refuse it before computing it."""
    if x is None or x.ndim < 3:
        return  # the operator's own checks will name what is wrong
    channels = x.shape[-1] if LAYOUTS[layout][0] else x.shape[-3]
    pixels = math.prod(x.shape) // max(1, channels)
    _check_size((pixels, filters), "y (pixels x filters)")
