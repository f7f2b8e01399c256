"""``pointwise cost``: a k×k conv's weights and MACs, direct and behind a 1×1 reduction."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from pointwise.analysis.tables import pair, table
from pointwise.analysis.tables import shape as fmt_shape
from pointwise.analysis.tables import stride as fmt_stride
from pointwise.cli.args import (
    conv_spec,
    output_path,
    parse,
    positive,
    size,
    strict_json,
    write_output,
)
from pointwise.cli.errors import Renamed
from pointwise.cost import CONVENTION, Cost, Reduction, conv_cost, reduction_cost

__all__ = ["add_parsers", "cost_dict", "cost_text"]


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "cost", help="the cost of a k×k conv, direct and behind a 1×1 reduction",
        description=(
            "The classic argument for 1×1 reductions (GoogLeNet, section 5): the MACs and "
            "weights of a k×k conv on a CxHxW input, and with a 1×1 conv reducing C to R "
            "channels in front of it. 'same' padding (k // 2)."
        ),
    )
    p.add_argument("--input-size", metavar="SIZE", required=True, type=size,
                   help="CxHxW, PyTorch's order, e.g. 192x28x28 (NxCxHxW for a batch)")
    p.add_argument("--input", action=Renamed, hint="the size is --input-size CxHxW, PyTorch's "
                   "order, e.g. --input-size 192x28x28")
    p.add_argument("--conv", metavar="KxK:F", required=True,
                   help="the k×k conv and its output channels, e.g. 5x5:32")
    p.add_argument("--reduce", metavar="R", type=positive,
                   help="channels of the 1×1 reduction in front of it, e.g. 16")
    p.add_argument("--stride", metavar="S", type=positive, default=1,
                   help="stride of the k×k conv (default 1)")
    p.add_argument("--count-bias", action="store_true",
                   help="count biases too (default: weights)")
    p.add_argument("--bias", action=Renamed, hint="--count-bias counts biases (--bias gives "
                   "bias values, in explain)")
    p.add_argument("--json", metavar="PATH",
                   help="write the costs as JSON to PATH ('-': print it instead of the table)")
    p.set_defaults(run=run_cost)


def run_cost(args: argparse.Namespace) -> int:
    json_path = output_path(args.json, "--json")
    *n, c, h, w = args.input_size
    hwc = (*n, h, w, c)  # the order cost_dict and cost_text take
    kernel, f = parse(conv_spec, args.conv, "--conv")
    kw = {"reduce": args.reduce, "stride": args.stride, "bias": args.count_bias}
    if json_path is not None:
        write_output(json_path, strict_json(cost_dict(hwc, kernel, f, **kw)))
    if json_path != "-":
        print(cost_text(hwc, kernel, f, **kw))
    return 0


def _costs(size: Sequence[int], kernel: tuple[int, int], out_channels: int,
           reduce: int | None, stride: int, bias: bool) -> tuple[Cost, Reduction | None]:
    *batch, h, w, c = size
    n = batch[0] if batch else 1
    if reduce is None:
        pad = (kernel[0] // 2, kernel[1] // 2)
        return conv_cost(c, out_channels, kernel, input_size=(h, w), stride=stride,
                         padding=pad, bias=bias, batch=n), None
    red = reduction_cost(c, out_channels, kernel, reduce, input_size=(h, w), stride=stride,
                         bias=bias, batch=n)
    return red.direct, red


def cost_dict(size: Sequence[int], kernel: tuple[int, int], out_channels: int,
              reduce: int | None = None, *, stride: int = 1, bias: bool = False
              ) -> dict[str, Any]:
    """A k×k conv on an (N×)H×W×C input, direct and behind a 1×1 reduction, as a dict."""
    direct, red = _costs(size, kernel, out_channels, reduce, stride, bias)
    d: dict[str, Any] = {"input_size": _chw(size), "kernel": list(kernel),
                         "out_channels": out_channels, "stride": stride,
                         "padding": [kernel[0] // 2, kernel[1] // 2], "bias": bias,
                         "convention": CONVENTION, "direct": direct.as_dict()}
    if red is not None:
        d.update(reduce_channels=reduce, reduce=red.reduce.as_dict(), conv=red.conv.as_dict(),
                 reduced=red.reduced.as_dict(), ratio=red.ratio,
                 weights_ratio=red.weights_ratio, saved_macs=red.saved_macs)
    return d


def cost_text(size: Sequence[int], kernel: tuple[int, int], out_channels: int,
              reduce: int | None = None, *, stride: int = 1, bias: bool = False) -> str:
    """The same as :func:`cost_dict`, as a table: weights (params with ``bias``) and MACs."""
    direct, red = _costs(size, kernel, out_channels, reduce, stride, bias)
    c, f = size[-1], out_channels
    counted = "params" if bias else "weights"

    def count(cost: Cost) -> int:
        return cost.params if bias else cost.weights

    k = pair(kernel)
    rows: list[tuple[str, str, Cost]] = [("direct", f"{k} conv {c}→{f}", direct)]
    if red is not None:
        rows += [("with reduction", f"1×1 conv {c}→{reduce}", red.reduce),
                 ("", f"{k} conv {reduce}→{f}", red.conv), ("", "total", red.reduced)]
    pad = fmt_stride((kernel[0] // 2, kernel[1] // 2))
    out = [f"input {fmt_shape(_chw(size))} (CxHxW), {k} conv to {f} channels, stride "
           f"{stride}, 'same' padding ({pad})", ""]
    out += table(("", "", counted, "MACs"),
                  [[a, b, f"{count(x):,}", f"{x.macs:,}"] for a, b, x in rows], numeric={2, 3})
    if red is not None:
        ratio = count(red.direct) / max(1, count(red.reduced))
        out += ["", f"the 1×1 reduction needs {red.ratio:.2f}× fewer MACs "
                    f"({red.saved_macs:,} saved) and {ratio:.2f}× fewer {counted}"]
    out.append(f"convention: {CONVENTION}")
    return "\n".join(out)


def _chw(size: Sequence[int]) -> list[int]:
    """An (N,)H,W,C size in PyTorch's order, (N,)C,H,W, as the command line takes it."""
    *n, h, w, c = size
    return [*n, c, h, w]
