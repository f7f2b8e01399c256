"""``Conv1x1``'s inference call, planned once per layer and input layout.

A batch-1 layer is little arithmetic: at 16×16 64→64 the kernels' call takes ~18 µs on two
threads, and the general path (:func:`pointwise.nn.functional.conv1x1`) spent ~60 µs more
deciding what to run: checking the arguments, picking the kernel, making NumPy views of every
tensor (86 µs a call in all, NCHW, against ``nn.Conv2d``'s 46). None of that depends on the
values in the tensors, only on what :func:`_key` holds (shapes, strides, dtypes, devices, the
module's options), so a module keeps the decision, its :class:`Plan`, for the last key it
saw, and a call that matches it reads the tensors' data pointers and runs: 38 µs against
``nn.Conv2d``'s 42 (``benchmarks/bench_nn_call.py --suite batch1``). A residual is part of
the key, and added in the kernels' epilogue where its channels are contiguous: ResNet's
expanding 1×1s took ~54 µs a call on the general path, ~25 with a plan (channels-last, 8×8
64→256, 2 threads), and convs with large weights run on the taps kernels by address too.

The weight and bias are never copied into a plan: every call reads them where they are, so
any edit to them is seen, as on the general path. Only the first call of a key takes the
general path, which validates it (a bad input raises there and leaves no plan), and calls a
plan cannot run (autograd, autocast, tracing, torch.func's tensors, forward-mode AD) take it
every time.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

from pointwise.kernels import native as _native
from pointwise.nn import _native_torch as _nt
from pointwise.nn import frozen
from pointwise.nn.kernels import _activate, _forward_ad, _is_graph_capture, _run, choose_kernel

__all__ = ["Plan", "call", "plan"]


class Plan(NamedTuple):
    """How to run one layer on one input layout: plain data, so modules still pickle.

    ``kind``: ``"rows"`` (channels-last input, the kernels' rows driver), ``"taps"``
    (channels-last, large weights: one tap of the taps driver), ``"cols"`` (NCHW, their cols
    driver), ``"run"`` (another kernel of :func:`choose_kernel`, ``kernel``, run without the
    checks), or ``""`` (the general path, every time).
    """

    key: tuple
    kind: str
    kernel: str
    out: tuple[int, int, int, int]  # (N, F, Ho, Wo)
    act: int  # the kernels' code of a fused activation
    after: str | None  # an activation applied afterwards, in place
    # rows: (ldx, grid, ldw, M, C); cols: (ldw, xn, xc, C); taps: (x's (N, H, W, C, sn, sh,
    # sw), w's HWIO strides, geometry); strides in floats
    dims: tuple


def _key(m: Any, x: torch.Tensor, r: torch.Tensor | None = None) -> tuple:
    w, b = m.weight, m.bias
    return (type(x), x.shape, x.stride(), x.dtype, x.device, w.shape, w.stride(), w.dtype,
            None if b is None else (b.shape, b.stride(), b.dtype), m.stride, m.padding,
            m.groups, m.activation,
            None if r is None else (type(r), r.shape, r.stride(), r.dtype, r.device))


def call(m: Any, x: torch.Tensor, residual: torch.Tensor | None = None,
         into: bool = False) -> torch.Tensor | None:
    """``m(x, residual)`` by ``m``'s plan for them, or None: no plan yet, or one that can't
    run. ``into``: the caller gives up ``residual``, and a plan on the channels-last kernels
    writes the output over it (then the residual's memory is where the sums start: one
    stream to memory fewer) and returns it."""
    p: Plan | None = m.__dict__.get("_plan")
    w, b, r = m.weight, m.bias, residual
    if p is None or not p.kind or (r is not None and not isinstance(r, torch.Tensor)) or (
            torch.is_grad_enabled() and (x.requires_grad or w.requires_grad or (
                b is not None and b.requires_grad) or (r is not None and r.requires_grad))):
        return None
    if (torch.is_autocast_enabled("cpu") or _is_graph_capture() or _forward_ad()
            or p.key != _key(m, x, r)):
        return None
    if p.kind == "run":
        return _run(p.kernel, x, w, b, m.stride, m.padding, m.groups, m.activation, r)
    ptrs = _nt.addresses(x, w, b, r)
    if ptrs is None:
        return None
    xa, wa, ba, ra = ptrs
    n, f, ho, wo = p.out
    team = torch.get_num_threads()
    kernels = _native._kernel
    assert kernels is not None  # a rows or cols plan is made only where they run
    # (N, Ho, Wo, F): the residual's memory, or None for a fresh output
    dest = r.permute(0, 2, 3, 1) if into and r is not None and _nt.apart(x, r) else None
    if p.kind == "rows":
        ldx, grid, ldw, rows, c = p.dims
        y = _nt.BUFFERS.empty((n, ho, wo, f)) if dest is None else dest  # (N, Ho, Wo, F)
        ok = kernels.rows_at(team, True, p.act, xa, ldx, grid, wa, ldw, True, y.data_ptr(),
                             f, ba, rows, c, f, ra, f)
        y4 = y.permute(0, 3, 1, 2)  # (N, Ho, Wo, F) -> (N, F, Ho, Wo), channels-last
    elif p.kind == "taps":
        xdims, wstrides, geometry = p.dims
        y = _nt.BUFFERS.empty((n, ho, wo, f)) if dest is None else dest  # (N, Ho, Wo, F)
        wp = frozen.packed(m)  # held while the kernels read it
        ok = kernels.taps_at(team, True, p.act, xa, xdims, wa if wp is None else wp.addresses[0],
                             wstrides, f, y.data_ptr(), f, ba, ra, f, geometry, wp is not None)
        y4 = y.permute(0, 3, 1, 2)  # (N, Ho, Wo, F) -> (N, F, Ho, Wo), channels-last
    else:
        ldw, xn, xc, c = p.dims
        y4 = _nt.BUFFERS.empty((n, f, ho, wo))  # (N, F, Ho, Wo)
        ok = kernels.cols_at(team, True, p.act, wa, ldw, xa, xn, xc, y4.data_ptr(),
                             f * ho * wo, ho * wo, ba, n, ho * wo, c, f)
    if not ok:
        return None
    return y4 if p.after is None else _activate(y4, p.after)


def plan(m: Any, x: torch.Tensor, residual: torch.Tensor | None = None) -> None:
    """Keep on ``m`` the plan for inputs like ``x`` and ``residual``, which the general path
    just ran without an error; nothing when such calls must take the general path."""
    w, b, r = m.weight, m.bias, residual
    if (x.dim() != 4 or w.dim() != 4 or torch.is_grad_enabled()
            or torch.is_autocast_enabled("cpu") or _is_graph_capture() or _forward_ad()
            or type(x) is not torch.Tensor or (b is not None and b.dim() != 1)
            or (r is not None and type(r) is not torch.Tensor)):
        return
    key = _key(m, x, r)
    old: Plan | None = m.__dict__.get("_plan")
    if old is not None and old.key == key:
        return
    if _nt.addresses(x, r) is None:  # torch.func's tensors: no plan
        return
    n, c, h, wd = x.shape
    f = w.shape[0]
    s0, s1 = m.stride
    ho, wo = (h + 2 * m.padding[0] - 1) // s0 + 1, (wd + 2 * m.padding[1] - 1) // s1 + 1
    kernel = choose_kernel(x, w, b, m.stride, m.padding, m.groups)
    fused = m.activation in _native.ACTIVATIONS
    act, after = (_native.ACTIVATIONS[m.activation], None) if fused else (0, m.activation)
    kind = ""
    dims: tuple[Any, ...] = ()
    sn, sc, sh, sw = x.stride()
    wf, wc = w.stride()[:2]
    # a residual is fused where its channels are contiguous: (N, Ho, Wo, F) rows f apart
    fused_r = r is None or (r.shape == (n, f, ho, wo) and r.dtype == torch.float32
                            and r.permute(0, 2, 3, 1).is_contiguous())
    if kernel == "native" and sc == 1 and fused_r and c * f >= _nt.TAPS_1X1_MIN_WEIGHTS:
        geometry = (1, 1, s0, s1, 0, 0, 1, 1, ho, wo)
        wi, wj = w.stride()[2:]  # (F, C, 1, 1) read through its (1, 1, C, F) view
        kind, dims = "taps", ((n, h, wd, c, sn, sh, sw), (wi, wj, wc, wf), geometry)
    elif kernel == "native" and wc == 1 and fused_r and c * f < _nt.TAPS_1X1_MIN_WEIGHTS and (
            sc == 1 or r is None):
        if sc == 1 and m.stride == (1, 1) and x.permute(0, 2, 3, 1).is_contiguous():
            kind, dims = "rows", (c, (0, 0, 0, 0, 0), wf, n * h * wd, c)  # the (M, C) view
        elif sc == 1:  # the strided (N, Ho, Wo, C) view, its pixels gathered by the kernel
            kind, dims = "rows", (0, (ho, wo, sn, sh * s0, sw * s1), wf, n * ho * wo, c)
        elif x.is_contiguous() and m.stride == (1, 1):
            kind, dims = "cols", (wf, sn, sc, c)  # x (N, C, H·W): images sn apart, channels sc
    if not kind and kernel in ("native", "addmm", "conv2d"):
        kind = "run"
    m.__dict__["_plan"] = Plan(key, kind, kernel, (n, f, ho, wo), act, after, dims)
