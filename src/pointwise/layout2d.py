"""Argument checks of :func:`pointwise.conv2d`: the k×k kernel, its padding and dilation.

The conventions are :mod:`pointwise.layout`'s (the same layouts, weight formats, dtypes and
messages); this module adds what a kernel larger than 1×1 brings:

* the weight is 4-D, (kh, kw, C/G, F) HWIO for channels-last layouts and (F, C/G, kh, kw)
  OIHW for channels-first ones;
* ``dilation`` spreads the taps: tap (i, j) reads the input at
  ``(y·s − p_top + i·d, x·s − p_left + j·d)``;
* ``padding`` is an int, an (h, w) pair, ``"valid"`` (0) or ``"same"``: the output has
  ``ceil(H / s)`` pixels per axis and the ``d·(k − 1) + 1 − H + (Ho − 1)·s`` pixels of
  padding this needs go half on each side, the odd one at the bottom or right, as in
  TensorFlow (at stride 1 this is also PyTorch's ``"same"``);
* output size per axis: ``(H + p_top + p_bottom − d·(k − 1) − 1) // s + 1``, which must be
  at least 1;
* ``residual``, the output's shape, is added before the activation; it takes part in the
  dtype rule as the bias does.

Everything below sees a :class:`Problem2d`: ``x`` as a 4-D view in its layout's axis order,
the weight as an HWIO view whatever the layout, and every size checked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from pointwise.layout import (
    _fmt,
    _is_half,
    _pair,
    _result_dtype,
    as_array,
    check_activation,
    check_layout,
)

__all__ = ["Problem2d", "check_conv2d", "conv2d_output_size"]


def conv2d_output_size(size: int, kernel: int, stride: int, before: int, after: int,
                       dilation: int) -> int:
    """Output length of one axis: ``(size + before + after − d·(k − 1) − 1) // s + 1``."""
    return (size + before + after - dilation * (kernel - 1) - 1) // stride + 1


@dataclass(frozen=True)
class Problem2d:
    """A validated k×k conv call, in canonical form.

    ``x`` is 4-D, (N, H, W, C) when ``channels_last`` else (N, C, H, W), a view of the
    caller's array. ``w`` is the weight as an (kh, kw, C/G, F) HWIO view in every layout.
    ``residual`` is 4-D in the output's canonical shape, or None. ``pad`` is
    (top, bottom, left, right).
    """

    x: np.ndarray
    w: np.ndarray
    bias: np.ndarray | None
    residual: np.ndarray | None
    layout: str
    channels_last: bool
    batched: bool
    groups: int
    activation: str | None
    stride: tuple[int, int]
    pad: tuple[int, int, int, int]
    dilation: tuple[int, int]
    out_hw: tuple[int, int]
    dtype: np.dtype  # result dtype
    compute_dtype: np.dtype  # float32 for half types, else dtype

    @property
    def kernel(self) -> tuple[int, int]:
        return int(self.w.shape[0]), int(self.w.shape[1])

    @property
    def n(self) -> int:
        return int(self.x.shape[0])

    @property
    def c(self) -> int:
        return int(self.x.shape[3] if self.channels_last else self.x.shape[1])

    @property
    def f(self) -> int:
        return int(self.w.shape[3])

    @property
    def x_nhwc(self) -> np.ndarray:
        """``x`` as an (N, H, W, C) view, whatever the layout."""
        return self.x if self.channels_last else self.x.transpose(0, 2, 3, 1)

    @property
    def out_shape4(self) -> tuple[int, int, int, int]:
        ho, wo = self.out_hw
        return (self.n, ho, wo, self.f) if self.channels_last else (self.n, self.f, ho, wo)

    @property
    def out_shape(self) -> tuple[int, ...]:
        return self.out_shape4 if self.batched else self.out_shape4[1:]


def _padding(padding: Any, hw: tuple[int, int], kernel: tuple[int, int],
             stride: tuple[int, int], dilation: tuple[int, int]) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) from an int, a pair, ``"valid"`` or ``"same"``."""
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0, 0, 0)
        if padding != "same":
            raise ValueError(f"expected padding to be an int, an (h, w) pair, 'same' or "
                             f"'valid', but got {padding!r}")
        out = []
        for size, k, s, d in zip(hw, kernel, stride, dilation, strict=True):
            total = max(0, (-(-size // s) - 1) * s + d * (k - 1) + 1 - size)
            out += [total // 2, total - total // 2]
        return out[0], out[1], out[2], out[3]
    ph, pw = _pair(padding, "padding", 0)
    return (ph, ph, pw, pw)


def _weight(w: np.ndarray, channels_last: bool, layout: str, x_shape: tuple[int, ...],
            c: int, groups: int) -> np.ndarray:
    """The weight as an HWIO view, checked against C and the groups."""
    fmt = "HWIO (kh, kw, C/G, F)" if channels_last else "OIHW (F, C/G, kh, kw)"
    ctx = f"weight of shape {_fmt(w.shape)} for x of shape {_fmt(x_shape)} in layout {layout!r}"
    if w.ndim != 4:
        hint = "; a 2-D weight is a 1×1 conv: use pointwise.conv1x1" if w.ndim == 2 else ""
        raise ValueError(f"expected a 4-D {fmt} weight, but got a {w.ndim}-D {ctx}{hint}")
    hwio = w if channels_last else w.transpose(2, 3, 1, 0)  # (F, C/G, kh, kw) -> HWIO
    cg = c // groups
    if hwio.shape[2] != cg:
        want = f"(kh, kw, {cg}, F)" if channels_last else f"(F, {cg}, kh, kw)"
        per = f"{c} input channels" + (f" / {groups} groups" if groups > 1 else "")
        msg = f"expected weight of shape {want} ({per}), but got {ctx}"
        if w.shape[1 if channels_last else 2] == cg:  # C/G where the other format has it
            swap = {"NHWC": "NCHW", "HWC": "CHW", "NCHW": "NHWC", "CHW": "HWC"}[layout]
            perm = "(2, 3, 1, 0)" if channels_last else "(3, 2, 0, 1)"  # OIHW <-> HWIO
            msg += (f", which looks like {'OIHW' if channels_last else 'HWIO'}; use "
                    f"weight.transpose{perm}, or pass x in layout={swap!r}")
        raise ValueError(msg)
    f = int(hwio.shape[3])
    if hwio.shape[0] < 1 or hwio.shape[1] < 1:
        raise ValueError(f"expected a kernel of at least 1×1, but got {ctx}")
    if groups > 1 and f % groups:
        raise ValueError(f"expected the {f} output channels of {ctx} to be divisible by "
                         f"groups={groups}, but got a remainder of {f % groups}")
    return hwio


def check_conv2d(x: Any, weight: Any, bias: Any = None, *, layout: Any = "NHWC",
                 stride: Any = 1, padding: Any = 0, dilation: Any = 1, groups: Any = 1,
                 activation: Any = None, residual: Any = None) -> Problem2d:
    """Validate a :func:`pointwise.conv2d` call and return it in canonical form."""
    channels_last, batched = check_layout(layout)
    act = check_activation(activation)
    st = _pair(stride, "stride", 1)
    dil = _pair(dilation, "dilation", 1)
    if isinstance(groups, bool) or not isinstance(groups, (int, np.integer)) or groups < 1:
        raise ValueError(f"expected groups to be an int >= 1, but got groups={groups!r}")
    groups = int(groups)
    xa, wa = as_array(x, "x"), as_array(weight, "weight")
    ndim = 4 if batched else 3
    if xa.ndim != ndim:
        raise ValueError(f"expected a {ndim}-D x {tuple(layout)} for layout {layout!r}, but "
                         f"got x of shape {_fmt(xa.shape)}")
    x4 = xa if batched else xa[None]
    c = int(x4.shape[3] if channels_last else x4.shape[1])
    if c % groups:
        raise ValueError(f"expected the {c} input channels of x of shape {_fmt(xa.shape)} to "
                         f"be divisible by groups={groups}, but got a remainder of {c % groups}")
    w = _weight(wa, channels_last, layout, xa.shape, c, groups)
    kernel = (int(w.shape[0]), int(w.shape[1]))
    hw = (int(x4.shape[1]), int(x4.shape[2])) if channels_last else (int(x4.shape[2]),
                                                                      int(x4.shape[3]))
    pad = _padding(padding, hw, kernel, st, dil)
    out_hw = (conv2d_output_size(hw[0], kernel[0], st[0], pad[0], pad[1], dil[0]),
              conv2d_output_size(hw[1], kernel[1], st[1], pad[2], pad[3], dil[1]))
    if min(out_hw) < 1:
        raise ValueError(
            f"expected the {kernel[0]}×{kernel[1]} kernel (dilation {dil}) to fit in the padded "
            f"input, but x of shape {_fmt(xa.shape)} with padding {padding!r} gives an output "
            f"of {out_hw[0]}×{out_hw[1]} pixels; pad more, or use a smaller kernel")
    f = int(w.shape[3])
    ba = None
    if bias is not None:
        ba = as_array(bias, "bias")
        if ba.shape != (f,):
            raise ValueError(f"expected bias of shape ({f},) to match weight of shape "
                             f"{_fmt(wa.shape)}, but got bias of shape {_fmt(ba.shape)}")
    dtype = _result_dtype(xa, wa, ba)
    ra = None
    if residual is not None:
        ra = as_array(residual, "residual")
        n = int(x4.shape[0])
        shape4 = (n, *out_hw, f) if channels_last else (n, f, *out_hw)
        want = shape4 if batched else shape4[1:]
        if ra.shape != want:
            raise ValueError(f"expected residual of shape {_fmt(want)} (the output's, layout "
                             f"{layout!r}), but got shape {_fmt(ra.shape)}")
        if ra.dtype.kind not in "iu" and dtype.kind in "iu":
            dtype = ra.dtype  # integers mixed with a float residual: the float wins
        elif ra.dtype.kind not in "iu" and ra.dtype != dtype:
            raise TypeError(f"expected residual of dtype {dtype} (the output's), but got "
                            f"{ra.dtype}; cast it with residual.astype({dtype.name})")
        ra = ra if batched else ra[None]
    if act in ("silu", "hardswish") and dtype.kind in "iu":
        raise TypeError(f"expected floating inputs for activation={act!r}, but got integer "
                        f"dtype {dtype}; cast x and weight with .astype(np.float32)")
    return Problem2d(
        x=x4, w=w, bias=ba, residual=ra, layout=layout, channels_last=channels_last,
        batched=batched, groups=groups, activation=act, stride=st, pad=pad, dilation=dil,
        out_hw=out_hw, dtype=dtype, compute_dtype=np.dtype(np.float32) if _is_half(dtype)
        else dtype)
