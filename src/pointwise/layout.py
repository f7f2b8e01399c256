"""Layout conventions and argument checks: every argument is checked once, here.

A layout names the axis order of ``x`` and, with it, the weight format of the framework that
uses that order (DESIGN.md, "Layouts and weight formats"):

=======  ==============  =========================  ==================  ==========
layout   x               weight (4-D)               weight (2-D)        convention
=======  ==============  =========================  ==================  ==========
NHWC     (N, H, W, C)    (1, 1, C/G, F)  HWIO       (C/G, F)            TensorFlow
HWC      (H, W, C)       (1, 1, C/G, F)  HWIO       (C/G, F)            the tutorial
NCHW     (N, C, H, W)    (F, C/G, 1, 1)  OIHW       (F, C/G)            PyTorch
CHW      (C, H, W)       (F, C/G, 1, 1)  OIHW       (F, C/G)            PyTorch
=======  ==============  =========================  ==================  ==========

Everything past this module sees a :class:`~pointwise.problem.Problem`: ``x`` as a 4-D
batched view in its layout's axis order, the weight as a 2-D matrix, and every size already
validated. Messages
follow "expected X, but got Y", name every shape involved and, where one exists, the fix.
"""

from __future__ import annotations

import difflib
import operator
from typing import Any

import numpy as np

from pointwise.limits import check_int64_sums, check_output_fits, int_bound
from pointwise.problem import Geometry, Problem, output_size

__all__ = [
    "ACTIVATIONS",
    "LAYOUTS",
    "Geometry",
    "Problem",
    "check_backward",
    "check_forward",
    "output_size",
]

#: layout -> (channels_last, batched)
LAYOUTS: dict[str, tuple[bool, bool]] = {
    "NHWC": (True, True),
    "HWC": (True, False),
    "NCHW": (False, True),
    "CHW": (False, False),
}

#: Activations that the operator can fuse; pointwise.activations implements each one.
ACTIVATIONS: tuple[str, ...] = ("relu", "relu6", "silu", "hardswish")

# Half types are stored as themselves but accumulate in float32.
def _is_half(dtype: np.dtype) -> bool:
    # float16, or ml_dtypes' bfloat16 (looked up by name: ml_dtypes is never imported here)
    return dtype.itemsize == 2 and (dtype.kind == "f" or dtype.name == "bfloat16")


def _fmt(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(s) for s in shape) + (",)" if len(shape) == 1 else ")")


def as_array(value: Any, name: str) -> np.ndarray:
    """Turn a list or array into a numeric ndarray, rejecting what cannot be convolved."""
    try:
        arr = np.asarray(value)
    except ValueError as e:  # ragged nested lists
        raise ValueError(f"expected {name} to be a rectangular array, but got {e}") from None
    if not arr.dtype.isnative:  # big-endian data (a file from another machine): same values
        arr = arr.astype(arr.dtype.newbyteorder("="))
    kind = arr.dtype.kind
    if kind in "iu":
        return arr
    if kind == "f" or arr.dtype.name == "bfloat16":
        return arr
    if kind == "b":
        raise TypeError(
            f"expected {name} to be a numeric array, but got dtype bool; "
            f"convert it with {name}.astype(np.int64) or .astype(np.float32)"
        )
    raise TypeError(
        f"expected {name} to be an integer or floating array, but got dtype {arr.dtype}"
        f" (from {type(value).__name__})"
    )


def _pair(value: Any, name: str, minimum: int) -> tuple[int, int]:
    vals = value if isinstance(value, (tuple, list)) else (value, value)
    if len(vals) != 2:
        raise ValueError(f"expected {name} to be an int or an (h, w) pair, but got {value!r}")
    out = []
    for v in vals:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"expected {name} to hold ints, but got {value!r}")
        if v < minimum:
            raise ValueError(f"expected {name} >= {minimum}, but got {name}={value!r}")
        out.append(operator.index(v))
    return out[0], out[1]


def check_layout(layout: Any) -> tuple[bool, bool]:
    if not isinstance(layout, str) or layout.upper() not in LAYOUTS:
        raise ValueError(
            f"expected layout to be one of {', '.join(map(repr, LAYOUTS))}, but got {layout!r}"
        )
    if layout != layout.upper():
        raise ValueError(
            f"expected layout in upper case, but got {layout!r}; use {layout.upper()!r}"
        )
    return LAYOUTS[layout]


def check_activation(activation: Any) -> str | None:
    if activation is None or activation in ACTIVATIONS:
        return activation
    close = difflib.get_close_matches(str(activation).lower(), list(ACTIVATIONS), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ValueError(
        f"expected activation to be None or one of {', '.join(map(repr, ACTIVATIONS))}, "
        f"but got {activation!r}{hint}"
    )


def _result_dtype(x: np.ndarray, w: np.ndarray, b: np.ndarray | None) -> np.dtype:
    """Integers stay exact; a float dtype wins, but two different float dtypes are an error."""
    arrays = {"x": x, "weight": w} if b is None else {"x": x, "weight": w, "bias": b}
    floats = {k: a.dtype for k, a in arrays.items() if a.dtype.kind not in "iu"}
    if len(set(floats.values())) > 1:
        what = ", ".join(f"{k} is {d}" for k, d in floats.items())
        raise TypeError(
            f"expected x, weight and bias to share one floating dtype, but got {what}; "
            f"cast them to one dtype first, e.g. weight.astype(x.dtype)"
        )
    if floats:
        return next(iter(floats.values()))
    # Integers accumulate and return in int64, so int8 · int8 sums do not wrap around.
    return np.dtype(np.int64)


def _expected_weight(channels_last: bool, cg: int, ndim: int) -> str:
    if channels_last:
        return f"(1, 1, {cg}, F)" if ndim == 4 else f"({cg}, F)"
    return f"(F, {cg}, 1, 1)" if ndim == 4 else f"(F, {cg})"


def _check_weight(
    w: np.ndarray, channels_last: bool, layout: str, x_shape: tuple[int, ...], c: int, groups: int
) -> np.ndarray:
    """Return the weight as a matrix, (C/G, F) channels-last or (F, C/G) channels-first."""
    fmt = "HWIO (kh, kw, in/groups, out)" if channels_last else "OIHW (out, in/groups, kh, kw)"

    def ctx() -> str:  # built only when there is an error to report
        shapes = f"weight of shape {_fmt(w.shape)} for x of shape {_fmt(x_shape)}"
        return f"{shapes} in layout {layout!r}"

    if w.ndim not in (2, 4):
        hint = ""
        if w.ndim == 3 and channels_last and w.shape[:2] == (1, 1):
            hint = (
                "; a (1, 1, C) filter is one output channel: "
                f"use weight.reshape(1, 1, {w.shape[2]}, 1)"
            )
        raise ValueError(
            f"expected a 4-D {fmt} or 2-D weight, but got a {w.ndim}-D {ctx()}{hint}"
        )
    if w.ndim == 4:
        kernel = w.shape[:2] if channels_last else w.shape[2:]
        other = w.shape[2:] if channels_last else w.shape[:2]
        if kernel != (1, 1):
            if other == (1, 1):
                want = "HWIO (1, 1, C/G, F)" if channels_last else "OIHW (F, C/G, 1, 1)"
                perm = "(2, 3, 1, 0)" if channels_last else "(3, 2, 0, 1)"  # OIHW<->HWIO
                swap = {"NHWC": "NCHW", "HWC": "CHW", "NCHW": "NHWC", "CHW": "HWC"}[layout]
                raise ValueError(
                    f"expected {want} weights in layout {layout!r}, but got {ctx()}, "
                    f"which looks like {'OIHW' if channels_last else 'HWIO'}; use "
                    f"weight.transpose{perm}, or pass x in layout={swap!r}"
                )
            raise ValueError(
                f"expected a 1×1 kernel, but got a {kernel[0]}×{kernel[1]} kernel in {ctx()} "
                f"({fmt}); pointwise computes 1×1 convolutions only"
            )
        mat = w[0, 0] if channels_last else w[:, :, 0, 0]
    else:
        mat = w
    cg = c // groups
    have = mat.shape[0] if channels_last else mat.shape[1]
    if have != cg:
        expected = _expected_weight(channels_last, cg, w.ndim)
        per = f"{c} input channels" + (f" / {groups} groups" if groups > 1 else "")
        msg = f"expected weight of shape {expected} ({per}), but got {ctx()}"
        # The tutorial's TensorFlow snippet swaps in/out channels: suggest the swap when it fits.
        f_guess = mat.shape[1] if channels_last else mat.shape[0]
        if f_guess == cg:
            swapped = list(w.shape)
            i, j = (-2, -1) if (channels_last or w.ndim == 2) else (0, 1)
            swapped[i], swapped[j] = swapped[j], swapped[i]
            msg += f"; did you mean shape {_fmt(tuple(swapped))}"
            if w.size <= 8:
                lit = np.swapaxes(w, i, j).tolist()
                msg += f", i.e. {lit}"
            msg += "? (the input-channel and output-channel axes look swapped)"
        raise ValueError(msg)
    f = mat.shape[1] if channels_last else mat.shape[0]
    if groups > 1 and f % groups:
        raise ValueError(
            f"expected the {f} output channels of {ctx()} to be divisible by groups={groups}, "
            f"but got a remainder of {f % groups}; pick groups that divide F"
        )
    return mat


def check_forward(
    x: Any,
    weight: Any,
    bias: Any = None,
    *,
    layout: Any = "NHWC",
    stride: Any = 1,
    padding: Any = 0,
    groups: Any = 1,
    activation: Any = None,
) -> Problem:
    """Validate a forward call and return it in canonical form."""
    channels_last, batched = check_layout(layout)
    act = check_activation(activation)
    sh, sw = _pair(stride, "stride", 1)
    ph, pw = _pair(padding, "padding", 0)
    if isinstance(groups, bool) or not isinstance(groups, (int, np.integer)):
        raise TypeError(f"expected groups to be an int, but got {groups!r}")
    if groups < 1:
        raise ValueError(f"expected groups >= 1, but got groups={groups}")
    groups = int(groups)

    xa = as_array(x, "x")
    wa = as_array(weight, "weight")
    ndim = 4 if batched else 3
    if xa.ndim != ndim:
        hint = ""
        if xa.ndim == 3 and batched:
            hint = (
                f"; for a single image use layout={layout[1:]!r}, "
                "or add a batch axis with x[None]"
            )
        elif xa.ndim == 4 and not batched:
            hint = f"; for a batch use layout={'N' + layout!r}"
        raise ValueError(
            f"expected a {ndim}-D x {tuple(layout)} for layout {layout!r}, "
            f"but got x of shape {_fmt(xa.shape)}{hint}"
        )
    x4 = xa if batched else xa[None]
    c = int(x4.shape[3] if channels_last else x4.shape[1])
    if c % groups:
        raise ValueError(
            f"expected the {c} input channels of x of shape {_fmt(xa.shape)} to be divisible by "
            f"groups={groups}, but got a remainder of {c % groups}; pick groups that divide C"
        )
    w2 = _check_weight(wa, channels_last, layout, xa.shape, c, groups)
    f = int(w2.shape[1] if channels_last else w2.shape[0])

    ba = None
    if bias is not None:
        ba = as_array(bias, "bias")
        if ba.shape != (f,):
            raise ValueError(
                f"expected bias of shape ({f},) to match weight of shape {_fmt(wa.shape)}, "
                f"but got bias of shape {_fmt(ba.shape)}"
            )
    dtype = _result_dtype(xa, wa, ba)
    if act in ("silu", "hardswish") and dtype.kind in "iu":
        raise TypeError(
            f"expected floating inputs for activation={act!r}, but got integer dtype {dtype}; "
            f"cast x and weight with .astype(np.float32)"
        )
    if dtype.kind in "iu":
        check_int64_sums("the output", [(int_bound(xa) * int_bound(wa), c // groups),
                                         (int_bound(ba), 1)])
    compute = np.dtype(np.float32) if _is_half(dtype) else dtype
    h, w_ = (x4.shape[1], x4.shape[2]) if channels_last else (x4.shape[2], x4.shape[3])
    rows, cols = Geometry.of(int(h), ph, sh), Geometry.of(int(w_), pw, sw)
    check_output_fits((x4.shape[0], rows.out, cols.out, f), dtype.itemsize, xa.shape,
                      (ph, pw), (sh, sw))
    return Problem(
        x=x4,
        w=w2,
        bias=ba,
        layout=layout,
        channels_last=channels_last,
        batched=batched,
        groups=groups,
        activation=act,
        rows=rows,
        cols=cols,
        dtype=dtype,
        compute_dtype=compute,
        weight_shape=tuple(wa.shape),
        x_shape=tuple(xa.shape),
    )


def check_out(out: Any, p: Problem, inputs: tuple[np.ndarray | None, ...]) -> np.ndarray:
    """Validate a preallocated result: exact shape and dtype, writeable, no overlap with inputs."""
    if not isinstance(out, np.ndarray):
        raise TypeError(f"expected out to be a numpy.ndarray, but got {type(out).__name__}")
    if out.shape != p.out_shape or out.dtype != p.dtype:
        order = ""
        if out.dtype.newbyteorder("=") == p.dtype:
            order = (f" (byte order {out.dtype.str!r}: the result is written in the machine's "
                     f"native byte order; convert afterwards with .astype({out.dtype.str!r}))")
        raise ValueError(
            f"expected out of shape {_fmt(p.out_shape)} and dtype {p.dtype}, "
            f"but got shape {_fmt(out.shape)} and dtype {out.dtype}{order}"
        )
    if not out.flags.writeable:
        raise ValueError("expected a writeable out array, but got a read-only one")
    for a in inputs:
        if a is not None and np.may_share_memory(out, a):
            raise ValueError(
                "expected out not to overlap x, weight or bias, but it shares memory with one; "
                "the result would overwrite inputs still being read"
            )
    return out


def check_backward(grad_out: Any, p: Problem, y: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """Validate the incoming gradient (and optional forward output) against the forward call."""
    g = as_array(grad_out, "grad_out")
    if g.shape != p.out_shape:
        raise ValueError(
            f"expected grad_out of shape {_fmt(p.out_shape)} (the output for x of shape "
            f"{_fmt(p.x_shape)}), but got grad_out of shape {_fmt(g.shape)}"
        )
    ya = None
    if y is not None:
        ya = as_array(y, "y")
        if ya.shape != p.out_shape:
            raise ValueError(
                f"expected y of shape {_fmt(p.out_shape)} (the forward output), "
                f"but got y of shape {_fmt(ya.shape)}"
            )
    if p.dtype.kind in "iu":
        if g.dtype.kind not in "iu":
            raise TypeError(
                f"expected an integer grad_out for integer x and weight (their gradients are "
                f"exact int64), but got grad_out of dtype {g.dtype}; cast x and weight to "
                f"{g.dtype} for a floating backward"
            )
        gm, pixels = int_bound(g), p.n * p.rows.out * p.cols.out
        check_int64_sums("grad_x", [(gm * int_bound(p.w), p.f // p.groups)])
        check_int64_sums("grad_weight", [(gm * int_bound(p.x),
                                           p.n * p.rows.count * p.cols.count)])
        check_int64_sums("grad_bias", [(gm, pixels)])
    return g, ya
