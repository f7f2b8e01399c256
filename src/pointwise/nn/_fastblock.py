"""A fused MobileNet block's inference call, planned once per block and input layout.

What :mod:`pointwise.nn._fastcall` does for ``Conv1x1``, for :class:`FusedInvertedResidual`
and :class:`FusedDepthwiseSeparable`: at batch 1 a small block's kernel call takes ~8 µs,
and the general path spent ~50 µs (depthwise-separable) to ~110 µs (inverted residual)
around it, making NumPy views of its eight tensors and copying the depthwise weight. None of
that depends on the values in the tensors, only on what :func:`_key` holds (shapes, strides,
dtypes, devices), so a block keeps its :class:`BlockPlan` for the last key it saw, and a call
that matches it reads the tensors' data pointers and runs the kernel (``block_at``), which
packs the 1×1 weights and reorders the depthwise one itself; a frozen block
(:mod:`pointwise.nn.frozen`) hands it copies made so once instead.

The weights and biases are never copied into a plan: every call reads them where their
modules hold them now (a new parameter included), so any edit is seen, as on the general
path. A conv whose weight is computed (a parametrization, a pruning mask) has no parameter
of that name, and such a block takes the general path every time; so do calls a plan cannot
run (autograd, tracing, forward-mode AD, torch.func's tensors).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

from pointwise.kernels import native as _native
from pointwise.nn import _native_torch as _nt
from pointwise.nn import frozen
from pointwise.nn.kernels import _forward_ad, _is_graph_capture

__all__ = ["BlockPlan", "call", "plan"]

_CONVS = ("expand", "dw", "project")


class BlockPlan(NamedTuple):
    """How to run one block on one input layout: plain data, so modules still pickle."""

    key: tuple
    acts: tuple[int, int, int]  # the kernels' codes of the three activations
    stride: int
    residual: bool
    dims: tuple[int, ...]  # (N, H, W, C, sn, sh, sw): x's NHWC view, strides in floats
    out: tuple[int, int, int, int]  # (N, Ho, Wo, F)
    e: int  # the expanded channels
    #: the output's (N, F, Ho, Wo) sizes and channels-last strides when it is smaller than
    #: the buffer pool takes (None: from the pool)
    small: tuple[tuple[int, ...], tuple[int, ...]] | None


def _tensors(m: Any) -> list[torch.Tensor | None] | None:
    """(we, be, wd, bd, wp, bp) as the block's convs hold them now (None: no expansion, no
    bias), or None when a weight is not a parameter (parametrized, pruned)."""
    out: list[torch.Tensor | None] = []
    for name in _CONVS:
        conv = m._modules.get(name)
        if conv is None:
            out += [None, None]
            continue
        params = conv._parameters
        if "weight" not in params or "bias" not in params:
            return None
        out += [params["weight"], params["bias"]]
    return out


def _key(x: torch.Tensor, ts: list[torch.Tensor | None]) -> tuple:
    return (type(x), x.shape, x.stride(), x.dtype, x.device,
            *(None if t is None else (t.shape, t.stride(), t.dtype, t.device) for t in ts))


def call(m: Any, x: torch.Tensor) -> torch.Tensor | None:
    """``m(x)`` by ``m``'s plan for ``x``, or None: no plan yet, or one that can't run."""
    p: BlockPlan | None = m.__dict__.get("_plan")
    if p is None:
        return None
    ts = _tensors(m)
    if ts is None or (torch.is_grad_enabled() and (
            x.requires_grad or any(t is not None and t.requires_grad for t in ts))):
        return None
    if _is_graph_capture() or _forward_ad() or p.key != _key(x, ts):
        return None
    ptrs = _nt.addresses(x, *ts)
    if ptrs is None:
        return None
    xa, we, be, wd, bd, wp, bp = ptrs
    n, ho, wo, f = p.out
    # small: one allocation, not the pool's torch.empty and a permute; the Python part of
    # a call of MobileNetV2's 14x14 64->384->64 block (kernel a no-op, N=1) 32-35 -> 27-30 us
    # (/work/notes/runs/mb3/ovh.py, two runs each)
    y = (_nt.BUFFERS.empty((n, ho, wo, f)) if p.small is None  # (N, Ho, Wo, F)
         else torch.empty_strided(*p.small, dtype=torch.float32))  # (N, F, Ho, Wo) as NHWC
    kernels = _native._kernel
    assert kernels is not None  # a plan is made only where the kernels ran
    frozen_ws = frozen.packed_block(m, ts[0], ts[2], ts[4])  # held while the kernels read it
    if frozen_ws is not None:
        we, wd, wp = frozen_ws.addresses
    if not kernels.block_at(torch.get_num_threads(), True, p.acts, p.stride, p.residual, xa,
                            p.dims, we, be, wd, bd, wp, bp, p.e, f, y.data_ptr(),
                            frozen_ws is not None):
        return None
    # (N, Ho, Wo, F) -> (N, F, Ho, Wo), channels-last
    return y if p.small is not None else y.permute(0, 3, 1, 2)


def plan(m: Any, x: torch.Tensor) -> None:
    """Keep on ``m`` the plan for inputs like ``x``, which the fused general path just ran;
    nothing when such calls must take the general path."""
    ts = _tensors(m)
    if ts is None or type(x) is not torch.Tensor or x.dim() != 4:
        return
    key = _key(x, ts)
    old: BlockPlan | None = m.__dict__.get("_plan")
    if old is not None and old.key == key:
        return
    wd, wp = ts[2], ts[4]
    # the kernel reads the weights as torch's contiguous (E, C), (E, 1, 3, 3) and (F, E)
    if not all(t is None or (t.is_contiguous() and t.dtype == torch.float32
                             and t.device.type == "cpu") for t in ts):
        return
    n, c, h, w = x.shape
    sn, sc, sh, sw = x.stride()
    if sc != 1 or wd is None or wp is None:
        return
    e, f = wd.shape[0], wp.shape[0]
    s = m.dw.stride[0]
    ae, ad, ap = (_native.ACTIVATIONS.get(a, -1) for a in m.acts)
    acts = (ae, ad, ap)
    if min(acts) < 0:
        return
    ho, wo = (h - 1) // s + 1, (w - 1) // s + 1
    small = (((n, f, ho, wo), (ho * wo * f, 1, wo * f, f))
             if 4 * n * ho * wo * f < _nt.BUFFERS.min_bytes else None)
    m.__dict__["_plan"] = BlockPlan(key, acts, s, bool(m.residual), (n, h, w, c, sn, sh, sw),
                                    (n, ho, wo, f), e, small)
