"""``Conv2d``'s inference call on the taps kernels, planned once per layer and input layout.

As for ``Conv1x1`` (:mod:`pointwise.nn._fastcall`): what decides how a call runs (the
checks of :func:`pointwise.nn._native_taps.forward`, the padding and output size, NumPy
views of every tensor) depends only on what :func:`_key` holds, so a module keeps the
decision for the last key it saw, and a call that matches it hands the tensors' data
pointers to the kernels (``taps_at``). A 3×3 64→64 at 8×8, channels-last, 2 threads: 52–71 µs
a call on the general path, 42–47 planned, the kernels' own call 33. With the residual
calls of ``Conv1x1`` planned too, a ``convert()``ed ResNet-50 at N=1 ran in 54.5 ms against
58.3 (ResNet-18: 23.1 against 24.2; one process, the two alternating forward by forward).

The weight, bias and residual are never copied into a plan: every call reads them where
they are, so any edit to them is seen. Only the first call of a key takes the general path,
which validates it; calls a plan cannot run (autograd, autocast, tracing, torch.func's
tensors, forward-mode AD: :class:`pointwise.nn.Conv2d` checks those first; groups, a
residual whose channels are not contiguous) take it every time.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

from pointwise.kernels import native as _native
from pointwise.layout2d import conv2d_output_size
from pointwise.nn import _native_taps, frozen
from pointwise.nn import _native_torch as _nt
from pointwise.nn.kernels import _activate

__all__ = ["Plan", "call", "plan"]


class Plan(NamedTuple):
    """How to run one layer on one input layout: plain data, so modules still pickle.
    ``kind``: ``"taps"`` (the taps kernels by address), or ``""`` (the general path)."""

    key: tuple
    kind: str
    out: tuple[int, int, int, int]  # (N, F, Ho, Wo)
    act: int  # the kernels' code of a fused activation
    after: str | None  # an activation applied afterwards, in place
    xdims: tuple[int, ...]  # x's (N, H, W, C) and its (sn, sh, sw) strides, in floats
    wstrides: tuple[int, ...]  # the weight's (kh, kw, C, F) view's strides, in floats
    geometry: tuple[int, ...]  # (kh, kw, sy, sx, top, left, dy, dx, Ho, Wo)


def _key(m: Any, x: torch.Tensor, r: torch.Tensor | None = None) -> tuple:
    w, b = m.weight, m.bias
    return (type(x), x.shape, x.stride(), x.dtype, x.device, w.shape, w.stride(), w.dtype,
            w.device, None if b is None else (b.shape, b.stride(), b.dtype, b.device),
            m.stride, m.padding, m.dilation, m.groups, m.padding_mode, m.activation,
            None if r is None else (type(r), r.shape, r.stride(), r.dtype, r.device))


def call(m: Any, x: torch.Tensor, residual: torch.Tensor | None,
         into: bool = False) -> torch.Tensor | None:
    """``m(x, residual)`` by ``m``'s plan for them, or None: no plan yet, or one that can't
    run. The caller has checked that no gradient, autocast, tracing or forward-mode AD is
    involved. ``into``: the caller gives up ``residual``, and the output is written over it
    (see :func:`pointwise.nn._fastcall.call`)."""
    p: Plan | None = m.__dict__.get("_plan")
    if p is None or not p.kind or p.key != _key(m, x, residual):
        return None
    # held until the kernels return: a parametrized weight is a new tensor on each access
    w, b = m.weight, m.bias
    ptrs = _nt.addresses(x, w, b, residual)
    if ptrs is None:
        return None
    xa, wa, ba, ra = ptrs
    n, f, ho, wo = p.out
    kernels = _native._kernel
    assert kernels is not None  # a taps plan is made only where they run
    # (N, Ho, Wo, F): the residual's memory, or a fresh output
    y = (residual.permute(0, 2, 3, 1) if into and residual is not None
         and _nt.apart(x, residual) else _nt.BUFFERS.empty((n, ho, wo, f)))
    wp = frozen.packed(m)  # held while the kernels read it
    if not kernels.taps_at(torch.get_num_threads(), True, p.act, xa, p.xdims,
                           wa if wp is None else wp.addresses[0], p.wstrides, f, y.data_ptr(),
                           f, ba, ra, f, p.geometry, wp is not None):
        return None
    y4 = y.permute(0, 3, 1, 2)  # (N, Ho, Wo, F) -> (N, F, Ho, Wo), channels-last
    return y4 if p.after is None else _activate(y4, p.after)


def plan(m: Any, x: torch.Tensor, residual: torch.Tensor | None) -> None:
    """Keep on ``m`` the plan for inputs like ``x`` and ``residual``, which the general path
    just ran on the kernels; a plan of kind ``""`` when such calls must take it again."""
    r = residual
    if type(x) is not torch.Tensor or (r is not None and type(r) is not torch.Tensor):
        return
    key = _key(m, x, r)
    old: Plan | None = m.__dict__.get("_plan")
    if old is not None and old.key == key:
        return
    w, b = m.weight, m.bias
    kind = ""
    xdims: tuple[int, ...] = ()
    wstrides: tuple[int, ...] = ()
    geometry: tuple[int, ...] = ()
    n, c, h, wd = x.shape
    f = m.out_channels
    kh, kw = m.kernel_size
    top, bottom, left, right = _native_taps.padding(m, h, wd)
    ho = conv2d_output_size(h, kh, m.stride[0], top, bottom, m.dilation[0])
    wo = conv2d_output_size(wd, kw, m.stride[1], left, right, m.dilation[1])
    fused_r = r is None or (r.shape == (n, f, ho, wo) and r.dtype == torch.float32
                            and r.device.type == "cpu" and r.permute(0, 2, 3, 1).is_contiguous())
    sn, sc, sh, sw = x.stride()
    if (m.groups == 1 and fused_r and x.dim() == 4 and sc == 1 and x.dtype == torch.float32
            and x.device.type == "cpu" and w.dtype == torch.float32 and w.device.type == "cpu"
            and (b is None or (b.dtype == torch.float32 and b.dim() == 1))
            and m.padding_mode == "zeros" and ho > 0 and wo > 0 and x.numel() > 0
            and n * ho * wo * kh * kw * c * f >= _native_taps.NATIVE_MIN_MACS
            and _nt.available()):
        if _nt.addresses(x, r) is None:  # torch.func's tensors: no plan
            return
        kind, xdims = "taps", (n, h, wd, c, sn, sh, sw)
        wf, wc, wi, wj = w.stride()  # (F, C, kh, kw) read through its (kh, kw, C, F) view
        wstrides = (wi, wj, wc, wf)
        geometry = (kh, kw, *m.stride, top, left, *m.dilation, ho, wo)
    fused = m.activation in _native.ACTIVATIONS
    act, after = (_native.ACTIVATIONS[m.activation], None) if fused else (0, m.activation)
    m.__dict__["_plan"] = Plan(key, kind, (n, f, ho, wo), act, after, xdims, wstrides, geometry)

