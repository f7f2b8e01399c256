"""The compiled taps kernels (:func:`pointwise.kernels.native.taps`) on torch tensors, for
inference: :class:`pointwise.nn.Conv2d`'s fast path; a depthwise 3×3 conv goes to the
depthwise kernel (:func:`pointwise.kernels.native.depthwise`).

The input's memory is handed to the kernels as a NumPy view, without a copy, as long as its
channels are contiguous (channels_last tensors; an NCHW-contiguous input goes to torch's
kernels). The weight is read from its own (F, C, kh, kw) memory and packed by the kernels
on every call, shared among the threads: a pack kept between calls could go stale through
an edit torch does not count (``.data``, a NumPy view). The output comes from the pool of
buffers of :mod:`pointwise.nn._native_torch` and the kernels run on torch's OpenMP team.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from pointwise.kernels import native as _native
from pointwise.layout2d import conv2d_output_size
from pointwise.nn import _native_torch as _nt

__all__ = ["forward", "is_depthwise3x3", "padding"]

#: inference on the taps kernels from this many multiply-adds (N·Ho·Wo·kh·kw·C·F); below,
#: the ~10 µs of setup is a sizeable share, and torch's kernels run the conv.
NATIVE_MIN_MACS = 1 << 20


def padding(conv: torch.nn.Conv2d, h: int, w: int) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of ``conv``'s padding for an h×w input."""
    kh, kw = conv.kernel_size
    dh, dw = conv.dilation
    if isinstance(conv.padding, str):
        if conv.padding == "valid":
            return (0, 0, 0, 0)
        th, tw = dh * (kh - 1), dw * (kw - 1)  # "same" (stride 1): the extra pixel after
        return (th // 2, th - th // 2, tw // 2, tw - tw // 2)
    ph, pw = conv.padding
    return (ph, ph, pw, pw)


def forward(conv: Any, x: torch.Tensor, residual: torch.Tensor | None,
            activate: Callable[[torch.Tensor, str | None], torch.Tensor]
            ) -> torch.Tensor | None:
    """``act(conv(x) + bias + residual)`` on the kernels for a float32 CPU ``x``
    (N, C, H, W) with contiguous channels; None when they can't take it."""
    if (x.dim() != 4 or x.dtype != torch.float32 or x.device.type != "cpu"
            or conv.weight.dtype != torch.float32 or conv.padding_mode != "zeros"
            or not _nt.available()):
        return None
    if conv.groups != 1:
        return _depthwise(conv, x, residual, activate) if is_depthwise3x3(conv) else None
    xl = x.permute(0, 2, 3, 1)  # (N, H, W, C) view
    n, h, w, c = xl.shape
    if xl.stride(3) != 1 or n * h * w * c == 0:
        return None
    kh, kw = conv.kernel_size
    top, bottom, left, right = padding(conv, h, w)
    ho = conv2d_output_size(h, kh, conv.stride[0], top, bottom, conv.dilation[0])
    wo = conv2d_output_size(w, kw, conv.stride[1], left, right, conv.dilation[1])
    f = conv.out_channels
    if ho < 1 or wo < 1 or n * ho * wo * kh * kw * c * f < NATIVE_MIN_MACS:
        return None
    try:
        return _forward(conv, xl, residual, activate, (kh, kw, *conv.stride, top, left,
                                                       *conv.dilation, ho, wo))
    except _nt._NoView:  # a tensor without plain memory (vmap's wrappers, say)
        return None


def _forward(conv: Any, xl: torch.Tensor, residual: torch.Tensor | None,
             activate: Callable[[torch.Tensor, str | None], torch.Tensor],
             geometry: tuple[int, ...]) -> torch.Tensor | None:
    n, f = xl.shape[0], conv.out_channels
    ho, wo = geometry[8], geometry[9]
    y = _nt.BUFFERS.empty((n, ho, wo, f))  # (N, Ho, Wo, F)
    y2 = _nt._view(y).reshape(n * ho * wo, f)  # (M, F) view
    r2 = None
    rl = None if residual is None else residual.permute(0, 2, 3, 1)  # (N, Ho, Wo, F)
    if rl is not None and rl.is_contiguous() and rl.dtype == torch.float32:
        r2 = _nt._view(rl).reshape(n * ho * wo, f)  # (M, F) view
    fused_res = residual is None or r2 is not None
    act = conv.activation if conv.activation in _native.ACTIVATIONS and fused_res else None
    w = _nt._view(conv.weight.permute(2, 3, 1, 0))  # (F, C, kh, kw) -> (kh, kw, C, F) view
    b = None if conv.bias is None else _nt._view(conv.bias)
    if not _native.taps(_nt._view(xl), w, y2, b, act, r2, geometry,
                        team=torch.get_num_threads()):
        return None
    y4 = y.permute(0, 3, 1, 2)  # (N, Ho, Wo, F) -> (N, F, Ho, Wo), channels-last
    return _nt._finish(y4, None if fused_res else residual,
                       conv.activation if act != conv.activation else None, activate)


def is_depthwise3x3(conv: Any) -> bool:
    """Whether ``conv`` is the depthwise kernel's: 3×3, one filter per channel, padding 1,
    dilation 1, stride 1 or 2 on both axes."""
    c = conv.in_channels
    return (conv.groups == c == conv.out_channels and c > 1
            and tuple(conv.kernel_size) == (3, 3) and tuple(conv.padding) == (1, 1)
            and tuple(conv.dilation) == (1, 1) and tuple(conv.stride) in ((1, 1), (2, 2)))


def _depthwise(conv: Any, x: torch.Tensor, residual: torch.Tensor | None,
               activate: Callable[[torch.Tensor, str | None], torch.Tensor]
               ) -> torch.Tensor | None:
    xl = x.permute(0, 2, 3, 1)  # (N, H, W, C) view
    n, h, w, c = xl.shape
    if xl.stride(3) != 1 or n * h * w * c == 0:
        return None
    s = conv.stride[0]
    ho, wo = (h - 1) // s + 1, (w - 1) // s + 1
    try:
        y = _nt.BUFFERS.empty((n, ho, wo, c))  # (N, Ho, Wo, C)
        y2 = _nt._view(y).reshape(n * ho * wo, c)  # (M, C) view
        wt = np.ascontiguousarray(_nt._view(conv.weight[:, 0].permute(1, 2, 0)))  # (3, 3, C)
        b = None if conv.bias is None else _nt._view(conv.bias)
        fused = residual is None and conv.activation in _native.ACTIVATIONS
        if not _native.depthwise(_nt._view(xl), wt, y2, b, conv.activation if fused else None,
                                 s, team=torch.get_num_threads()):
            return None
    except _nt._NoView:  # a tensor without plain memory (vmap's wrappers, say)
        return None
    y4 = y.permute(0, 3, 1, 2)  # (N, Ho, Wo, C) -> (N, C, Ho, Wo), channels-last
    return _nt._finish(y4, residual, None if fused else conv.activation, activate)
