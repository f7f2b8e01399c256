"""A lean path for plain calls of :func:`pointwise.conv1x1`.

The full path validates every argument into a :class:`pointwise.layout.Problem` and plans
blocks; for the tutorial's 3×3×2 image that bookkeeping costs ~20 µs against ~1 µs of
arithmetic. Here a handful of exact type and shape tests recognise the commonest call:
float32/float64 ndarrays of one dtype, stride 1, no padding, one group, activation None,
ReLU or ReLU6, and an ``out=`` (if any) that is exact, C-contiguous, aligned and overlaps
nothing.

* float32 goes to the compiled kernels (:mod:`pointwise.kernels.native`) at any size, when they
  are built and take the operands (a view needs no copy): they fuse bias and ReLU, so the
  full path's blocks would add nothing but the planning;
* otherwise, at most ``MAX_MACS`` multiply-adds (where the planning is a sizeable share of
  the time) make one NumPy GEMM.

Anything else, including every call that the full path rejects, returns None, and the caller
takes the full path, so errors and results never differ between them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pointwise.kernels import native as _native

# Above this many multiply-adds the arithmetic (≥ ~20 µs) outweighs the full path's planning,
# and a fused call's epilogue is better done block by block while the block is in cache.
MAX_MACS = 1 << 21
_FLOATS = frozenset("fd")  # float32, float64
_ACTS = frozenset(("relu", "relu6"))
_CHANNELS_LAST = {"NHWC": 4, "HWC": 3}
_CHANNELS_FIRST = {"NCHW": 4, "CHW": 3}


def _matrix(w: np.ndarray, channels_last: bool) -> np.ndarray | None:
    """The weight as (C, F) channels-last or (F, C) channels-first, or None if not 1×1."""
    if w.ndim == 2:
        return w
    if w.ndim != 4:
        return None
    if channels_last and w.shape[0] == 1 and w.shape[1] == 1:  # HWIO (1, 1, C, F)
        return w.reshape(w.shape[2], w.shape[3])
    if not channels_last and w.shape[2] == 1 and w.shape[3] == 1:  # OIHW (F, C, 1, 1)
        return w.reshape(w.shape[0], w.shape[1])
    return None


def _on_kernels(x: np.ndarray, w: np.ndarray, y: np.ndarray, bias: np.ndarray | None,
                act: int, channels_last: bool, pixels: int, c: int, f: int, macs: int) -> bool:
    """The conv of a C-contiguous x on the compiled kernels, if they take the operands;
    False, with nothing written, otherwise. (The tutorial's call is ~2 µs in all, so this
    calls the kernels without the wrappers of :mod:`pointwise.kernels.native`.)"""
    kernel = _native._kernel
    if kernel is None:
        return False
    threads = _native.threads(macs)
    team = threads > 1 and _native.on_host_team()  # torch's threads, when torch is here
    if channels_last:
        # (P, C) @ (C, F) -> (P, F), views
        return kernel.rows(threads, x.reshape(pixels, c), w, y.reshape(pixels, f), bias, act,
                           None, team)
    hw = x.shape[-2] * x.shape[-1]
    # (F, C) @ (N, C, H·W) -> (N, F, H·W), views
    return kernel.cols(threads, w, x.reshape(-1, c, hw), y.reshape(-1, f, hw), bias, act, team)


def try_forward(x: Any, weight: Any, bias: Any, layout: Any, stride: Any, padding: Any,
                groups: Any, activation: Any, out: Any) -> np.ndarray | None:
    """The conv when the call is plain (see the module docstring), else None (take the full
    path)."""
    # Exact types first, so that no comparison below meets an array or an odd object.
    if (type(x) is not np.ndarray or type(weight) is not np.ndarray
            or (out is not None and type(out) is not np.ndarray)
            or type(stride) is not int or type(padding) is not int or type(groups) is not int
            or type(layout) is not str or stride != 1 or padding != 0 or groups != 1
            or not (activation is None or (type(activation) is str and activation in _ACTS))):
        return None
    dt = x.dtype
    if dt.char not in _FLOATS or not dt.isnative or weight.dtype != dt:
        return None
    if bias is not None and (type(bias) is not np.ndarray or bias.dtype != dt or bias.ndim != 1):
        return None
    channels_last = True
    ndim = _CHANNELS_LAST.get(layout)
    if ndim is None:
        channels_last = False
        ndim = _CHANNELS_FIRST.get(layout)
        if ndim is None:
            return None
    w = _matrix(weight, channels_last)
    if x.ndim != ndim or w is None:
        return None
    c = x.shape[-1] if channels_last else x.shape[-3]
    c_w, f = w.shape if channels_last else w.shape[::-1]
    if c_w != c or (bias is not None and bias.shape[0] != f):
        return None
    pixels = x.size // c if c else 0
    macs = pixels * c * f
    native = dt.char == "f" and _native._kernel is not None
    if not macs or (macs > MAX_MACS and not native):  # zero sizes: the full path's care
        return None
    if channels_last:
        shape = (*x.shape[:-1], f)  # (..., H, W, F)
    else:
        shape = (*x.shape[:-3], f, *x.shape[-2:])  # (..., F, H, W)
    if out is not None and (out.shape != shape or out.dtype != dt or not out.flags.c_contiguous
                            or not out.flags.writeable or not out.flags.aligned):
        return None  # the full path checks it; np.dot refuses a misaligned out=
    y = np.empty(shape, dt) if out is None else out
    # the kernels decline an out= that overlaps an input, and the check below sees it
    if native and x.flags.c_contiguous and _on_kernels(
            x, w, y, bias, _native.ACTIVATIONS[activation], channels_last, pixels, c, f, macs):
        return y
    if macs > MAX_MACS or (out is not None and (
            np.may_share_memory(out, x) or np.may_share_memory(out, w)
            or (bias is not None and np.may_share_memory(out, bias)))):
        return None  # the full path copes with overlap
    with np.errstate(all="ignore"):  # IEEE results for NaN and Inf, without warnings
        if channels_last:
            y2 = y.reshape(pixels, f)  # (P, F), a view
            np.dot(x.reshape(pixels, c), w, out=y2)  # (P, C) @ (C, F) -> (P, F)
            if bias is not None:
                y2 += bias  # (P, F) + (F,)
        else:
            hw = x.shape[-2] * x.shape[-1]
            y3 = y.reshape(-1, f, hw)  # (N, F, H·W), a view
            np.matmul(w, x.reshape(-1, c, hw), out=y3)  # (F, C) @ (N, C, H·W) -> (N, F, H·W)
            if bias is not None:
                y3 += bias[:, None]  # (N, F, H·W) + (F, 1)
        if activation is not None:  # relu, relu6
            np.maximum(y, 0, out=y)  # NaN stays NaN, as in the full path
            if activation == "relu6":
                np.minimum(y, 6, out=y)
    return y
