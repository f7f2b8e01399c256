"""The k×k convolution: k² 1×1 convolutions on shifted views of the input, summed.

    y[n, y, x, f] = act( b[f] + r[n, y, x, f]
                         + Σ_{i, j, c} x[n, y·s − p + i·d, x·s − p + j·d, c] · w[i, j, c, f] )

Tap (i, j) multiplies the input shifted by (i·d − p, j·d − p) with the (C, F) matrix
``w[i, j]``; pixels that a tap reads from the zero padding add nothing. With groups, channel
group g of the input feeds only output group g. ``r`` is the residual (a block's shortcut),
added before the activation.

How it is computed:

* a 1×1 weight is :func:`pointwise.conv1x1`'s problem, and goes there;
* float32 channels-last with one group runs on the compiled kernels
  (:func:`pointwise.kernels.native.taps`): an implicit GEMM whose micro-kernel walks the
  taps with the output tile in registers, reading each tap's input pixels in place (a row of
  zeros where a tap falls in the padding), so there is no im2col buffer and no padded copy;
  bias, ReLU/ReLU6 and the residual are applied to each tile before it is stored;
* a float32 channels-last depthwise 3×3 (groups = C = F, padding 1, stride 1 or 2) runs on
  the depthwise kernel (:func:`pointwise.kernels.native.depthwise`), channel by channel with
  the bias and activation fused;
* everything else (other dtypes, channels-first layouts, other groups) runs on NumPy,
  tap by tap: each tap's product is a GEMM on the strided view of the input pixels it
  reads, added into the output pixels that see them. Integers are exact; floats accumulate
  in their dtype (half types in float32), so float64 matches a float64 reference to rounding.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pointwise import activations
from pointwise.backends import backend_for
from pointwise.conv import conv1x1
from pointwise.kernels import native
from pointwise.kernels.gemm import view_as
from pointwise.layout import _fmt, as_array
from pointwise.layout2d import Problem2d, check_conv2d

__all__ = ["conv2d"]


def conv2d(
    x: Any,
    weight: Any,
    bias: Any = None,
    *,
    layout: str = "NHWC",
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] | str = 0,
    dilation: int | tuple[int, int] = 1,
    groups: int = 1,
    activation: str | None = None,
    residual: Any = None,
    out: np.ndarray | None = None,
) -> Any:
    """k×k convolution, as the sum of k² 1×1 convolutions on shifted views of ``x``.

    ``y[n, y, x, f] = act(b[f] + r[n, y, x, f] + Σ_{i,j,c} x[n, y·s − p + i·d, x·s − p + j·d, c]
    · w[i, j, c, f])``

    Args:
        x: input in ``layout``, as for :func:`pointwise.conv1x1`: (N, H, W, C) for ``NHWC``,
            (H, W, C), (N, C, H, W) or (C, H, W). Lists and integer arrays are accepted;
            integers compute exactly.
        weight: (kh, kw, C/G, F) HWIO for channels-last layouts, (F, C/G, kh, kw) OIHW for
            channels-first ones; a 1×1 weight (or a 2-D one) goes to :func:`pointwise.conv1x1`.
        bias: (F,) or None.
        layout: ``"NHWC"`` (default), ``"HWC"``, ``"NCHW"`` or ``"CHW"``.
        stride, dilation: int or (h, w) pair, >= 1.
        padding: int or (h, w) pair (zeros on both sides), ``"valid"`` (none) or ``"same"``
            (``ceil(H / s)`` output pixels, the padding split as TensorFlow splits it: at
            stride 1 it is also PyTorch's ``"same"``).
        groups: splits C and F into G groups; group g of the input feeds output group g only
            (G = C: a depthwise conv).
        activation: None, ``"relu"``, ``"relu6"``, ``"silu"`` or ``"hardswish"``.
        residual: None, or an array of the output's shape added before the activation.
        out: optional preallocated result of the exact output shape and dtype.

    Shape:
        Output has F channels and, per spatial axis,
        ``(H + p_before + p_after − d·(k − 1) − 1) // s + 1`` pixels, in the layout of ``x``.

    Dtypes:
        As :func:`pointwise.conv1x1`: float16, bfloat16, float32 and float64 keep their dtype
        (half types accumulate in float32), integers are exact, and different float dtypes
        raise ``TypeError``. Torch tensors are computed by torch (with autograd); unlike
        ``conv1x1``, JAX arrays are refused.

    Examples:
        A 3×3 box filter over a 4×4 single-channel image, zero-padded: each output pixel is
        the sum of the pixels around it.

        >>> import numpy as np, pointwise as pw
        >>> x = np.arange(16).reshape(4, 4, 1)                   # (H, W, C)
        >>> pw.conv2d(x, np.ones((3, 3, 1, 1), int), layout="HWC", padding=1)[..., 0]
        array([[10, 18, 24, 18],
               [27, 45, 54, 39],
               [51, 81, 90, 63],
               [42, 66, 72, 50]])
    """
    backend = backend_for(x, weight, bias, residual)
    if backend is not None:  # a torch tensor: torch computes it
        if not hasattr(backend, "conv2d"):
            raise TypeError(f"expected NumPy arrays or torch tensors for conv2d, but got "
                            f"{type(x).__module__.partition('.')[0]} arrays; convert them with "
                            f"np.asarray (pointwise.conv1x1 takes them as they are)")
        return backend.conv2d(
            x, weight, bias, layout=layout, stride=stride, padding=padding,
            dilation=dilation, groups=groups, activation=activation, residual=residual,
            out=out)
    wa = as_array(weight, "weight")
    if wa.ndim == 2 and residual is None:  # a 1×1 conv's matrix
        pad = 0 if isinstance(padding, str) else padding  # "same"/"valid": none at 1×1
        return conv1x1(x, wa, bias, layout=layout, stride=stride, padding=pad, groups=groups,
                       activation=activation, out=out)
    p = check_conv2d(x, wa, bias, layout=layout, stride=stride, padding=padding,
                     dilation=dilation, groups=groups, activation=activation,
                     residual=residual)
    y = np.empty(p.out_shape, p.dtype) if out is None else _check_out(out, p)
    y4 = y if p.batched else y[None]
    with np.errstate(invalid="ignore", over="ignore"):  # NaN and Inf as IEEE says
        if p.kernel == (1, 1) and p.pad[0::2] == p.pad[1::2]:
            _one_by_one(p, x, wa, bias, y)
        elif not _compiled(p, y4):
            _taps(p, y4)
    return y


def _check_out(out: Any, p: Problem2d) -> np.ndarray:
    """A preallocated result: exact shape and dtype, writeable, overlapping no input."""
    if not isinstance(out, np.ndarray):
        raise TypeError(f"expected out to be a numpy.ndarray, but got {type(out).__name__}")
    if out.shape != p.out_shape or out.dtype != p.dtype:
        raise ValueError(f"expected out of shape {_fmt(p.out_shape)} and dtype {p.dtype}, but "
                         f"got shape {_fmt(out.shape)} and dtype {out.dtype}")
    if not out.flags.writeable:
        raise ValueError("expected a writeable out array, but got a read-only one")
    if any(a is not None and np.may_share_memory(out, a)
           for a in (p.x, p.w, p.bias, p.residual)):
        raise ValueError("expected out not to overlap x, weight, bias or residual, but it "
                         "shares memory with one; the result would overwrite inputs still "
                         "being read")
    return out


def _one_by_one(p: Problem2d, x: Any, w: np.ndarray, bias: Any, y: np.ndarray) -> None:
    """A 1×1 kernel: :func:`pointwise.conv1x1`, then the residual and activation if any."""
    pad = (p.pad[0], p.pad[2])
    if p.residual is None:
        conv1x1(x, w, bias, layout=p.layout, stride=p.stride, padding=pad, groups=p.groups,
                activation=p.activation, out=y)
        return
    y4 = y if p.batched else y[None]
    # With the residual fused into the kernels' epilogue the call is one pass over the output;
    # conv1x1, a copy and the epilogue make four (N=1 56² 64→256 + residual, 2 threads:
    # 2.14 ms that way against 1.32 for the conv alone).
    if _rows(p, y4) or (p.pad != (0, 0, 0, 0) and _compiled(p, y4)):
        return
    # a float residual may change the result dtype: no out= here
    y[...] = conv1x1(x, w, bias, layout=p.layout, stride=p.stride, padding=pad, groups=p.groups)
    _epilogue(p, y4)


def _epilogue(p: Problem2d, y4: np.ndarray) -> None:
    """``y4 = act(y4 + residual)`` in place."""
    if p.residual is not None:
        np.add(y4, p.residual, out=y4, casting="unsafe")
    activations.apply_(y4, p.activation)


# ------------------------------------------------------------------- the compiled kernels
def _rows(p: Problem2d, y4: np.ndarray) -> bool:
    """An unpadded float32 channels-last 1×1 conv of one group with a residual on the rows
    kernel, bias, residual and activation fused; False when it can't."""
    if p.residual is None or not (
            native.ENABLED and p.channels_last and p.dtype == np.float32 and p.groups == 1
            and p.pad == (0, 0, 0, 0) and p.activation in native.ACTIVATIONS
            and p.n and p.c and p.f):
        return False
    x, b, y2, target = _operands(p, y4)
    x = x[:, :: p.stride[0], :: p.stride[1]]  # (N, Ho, Wo, C): the pixels the conv reads
    w = np.ascontiguousarray(p.w.reshape(p.c, p.f), np.float32)  # (1, 1, C, F) -> (C, F)
    if not native.rows(x, w, target, b, p.activation, residual=_residual_rows(p)):
        return False
    _store(y4, y2, target)
    return True


def _operands(p: Problem2d, y4: np.ndarray) -> tuple[np.ndarray, np.ndarray | None,
                                                   np.ndarray | None, np.ndarray]:
    """The kernels' float32 operands: x (N, H, W, C) with unit channel stride, the bias, the
    output as (M, F) rows in place when it can be (else None), and the (M, F) array the
    kernel writes."""
    f32 = np.float32
    x = p.x if p.x.dtype == f32 and p.x.strides[3] == 4 else np.ascontiguousarray(p.x, f32)
    b = None if p.bias is None else np.ascontiguousarray(p.bias, f32)
    m = p.n * p.out_hw[0] * p.out_hw[1]
    y2 = view_as(y4, (m, p.f))  # (M, F), the output rows in place when they can be
    target = y2 if y2 is not None and y2.strides[1] == 4 else np.empty((m, p.f), f32)
    return x, b, y2, target


def _residual_rows(p: Problem2d) -> np.ndarray | None:
    """The residual as float32 (M, F) rows with unit channel stride, a view when it can be."""
    if p.residual is None:
        return None
    m = p.n * p.out_hw[0] * p.out_hw[1]
    r2 = view_as(p.residual, (m, p.f))  # (M, F)
    if r2 is None or r2.dtype != np.float32 or r2.strides[1] != 4:
        r2 = np.ascontiguousarray(p.residual, np.float32).reshape(m, p.f)  # (N·Ho·Wo, F)
    return r2


def _store(y4: np.ndarray, y2: np.ndarray | None, target: np.ndarray) -> None:
    """The kernel's (M, F) result into the output, unless it was written there in place."""
    if target is not y2:
        y4[...] = target.reshape(y4.shape)  # (M, F) -> (N, Ho, Wo, F)


def _compiled(p: Problem2d, y4: np.ndarray) -> bool:
    """Float32 channels-last with one group on the taps kernels, or a depthwise 3×3 on the
    depthwise kernel; False when they can't."""
    if not (native.ENABLED and p.channels_last and p.dtype == np.float32
            and p.n and p.c and p.f):
        return False
    if is_depthwise3x3(p):
        return _depthwise(p, y4)
    if p.groups != 1:
        return False
    x, b, y2, target = _operands(p, y4)
    w = np.ascontiguousarray(p.w, np.float32)  # (kh, kw, C, F)
    fused = p.activation in native.ACTIVATIONS
    kh, kw = p.kernel
    geometry = (kh, kw, *p.stride, p.pad[0], p.pad[2], *p.dilation, *p.out_hw)
    if not native.taps(x, w, target, b, p.activation if fused else None, _residual_rows(p),
                       geometry):
        return False
    if not fused:
        activations.apply_(target, p.activation)
    _store(y4, y2, target)
    return True


def is_depthwise3x3(p: Problem2d) -> bool:
    """Whether the call is the depthwise kernel's: 3×3, one filter per channel, padding 1
    on every side, dilation 1, the same stride 1 or 2 on both axes."""
    return (p.groups == p.c == p.f and p.kernel == (3, 3) and p.pad == (1, 1, 1, 1)
            and p.dilation == (1, 1) and p.stride in ((1, 1), (2, 2)))


def _depthwise(p: Problem2d, y4: np.ndarray) -> bool:
    """The depthwise 3×3 kernel, then the residual (and the activation after it) if any."""
    x, b, y2, target = _operands(p, y4)  # y2, target: (M, C)
    w = np.ascontiguousarray(p.w[:, :, 0, :], np.float32)  # (3, 3, 1, C) -> (3, 3, C)
    fused = p.residual is None and p.activation in native.ACTIVATIONS
    if not native.depthwise(x, w, target, b, p.activation if fused else None, p.stride[0]):
        return False
    _store(y4, y2, target)
    if not fused:
        _epilogue(p, y4)
    return True


# ----------------------------------------------------------------------- the NumPy path
def _span(size: int, out: int, k: int, s: int, before: int, d: int) -> tuple[int, int, int]:
    """For tap k of one axis: the outputs [lo, hi) that read real input, and the input
    index the first of them reads."""
    off = k * d - before  # output o reads input o·s + off
    lo = max(0, -(off // s))  # ceil(-off / s): the first o with o·s + off >= 0
    hi = min(out, (size - 1 - off) // s + 1) if size - 1 - off >= 0 else 0
    return lo, max(lo, hi), lo * s + off


def _taps(p: Problem2d, y4: np.ndarray) -> None:
    """The NumPy path: for each tap, a GEMM on the strided view of the pixels it reads."""
    cd = p.compute_dtype
    x = p.x_nhwc  # (N, H, W, C) view
    yv = y4 if p.channels_last else y4.transpose(0, 2, 3, 1)  # (N, Ho, Wo, F) view
    acc = yv if yv.dtype == cd else np.empty(yv.shape, cd)
    acc[...] = 0 if p.bias is None else p.bias.astype(cd)
    (h, w), (ho, wo) = x.shape[1:3], p.out_hw
    kh, kw = p.kernel
    wt = p.w.astype(cd, copy=False)  # (kh, kw, C/G, F)
    for i in range(kh):
        r0, r1, iy = _span(h, ho, i, p.stride[0], p.pad[0], p.dilation[0])
        for j in range(kw):
            c0, c1, ix = _span(w, wo, j, p.stride[1], p.pad[2], p.dilation[1])
            if r0 == r1 or c0 == c1:
                continue  # this tap reads only padding
            xs = x[:, iy : iy + (r1 - r0 - 1) * p.stride[0] + 1 : p.stride[0],
                   ix : ix + (c1 - c0 - 1) * p.stride[1] + 1 : p.stride[1]]  # (N, h', w', C)
            acc[:, r0:r1, c0:c1] += _tap(xs.astype(cd, copy=False), wt[i, j], p.groups)
    if p.residual is not None:
        r = p.residual if p.channels_last else p.residual.transpose(0, 2, 3, 1)
        acc += r.astype(cd, copy=False)  # (N, Ho, Wo, F)
    activations.apply_(acc, p.activation)
    if acc is not yv:
        yv[...] = acc


def _tap(xs: np.ndarray, w: np.ndarray, groups: int) -> np.ndarray:
    """One tap's 1×1 product: ``xs`` (N, h, w, C) by ``w`` (C/G, F), per group."""
    n, h, wd, _ = xs.shape  # (N, h, w, C)
    cg, f = w.shape
    if groups == 1:
        return np.matmul(xs, w)  # (N, h, w, C) @ (C, F) -> (N, h, w, F)
    fg = f // groups
    wg = w.reshape(cg, groups, fg).transpose(1, 0, 2)  # (C/G, F) -> (G, Cg, Fg)
    if cg == 1:  # depthwise: each channel scales its own filters
        y = xs[..., None] * wg[:, 0, :]  # (N, h, w, G, 1) · (G, Fg) -> (N, h, w, G, Fg)
        return y.reshape(n, h, wd, f)
    xg = np.ascontiguousarray(xs).reshape(-1, groups, cg).transpose(1, 0, 2)  # (G, M, Cg)
    y = np.matmul(xg, wg)  # (G, M, Cg) @ (G, Cg, Fg) -> (G, M, Fg)
    return y.transpose(1, 0, 2).reshape(n, h, wd, f)  # (G, M, Fg) -> (N, h, w, F)
