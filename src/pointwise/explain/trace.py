"""A 1×1 convolution written out: every pixel's dot product over channels, and its cost.

:func:`explain` runs :func:`pointwise.conv1x1` and, beside it, writes out each output value
as the sum the formula names, ``y[i, j, f] = b[f] + Σ_c x[i, j, c] · w[c, f]``. It returns a
:class:`Trace`, which renders as text (``to_text``), as a JSON-ready dict (``to_dict``) or as
annotated heatmaps (``to_png``; needs matplotlib, the ``plot`` extra). Every count comes from
:func:`pointwise.cost.conv_cost`, where the MAC convention is written once.

With no arguments it is the tutorial's worked example: a (3, 3, 2) image, one 2→1 filter.

>>> t = explain()
>>> t.lines[0].text(), t.lines[-1].text()
('pixel (0,0): 1·1 + 2·2 = 5', 'pixel (2,2): 17·1 + 18·2 = 53')
>>> t.cost.params, t.cost.macs, t.cost3x3.params, t.cost3x3.macs
(2, 18, 18, 162)
"""

from __future__ import annotations

import itertools
import math
import numbers
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pointwise.conv import conv1x1
from pointwise.cost import CONVENTION, Cost, conv_cost
from pointwise.explain.examples import AXES, tutorial_example
from pointwise.explain.text import Number, factor, fmt_number, labelled
from pointwise.layout import LAYOUTS, Problem, as_array, check_forward
from pointwise.limits import INT64_MAX, int_bound

__all__ = ["PixelLine", "Trace", "explain"]

# y as each layout indexes it; w is the weight as the matrix that check_forward returns.
_FORMULA = {
    "HWC": "y[i, j, f] = Σ_c x[i, j, c] · w[c, f]",
    "NHWC": "y[n, i, j, f] = Σ_c x[n, i, j, c] · w[c, f]",
    "CHW": "y[f, i, j] = Σ_c x[c, i, j] · w[f, c]",
    "NCHW": "y[n, f, i, j] = Σ_c x[n, c, i, j] · w[f, c]",
}
_WEIGHT_AXES = {(True, 4): "HWIO (kh, kw, C, F)", (True, 2): "(C, F)",
                (False, 4): "OIHW (F, C, kh, kw)", (False, 2): "(F, C)"}


@dataclass(frozen=True)
class PixelLine:
    """One output value written out: pixel (row, col) of image ``image``, filter ``filter``.

    ``terms`` holds one ``(x, w)`` pair per input channel; ``value`` is the operator's output.
    """

    image: int | None  # None for an unbatched layout
    row: int
    col: int
    filter: int
    terms: tuple[tuple[Number, Number], ...]
    bias: Number | None
    value: Number
    filters: int = 1  # F: the label names the filter only when there is more than one

    def text(self, max_terms: int = 8) -> str:
        """``pixel (0,0): 1·1 + 2·2 = 5``, with at most ``max_terms`` products written out."""
        label = f"pixel ({self.row},{self.col})"
        if self.image is not None:
            label = f"image {self.image} {label}"
        if self.filters > 1:
            label += f" f={self.filter}"
        parts = [f"{factor(a)}·{factor(b)}" for a, b in self.terms[:max_terms]]
        if len(self.terms) > max_terms:
            parts.append(f"… {len(self.terms) - max_terms} more terms")
        if self.bias is not None:
            parts.append(factor(self.bias))
        return f"{label}: {' + '.join(parts) or '0'} = {fmt_number(self.value)}"

    def to_dict(self) -> dict[str, Any]:
        return {"image": self.image, "row": self.row, "col": self.col, "filter": self.filter,
                "terms": [list(t) for t in self.terms], "bias": self.bias, "value": self.value}


@dataclass(frozen=True, eq=False)
class Trace:
    """What :func:`explain` found: the arrays, the written-out pixels and the costs.

    Attributes:
        input, weight, bias, output: the arrays, in ``layout`` and its weight format.
        layout: ``"HWC"``, ``"NHWC"``, ``"CHW"`` or ``"NCHW"``.
        lines: the first pixel lines (one per pixel and filter), in order.
        total_lines: how many pixel lines the whole output has, N·H·W·F.
        cost, cost3x3: the :class:`~pointwise.cost.Cost` of this 1×1 conv, and of a 3×3 conv
            with the same channels and padding 1, whose output has the same size.
    """

    input: np.ndarray
    weight: np.ndarray
    bias: np.ndarray | None
    output: np.ndarray
    layout: str
    lines: tuple[PixelLine, ...]
    total_lines: int
    cost: Cost
    cost3x3: Cost

    @property
    def channels(self) -> tuple[int, int]:
        """(C, F): input and output channels."""
        axis = -1 if LAYOUTS[self.layout][0] else -3
        return int(self.input.shape[axis]), int(self.output.shape[axis])

    @property
    def weight_format(self) -> str:
        return _WEIGHT_AXES[LAYOUTS[self.layout][0], self.weight.ndim]

    @property
    def formula(self) -> str:
        return _FORMULA[self.layout] + (" + b[f]" if self.bias is not None else "")

    def ratios(self) -> dict[str, float | None]:
        """How many times the 3×3 conv's params and MACs are the 1×1's (None for 0/0)."""
        pairs = {"params": (self.cost3x3.params, self.cost.params),
                 "macs": (self.cost3x3.macs, self.cost.macs)}
        return {k: a / b if b else None for k, (a, b) in pairs.items()}

    def to_dict(self) -> dict[str, Any]:
        """Plain lists, ints and floats only, so ``json.dumps`` takes it as it is."""
        arrays = {"input": self.input, "weight": self.weight, "bias": self.bias,
                  "output": self.output}
        return {
            "layout": self.layout,
            "weight_format": self.weight_format,
            "formula": self.formula,
            "dtype": str(self.output.dtype),
            "shapes": {k: None if a is None else list(a.shape) for k, a in arrays.items()},
            **{k: None if a is None else _plain(a) for k, a in arrays.items()},
            "pixels": [line.to_dict() for line in self.lines],
            "pixels_total": self.total_lines,
            "cost": {"convention": CONVENTION, "conv1x1": self.cost.as_dict(),
                     "conv3x3": self.cost3x3.as_dict(), "ratio": self.ratios()},
        }

    def to_text(self, max_terms: int = 8, max_items: int = 100) -> str:
        """The trace as text; arrays of more than ``max_items`` elements are summarized."""
        c, f = self.channels
        axes = AXES[self.layout]
        out = [f"1×1 convolution, layout {self.layout}: {self.formula}",
               f"  input  x {self.input.shape}  ({axes})",
               f"  filter w {self.weight.shape}  {self.weight_format}"]
        if self.bias is not None:
            out.append(f"  bias   b {self.bias.shape}")
        out += [f"  output y {self.output.shape}  ({axes.replace('C', 'F')})", "",
                labelled("x", self.input, max_items), labelled("w", self.weight, max_items)]
        if self.bias is not None:
            out.append(labelled("b", self.bias, max_items))
        out += ["", f"each output value = Σ over the {c} channels of one pixel's x · one "
                    f"filter's w ({f} filter{'s' * (f != 1)}):"]
        out += [line.text(max_terms) for line in self.lines]
        if self.total_lines > len(self.lines):
            out.append(f"… {self.total_lines - len(self.lines)} more pixel lines "
                       f"({self.total_lines} in all)")
        c1, c3, r = self.cost, self.cost3x3, self.ratios()
        times = {k: "n/a" if v is None else f"{v:.3g}×" for k, v in r.items()}
        out += ["", labelled("y", self.output, max_items), "",
                f"cost ({CONVENTION}):",
                f"  this 1×1 conv:                      {c1.params} params, {c1.macs} MACs",
                f"  a 3×3 conv, same channels, pad 1:   {c3.params} params, {c3.macs} MACs",
                f"  the 3×3 needs {times['params']} the params and {times['macs']} the MACs"]
        return "\n".join(out)

    def to_png(self, path: str | os.PathLike[str]) -> Path:
        """Draw the input channels, the filter and the output as annotated heatmaps.

        Needs matplotlib (the ``plot`` extra); see :func:`pointwise.explain.draw.draw`.
        """
        from pointwise.explain.draw import draw

        return draw(self.input, self.weight, self.output, self.layout, path, self.bias)


def explain(
    x: Any = None,
    weight: Any = None,
    bias: Any = None,
    *,
    layout: str = "HWC",
    max_pixels: int = 16,
) -> Trace:
    """Run a 1×1 conv and write out each output value as the sum of its products.

    Args:
        x, weight, bias: as for :func:`pointwise.conv1x1`; ``x`` or ``weight`` left None is
            the tutorial's (:func:`tutorial_example`). Integer arrays are widened to int64,
            so the written-out sums and the output are exact.
        layout: ``"HWC"`` (default, as the tutorial), ``"NHWC"``, ``"CHW"`` or ``"NCHW"``;
            the weight is HWIO for channels-last layouts and OIHW for channels-first ones.
        max_pixels: how many pixel lines (one per pixel and filter) to write out, in order;
            batched layouts go image by image. The rest are only counted.

    Returns:
        a :class:`Trace`. Each written-out sum is checked against the operator's output.

    Examples:
        >>> t = explain([[[1, 2]]], [[[[1, 0], [0, 1]]]], bias=[10, -1])
        >>> [line.text() for line in t.lines]
        ['pixel (0,0) f=0: 1·1 + 2·0 + 10 = 11', 'pixel (0,0) f=1: 1·0 + 2·1 + (-1) = 1']
    """
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, numbers.Integral):
        raise TypeError(f"expected max_pixels to be an int, but got {max_pixels!r}")
    if x is None or weight is None:
        tx, tw = tutorial_example(layout if layout in LAYOUTS else "HWC")
        x, weight = (tx if x is None else x), (tw if weight is None else weight)
    xa, wa = _exact(as_array(x, "x")), _exact(as_array(weight, "weight"))
    ba = None if bias is None else _exact(as_array(bias, "bias"))
    p = check_forward(xa, wa, ba, layout=layout)
    y = conv1x1(xa, wa, ba, layout=layout)
    y4 = y if p.batched else y[None]  # (N, H, W, F) channels-last, (N, F, H, W) first
    n, h, w, c, f = p.n, p.rows.out, p.cols.out, p.c, p.f
    order = itertools.product(range(n), range(h), range(w), range(f))
    lines = tuple(_line(p, y4, *at) for at in itertools.islice(order, max(0, int(max_pixels))))
    kw: dict[str, Any] = {"input_size": (h, w), "bias": ba is not None, "batch": n}
    return Trace(input=xa, weight=wa, bias=ba, output=y, layout=layout, lines=lines,
                 total_lines=n * h * w * f, cost=conv_cost(c, f, 1, **kw),
                 cost3x3=conv_cost(c, f, 3, padding=1, **kw))


# ------------------------------------------------------------------------------- helpers
def _exact(a: np.ndarray) -> np.ndarray:
    # Narrow integer types would wrap in the operator; int64 keeps every sum here exact. A
    # uint64 value beyond int64 stays as it is, for the operator to refuse (a cast would wrap).
    if a.dtype.kind not in "iu" or (a.dtype == np.uint64 and int_bound(a) > INT64_MAX):
        return a
    return a.astype(np.int64)


def _line(p: Problem, y4: np.ndarray, n: int, i: int, j: int, f: int) -> PixelLine:
    if p.channels_last:
        xs, ws, value = p.x[n, i, j, :], p.w[:, f], y4[n, i, j, f]  # (C,), (C,), ()
    else:
        xs, ws, value = p.x[n, :, i, j], p.w[f, :], y4[n, f, i, j]  # (C,), (C,), ()
    terms = tuple((_scalar(a), _scalar(b)) for a, b in zip(xs, ws, strict=True))
    b = None if p.bias is None else _scalar(p.bias[f])
    line = PixelLine(image=n if p.batched else None, row=i, col=j, filter=f, terms=terms,
                     bias=b, value=_scalar(value), filters=p.f)
    assert _agrees(line, p.dtype), f"written-out sum disagrees with conv1x1: {line.text()}"
    return line


def _agrees(line: PixelLine, dtype: np.dtype) -> bool:
    """The written-out sum equals the operator's value: exactly for ints, within rounding."""
    parts = [a * b for a, b in line.terms] + ([line.bias] if line.bias is not None else [])
    if all(isinstance(t, int) for t in parts) and isinstance(line.value, int):
        return sum(parts) == line.value
    s, v = math.fsum(float(t) for t in parts), float(line.value)
    mag = math.fsum(abs(float(t)) for t in parts)
    # eps, largest finite and smallest subnormal value; np.finfo does not know bfloat16.
    eps, top, tiny = (2.0**-7, 3.3e38, 2.0**-133) if dtype.name == "bfloat16" else (
        float(np.finfo(dtype).eps), float(np.finfo(dtype).max),
        float(np.finfo(dtype).smallest_subnormal))
    if not (math.isfinite(s) and math.isfinite(v)):  # inf/nan came in, or dtype overflowed
        return (math.isnan(s) and math.isnan(v)) or s == v or not mag <= top
    # C products and a bias round at most C + 1 times (plus one cast to a half type), each
    # by eps relative, or by up to a subnormal step below the normal range (found by fuzzing:
    # float16 1.25 · 1e-7 is 1.49e-7, stored as 1.19e-7)
    return abs(s - v) <= (len(parts) + 2) * (eps * mag + tiny)


def _scalar(v: Any) -> Number:
    return int(v) if np.asarray(v).dtype.kind in "iu" else float(v)


def _plain(a: np.ndarray) -> Any:
    return a.tolist() if a.dtype.kind in "iu" else a.astype(np.float64).tolist()
