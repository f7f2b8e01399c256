"""A k×k convolution written out as k² 1×1 convolutions on shifted views, summed.

Tap (i, j) of the kernel reads the input shifted by ``(i·d − p, j·d − p)`` (zeros where the
shift leaves the image) and multiplies every pixel of that view by the (C, F) matrix
``w[i, j]``: a 1×1 convolution, :func:`pointwise.conv1x1` itself. :func:`explain_taps` shows
each tap's view and its partial result, the running sum, and checks the total against
:func:`pointwise.conv2d`, which computes the same sum without ever making the views.

>>> t = explain_taps()
>>> len(t.taps), t.taps[4].shift, t.output[..., 0].tolist()
(9, (0, 0), [[-65, -81, -53], [-123, -119, -50], [-48, -10, 78]])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from pointwise.conv import conv1x1
from pointwise.conv2d import conv2d
from pointwise.cost import CONVENTION, Cost, conv_cost_for_output
from pointwise.explain.examples import AXES, random_filter, tutorial_example
from pointwise.explain.text import labelled
from pointwise.layout import LAYOUTS, as_array
from pointwise.layout2d import check_conv2d

__all__ = ["Tap", "TapsTrace", "explain_taps"]


@dataclass(frozen=True, eq=False)
class Tap:
    """Tap (i, j): the input view it reads, its 1×1 product, and the sum so far.

    ``view`` is the input shifted by ``shift`` (output-sized, zeros in the padding),
    ``weight`` the (C, F) matrix ``w[i, j]``, ``partial = conv1x1(view, weight)`` and
    ``running`` the sum of the partials of this tap and the ones before. All in the layout.
    """

    i: int
    j: int
    shift: tuple[int, int]
    view: np.ndarray
    weight: np.ndarray
    partial: np.ndarray
    running: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        return {"tap": [self.i, self.j], "shift": list(self.shift), "view": _plain(self.view),
                "weight": _plain(self.weight), "partial": _plain(self.partial),
                "running": _plain(self.running)}


@dataclass(frozen=True, eq=False)
class TapsTrace:
    """What :func:`explain_taps` found: the arrays, one :class:`Tap` per tap, the costs.

    ``cost`` is the k×k conv's (:func:`pointwise.cost.conv_cost`) and ``cost1x1`` that of one
    of its taps, a 1×1 conv of the same channels over the same output pixels.
    """

    input: np.ndarray
    weight: np.ndarray
    bias: np.ndarray | None
    output: np.ndarray
    layout: str
    kernel: tuple[int, int]
    pad: tuple[int, int, int, int]
    taps: tuple[Tap, ...]
    cost: Cost
    cost1x1: Cost

    def to_dict(self) -> dict[str, Any]:
        """Plain lists and numbers, for ``json.dumps``."""
        return {"layout": self.layout, "kernel": list(self.kernel), "padding": list(self.pad),
                "input": _plain(self.input), "weight": _plain(self.weight),
                "bias": None if self.bias is None else _plain(self.bias),
                "output": _plain(self.output), "taps": [t.to_dict() for t in self.taps],
                "cost": {"convention": CONVENTION, "conv": self.cost.as_dict(),
                         "tap": self.cost1x1.as_dict()}}

    def to_text(self, max_items: int = 100) -> str:
        kh, kw = self.kernel
        n = len(self.taps)
        axes = AXES[self.layout]
        fmt = "HWIO (kh, kw, C, F)" if LAYOUTS[self.layout][0] else "OIHW (F, C, kh, kw)"
        top, bottom, left, right = self.pad
        out = [f"{kh}×{kw} convolution as {n} 1×1 convolutions on shifted views, summed",
               f"  layout {self.layout}; zero padding: top {top}, bottom {bottom}, left {left}, "
               f"right {right}",
               "  y = Σ over taps (i, j) of conv1x1(x shifted by (i − top, j − left), w[i, j])"
               + (" + b" if self.bias is not None else ""),
               f"  input  x {self.input.shape}  ({axes})",
               f"  filter w {self.weight.shape}  {fmt}",
               f"  output y {self.output.shape}  ({axes.replace('C', 'F')})", "",
               labelled("x", self.input, max_items)]
        for t in self.taps:
            dy, dx = t.shift
            out += ["", f"tap ({t.i},{t.j}): x shifted by ({dy:+d}, {dx:+d}), zeros outside "
                    f"the image, times w[{t.i}, {t.j}]",
                    labelled("  view", t.view, max_items),
                    labelled(f"  w[{t.i}, {t.j}]", t.weight, max_items),
                    labelled("  partial", t.partial, max_items),
                    labelled("  sum so far", t.running, max_items)]
        c, t1 = self.cost, self.cost1x1
        out += ["", (f"y = the sum of the {n} partials" + (" + b" if self.bias is not None
                                                          else "")
                     + " (pointwise.conv2d computes it without making the views):"),
                labelled("y", self.output, max_items), "",
                f"cost ({CONVENTION}):",
                f"  {'one tap, a 1×1 conv:':<24} {t1.params} params, {t1.macs} MACs",
                f"  {f'the {kh}×{kw} conv, {n} taps:':<24} {c.params} params, {c.macs} MACs"]
        return "\n".join(out)


def explain_taps(x: Any = None, weight: Any = None, bias: Any = None, *, layout: str = "HWC",
                 kernel: int = 3, padding: int | tuple[int, int] | str = "same",
                 stride: int | tuple[int, int] = 1,
                 dilation: int | tuple[int, int] = 1) -> TapsTrace:
    """Run a k×k conv and write it out as k² 1×1 convs on shifted views, summed.

    Args:
        x, weight, bias: as for :func:`pointwise.conv2d`; ``x`` left None is the tutorial's
            (3, 3, 2) input, ``weight`` left None a random kernel×kernel filter of integers
            −3..3 with one output channel (:func:`random_filter`). Integers stay exact.
        layout, padding, stride, dilation: as for :func:`pointwise.conv2d` (default padding
            ``"same"``: the output has the input's size at stride 1).
        kernel: the kernel size of the default filter; a given ``weight`` has its own.

    Returns:
        a :class:`TapsTrace`; the sum of the partials is checked against ``pointwise.conv2d``.
    """
    if x is None:
        x = tutorial_example(layout if layout in LAYOUTS else "HWC")[0]
    xa = _exact(as_array(x, "x"))
    wa = (random_filter(xa, 1, layout=layout, kernel=kernel) if weight is None
          else _exact(as_array(weight, "weight")))
    ba = None if bias is None else _exact(as_array(bias, "bias"))
    p = check_conv2d(xa, wa, ba, layout=layout, stride=stride, padding=padding,
                     dilation=dilation)
    top, bottom, left, right = p.pad
    x4 = p.x_nhwc  # (N, H, W, C)
    xp = np.pad(x4, ((0, 0), (top, bottom), (left, right), (0, 0)))  # the zeros, made here
    (ho, wo), (sy, sx), (dy, dx) = p.out_hw, p.stride, p.dilation
    taps, running = [], None
    for i in range(p.kernel[0]):
        for j in range(p.kernel[1]):
            view = xp[:, i * dy : i * dy + (ho - 1) * sy + 1 : sy,
                      j * dx : j * dx + (wo - 1) * sx + 1 : sx]  # (N, Ho, Wo, C)
            w_ij = p.w[i, j]  # (C, F)
            partial = conv1x1(view, w_ij)  # (N, Ho, Wo, F): the tutorial's operator
            running = partial if running is None else running + partial
            taps.append(Tap(i, j, (i * dy - top, j * dx - left), _layout(view, p),
                            w_ij if p.channels_last else w_ij.T, _layout(partial, p),
                            _layout(running, p)))
    y = conv2d(xa, wa, ba, layout=layout, stride=stride, padding=padding, dilation=dilation)
    assert running is not None  # a kernel has at least one tap
    total = _layout(running if ba is None else running + ba, p)
    exact = y.dtype.kind in "iu"
    assert (np.array_equal(total, y) if exact else np.allclose(total, y, rtol=1e-5,
                                                                 atol=1e-6)), \
        "the sum of the taps disagrees with pointwise.conv2d"
    kw: dict[str, Any] = {"input_size": tuple(x4.shape[1:3]), "output_size": (ho, wo),
                          "bias": ba is not None, "batch": p.n}
    return TapsTrace(input=xa, weight=wa, bias=ba, output=y, layout=layout, kernel=p.kernel,
                     pad=p.pad, taps=tuple(taps),
                     cost=conv_cost_for_output(p.c, p.f, p.kernel, **kw),
                     cost1x1=conv_cost_for_output(p.c, p.f, 1, **{**kw, "bias": False}))


def _layout(a4: np.ndarray, p: Any) -> np.ndarray:
    """(N, H, W, ·) -> the layout's own order."""
    a = a4 if p.channels_last else a4.transpose(0, 3, 1, 2)
    return a if p.batched else a[0]


def _exact(a: np.ndarray) -> np.ndarray:
    return a.astype(np.int64) if a.dtype.kind in "iu" else a


def _plain(a: np.ndarray) -> Any:
    return a.tolist() if a.dtype.kind in "iu" else a.astype(np.float64).tolist()
