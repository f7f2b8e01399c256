"""The ``pointwise`` program: argparse subcommands over the library, and nothing more.

Each subcommand is a pair of functions: ``_add_<name>`` registers its parser and
``_run_<name>`` calls the library and prints what it returns. Errors from the library
(bad files, shapes, dtypes) become one line on stderr and exit status 2, never a traceback.

>>> main(["--version"])  # doctest: +ELLIPSIS
pointwise ...
0
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pointwise import __version__, bench_cli, train_cli
from pointwise.explain import explain, random_filter, random_input, tutorial_example
from pointwise.layout import LAYOUTS, as_array

__all__ = ["build_parser", "main", "main_entry"]

USAGE_ERROR = 2  # as argparse uses for a bad command line

Runner = Callable[[argparse.Namespace], int]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the program on ``argv`` (default: ``sys.argv[1:]``) and return its exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, or a usage error argparse already printed
        return e.code if isinstance(e.code, int) else USAGE_ERROR
    run: Runner | None = getattr(args, "run", None)
    if run is None:
        parser.print_help(sys.stderr)
        return USAGE_ERROR
    try:
        return run(args)
    except BrokenPipeError:  # `pointwise explain | head`: the reader left; stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except (ValueError, TypeError, OSError, ImportError) as e:  # json errors are ValueErrors
        message = " ".join(str(e).split()) or type(e).__name__
        print(f"pointwise: error: {message}", file=sys.stderr)
        return USAGE_ERROR


def main_entry() -> None:
    """The console script ``pointwise``."""
    sys.exit(main())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pointwise",
        description="The 1×1 (pointwise) convolution, and tools to see into it.",
    )
    parser.add_argument("--version", action="version", version=f"pointwise {__version__}")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    _add_explain(sub)
    _add_models(sub)
    _add_analyze(sub)
    _add_cost(sub)
    train_cli.add_parsers(sub)
    bench_cli.add_parsers(sub)
    return parser


# ------------------------------------------------------------------------------- explain
def _add_explain(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
        "--random", metavar="HxWxC", type=_shape,
        help="a random input of integers 0..9 (NxHxWxC for a batched layout)",
    )
    weights = p.add_mutually_exclusive_group()
    weights.add_argument("--filter", metavar="FILE", help="filter, .npy or .json (HWIO or OIHW)")
    weights.add_argument(
        "--filters", metavar="F", type=_positive,
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
        "--max-pixels", metavar="K", type=_positive,
        help="write out at most K pixel lines (one per pixel and filter; default 16)",
    )
    p.add_argument("--json", action="store_true", help="print the trace as JSON")
    p.add_argument("--png", metavar="PATH", help="also draw input, filter and output to a PNG")
    p.set_defaults(run=_run_explain)


def _run_explain(args: argparse.Namespace) -> int:
    layout = args.layout
    x = None
    if args.input is not None:
        x = _load_array(args.input, "x")
    elif args.random is not None:
        x = random_input(args.random, layout=layout, seed=args.seed)
    if args.filter is not None:
        w = _load_array(args.filter, "weight")
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
    bias = None if args.bias is None else _parse_bias(args.bias, x)
    limit = {} if args.max_pixels is None else {"max_pixels": args.max_pixels}
    trace = explain(x, w, bias, layout=layout, **limit)
    # Draw first: a PNG that cannot be written fails the command before anything is printed.
    path = None if args.png is None else trace.to_png(args.png)
    print(json.dumps(trace.to_dict()) if args.json else trace.to_text())
    if path is not None:
        print(f"pointwise: wrote {path}", file=sys.stderr)
    return 0


# -------------------------------------------------------------------------------- models
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


# ------------------------------------------------------------------------------- analyze
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
    p.add_argument("--group-depth", metavar="N", type=_positive,
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
    from pointwise.analysis.papers import paper_table
    from pointwise.analysis.render import paper_csv
    from pointwise.analyze import analyze
    from pointwise.models import load_model

    shape = None if args.input is None else _parse(_input_shape, args.input, "--input")
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
        print(paper_csv(paper) if paper is not None
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


def _dims(text: str) -> tuple[int, ...]:
    """``"4x5x3"`` → (4, 5, 3); ``×`` and ``,`` also separate; () when it does not parse."""
    parts = text.lower().replace("×", "x").replace(",", "x").split("x")
    try:
        dims = tuple(int(s) for s in parts)
    except ValueError:
        return ()
    return dims if min(dims) >= 1 else ()


def _input_shape(text: str) -> tuple[int, ...]:
    """``"1x3x224x224"`` → (1, 3, 224, 224)."""
    dims = _dims(text)
    if len(dims) < 2:
        raise argparse.ArgumentTypeError(
            f"expected an input shape like 1x3x224x224 (NxCxHxW), but got {text!r}")
    return dims


# ---------------------------------------------------------------------------------- cost
def _add_cost(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "cost", help="the cost of a k×k conv, direct and behind a 1×1 reduction",
        description=(
            "The classic argument for 1×1 reductions (GoogLeNet, section 5): the MACs and "
            "weights of a k×k conv on an HxWxC input, and with a 1×1 conv reducing C to R "
            "channels in front of it. 'same' padding (k // 2)."
        ),
    )
    p.add_argument("--input", metavar="HxWxC", required=True,
                   help="input size, e.g. 28x28x192 (NxHxWxC for a batch)")
    p.add_argument("--conv", metavar="KxK:F", required=True,
                   help="the k×k conv and its output channels, e.g. 5x5:32")
    p.add_argument("--reduce", metavar="R", type=_positive,
                   help="channels of the 1×1 reduction in front of it, e.g. 16")
    p.add_argument("--stride", metavar="S", type=_positive, default=1,
                   help="stride of the k×k conv (default 1)")
    p.add_argument("--bias", action="store_true", help="count biases too (default: weights)")
    p.add_argument("--json", action="store_true", help="print the costs as JSON")
    p.set_defaults(run=_run_cost)


def _run_cost(args: argparse.Namespace) -> int:
    from pointwise.analysis.render import cost_dict, cost_text

    size = _parse(_shape, args.input, "--input")
    kernel, f = _parse(_conv_spec, args.conv, "--conv")
    kw = {"reduce": args.reduce, "stride": args.stride, "bias": args.bias}
    print(json.dumps(cost_dict(size, kernel, f, **kw)) if args.json
          else cost_text(size, kernel, f, **kw))
    return 0


def _parse(parse: Callable[[str], Any], text: str, option: str) -> Any:
    """``parse(text)``, its complaint as a ValueError: one line, as every other error."""
    try:
        return parse(text)
    except argparse.ArgumentTypeError as e:
        raise ValueError(f"argument {option}: {e}") from None


def _conv_spec(text: str) -> tuple[tuple[int, int], int]:
    """``"5x5:32"`` → ((5, 5), 32); ``"3:64"`` is a 3×3 conv."""
    kernel, _, filters = text.lower().replace("×", "x").partition(":")
    try:
        ks = tuple(int(s) for s in kernel.split("x"))
        f = int(filters)
    except ValueError:
        ks, f = (), 0
    if len(ks) == 1:
        ks = (ks[0], ks[0])
    if len(ks) != 2 or min(ks) < 1 or f < 1:
        raise argparse.ArgumentTypeError(
            f"expected a conv like 5x5:32 (kernel, then output channels), but got {text!r}")
    return (ks[0], ks[1]), f


# ------------------------------------------------------------------ arguments to values
def _load_array(path: str | os.PathLike[str], name: str = "x") -> np.ndarray:
    """Read an array from a ``.npy`` file (pickles refused) or a ``.json`` nested list."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in (".npy", ".json"):
        raise ValueError(f"expected a .npy or .json file for {name}, but got {str(p)!r}")
    if not p.is_file():
        raise FileNotFoundError(f"expected a file {str(p)!r} for {name}, but there is none")
    if suffix == ".json":
        try:
            value = json.loads(p.read_text(encoding="utf-8"))
        except ValueError as e:  # JSONDecodeError and UnicodeDecodeError
            raise ValueError(f"expected {str(p)!r} to hold JSON (a nested list of numbers) "
                             f"for {name}, but could not parse it: {e}") from None
        return as_array(value, name)
    try:
        arr = np.load(p, allow_pickle=False)  # loading a pickle can run any code
    except (ValueError, EOFError, OSError) as e:
        why = f"could not read it: {e}"
        if "pickle" in why.lower() or "object arrays" in why.lower():
            why = "it holds pickled Python objects, which pointwise never loads (they can run code)"
        raise ValueError(
            f"expected {str(p)!r} to be a .npy array file for {name}, but {why}"
        ) from None
    if not isinstance(arr, np.ndarray):  # an .npz archive under a .npy name
        raise ValueError(f"expected one array in {str(p)!r} for {name}, but got an archive")
    return as_array(arr, name)


def _parse_bias(text: str, x: Any = None) -> np.ndarray:
    """``"1,-2"`` → ints; ``"0.5,1"`` → floats in ``x``'s float dtype (float64 otherwise).

    Taking ``x``'s dtype lets a typed-in bias join a float32 input without a dtype clash.

    >>> _parse_bias("1, -2").tolist(), _parse_bias("0.5,1", np.zeros(1, np.float32)).dtype
    ([1, -2], dtype('float32'))
    """
    items = [s.strip() for s in text.split(",")]
    with contextlib.suppress(ValueError):
        return np.array([int(s) for s in items])
    try:
        values = [float(s) for s in items]
    except ValueError:
        raise ValueError(f"expected the bias as comma-separated numbers, e.g. 0.5,-1, "
                         f"but got {text!r}") from None
    xd = None if x is None else as_array(x, "x").dtype
    return np.array(values, dtype=xd if xd is not None and xd.kind not in "iu" else np.float64)


def _shape(text: str) -> tuple[int, ...]:
    """``"4x5x3"`` → (4, 5, 3), HxWxC or NxHxWxC."""
    dims = _dims(text)
    if len(dims) not in (3, 4):
        raise argparse.ArgumentTypeError(
            f"expected a shape like 4x5x3 (HxWxC) or 2x4x5x3 (NxHxWxC), but got {text!r}"
        )
    return dims


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, but got {text!r}")
    return value
