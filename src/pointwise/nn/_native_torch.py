"""The compiled kernels (``pointwise.kernels.native``) on torch tensors, for inference.

Used by :func:`pointwise.nn.functional.conv1x1` (kernel ``"native"``) when no gradient is
needed: the tensors' memory is handed to the kernels as NumPy views, without copies, and the
kernels run on torch's own OpenMP team (:func:`pointwise.kernels.native.host_openmp`), so they take
turns with torch's ops the way torch's ops take turns with each other.

* channels-last input, any stride: ``rows`` on the (N·H·W, C) view, or on the strided
  (N, Ho, Wo, C) view, which the kernel gathers slab by slab; with large weights
  (:data:`TAPS_1X1_MIN_WEIGHTS`), ``taps`` (one tap). A channels-last residual of the
  output's shape is added in the kernel's epilogue.
* NCHW-contiguous input, stride 1: ``cols`` on the (N, C, H·W) view; a residual is added
  afterwards by torch.

Anything else returns None and the caller uses torch's kernels.

The weight and bias are read from their own memory on every call: the kernels pack the
(F, C) weight into their panels themselves, reading it transposed, so no copy of a weight
is kept between calls and no edit, however it was made (``.data``, a NumPy view,
``load_state_dict``, an optimizer step, a parametrization), can leave a stale one.

Large outputs come from a small pool of buffers (:class:`_Buffers`), reused once nothing
refers to them any more: glibc hands freed blocks of tens of MB back to the OS, and writing
a fresh one page-faults on every 4 KiB page (ResNet-50's 8×256×56×56 outputs: ~4,000 faults,
4–5 ms of a 6 ms layer).
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable

import numpy as np
import torch

from pointwise.kernels import native as _native

__all__ = ["available", "forward"]


_TORCH_DIR = os.path.dirname(os.path.realpath(torch.__file__))


def available() -> bool:
    """True when the kernels are built and can run on torch's OpenMP team."""
    return _native.ENABLED and _native.host_openmp(prefer=_TORCH_DIR)


#: 1×1 convs with at least this many weights (C·F) run on the taps kernels (one tap), the
#: others on the rows kernel; both pack the weight on every call, the taps kernels once for
#: all threads, the rows kernel per thread for its rows. Interleaved, 2 threads, bias + ReLU,
#: channels-last, ResNet-50's 1×1 layers (``benchmarks/bench_nn_call.py --suite pack``):
#: taps ran at 1.00-1.11× rows' speed at N=8 and 1.04-1.15× at N=1 where C·F ≥ 2^18 (14×14
#: and 7×7), and at 0.88-1.07× and 0.90-1.01× below.
TAPS_1X1_MIN_WEIGHTS = 1 << 18


def _storage_users(t: torch.Tensor) -> int:
    """How many tensors share ``t``'s storage, plus one for the storage object asked."""
    return torch._C._storage_Use_Count(t.untyped_storage()._cdata)


class _Buffers:
    """Float32 output buffers of at least ``min_bytes``, reused once free, ``max_bytes`` in all.

    A buffer is free when no tensor but the pool's own uses its storage: every tensor the
    pool hands out is a view, so it counts as a user for as long as it (or any view of it,
    NumPy arrays included) lives. Free buffers stay allocated, up to ``max_bytes``;
    :meth:`clear` drops them.
    """

    def __init__(self, min_bytes: int = 4 << 20, max_bytes: int = 256 << 20) -> None:
        self.min_bytes, self.max_bytes = min_bytes, max_bytes
        self._bufs: list[torch.Tensor] = []
        self._lock = threading.Lock()  # two threads must not take the same free buffer
        self.enabled = hasattr(torch._C, "_storage_Use_Count")

    def _free(self, b: torch.Tensor) -> bool:
        return _storage_users(b) <= 2  # the pool's tensor and the storage object asked

    def empty(self, shape: tuple[int, ...]) -> torch.Tensor:
        """An uninitialised float32 tensor of ``shape``, C-contiguous."""
        numel = math.prod(shape)
        if not self.enabled or 4 * numel < self.min_bytes:
            return torch.empty(shape)
        with self._lock:
            for b in self._bufs:
                if b.numel() == numel and self._free(b):
                    return b.view(shape)
            # a normal tensor even under inference_mode: a view of an inference tensor could
            # not be saved for backward by a later caller outside it
            with torch.inference_mode(False):
                b = torch.empty(numel)
            total = 4 * (numel + sum(x.numel() for x in self._bufs))
            for old in [x for x in self._bufs if self._free(x)]:
                if total <= self.max_bytes:
                    break
                self._bufs.remove(old)
                total -= 4 * old.numel()
            if total <= self.max_bytes:
                self._bufs.append(b)
            return b.view(shape)

    def clear(self) -> None:
        """Drop the pool's hold on every buffer (those in use live on with their tensors)."""
        with self._lock:
            self._bufs.clear()


BUFFERS = _Buffers()


def apart(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether ``a`` and ``b`` lie in different storages: one may be written while the other
    is read."""
    return a.untyped_storage().data_ptr() != b.untyped_storage().data_ptr()


def addresses(*ts: torch.Tensor | None) -> tuple[int, ...] | None:
    """The data pointers of ``ts`` (0 for None) for the kernels' by-address entries, or None
    when one has no memory of its own (torch.func's tensors)."""
    try:
        return tuple(0 if t is None else t.data_ptr() for t in ts)
    except RuntimeError:
        return None


class _NoView(Exception):
    """A tensor whose memory NumPy cannot view."""


def _view(t: torch.Tensor) -> np.ndarray:
    try:
        return t.detach().numpy()
    except (RuntimeError, TypeError) as e:
        raise _NoView from e


def forward(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None,
            stride: tuple[int, int], activation: str | None, residual: torch.Tensor | None,
            activate: Callable[[torch.Tensor, str | None], torch.Tensor]
            ) -> torch.Tensor | None:
    """``act(conv1x1(x) + b + residual)`` on the kernels for ``x`` (N, C, H, W) float32 on CPU
    and ``w`` (F, C, 1, 1), in ``x``'s memory format; None when they can't take it.

    What the kernel can't fuse, a residual in another memory format or an activation other
    than ReLU/ReLU6, is applied afterwards in place: ``y += residual``, then
    ``activate(y, activation)``.
    """
    if not available() or x.dtype != torch.float32 or x.device.type != "cpu":
        return None
    try:
        return _forward(x, w, b, stride, activation, residual, activate)
    except _NoView:  # a tensor without plain memory: torch.func's wrappers under vmap, say
        return None


def _forward(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None,
             stride: tuple[int, int], activation: str | None, residual: torch.Tensor | None,
             activate: Callable[[torch.Tensor, str | None], torch.Tensor]
             ) -> torch.Tensor | None:
    n, c, h, wd = x.shape
    f = w.shape[0]
    ho, wo = (h - 1) // stride[0] + 1, (wd - 1) // stride[1] + 1
    team = torch.get_num_threads()
    bn = None if b is None else _view(b)
    fused_act = activation in _native.ACTIVATIONS
    xl = x.permute(0, 2, 3, 1)  # (N, H, W, C) view
    if xl.is_contiguous() and (not x.is_contiguous() or h * wd == 1):
        xv = _view(xl)
        if stride != (1, 1):
            xv = xv[:, :: stride[0], :: stride[1]]  # (N, Ho, Wo, C) strided view
        else:
            xv = xv.reshape(n * h * wd, c)  # (M, C) view
        y = BUFFERS.empty((n, ho, wo, f))  # (N, Ho, Wo, F)
        y2 = _view(y).reshape(n * ho * wo, f)  # (M, F) view
        r2 = None
        rl = None if residual is None else residual.permute(0, 2, 3, 1)  # (N, Ho, Wo, F)
        if rl is not None and rl.is_contiguous():
            r2 = _view(rl).reshape(n * ho * wo, f)  # (M, F) view
        fused_res = residual is None or r2 is not None
        act = activation if fused_act and fused_res else None
        if c * f >= TAPS_1X1_MIN_WEIGHTS:  # large weights: the taps kernels, one tap
            geometry = (1, 1, *stride, 0, 0, 1, 1, ho, wo)
            w4 = _view(w.permute(2, 3, 1, 0))  # (F, C, 1, 1) -> (1, 1, C, F) view, HWIO
            if not _native.taps(_view(xl), w4, y2, bn, act, r2, geometry, team=team):
                return None
        elif not _native.rows(xv, _view(w.reshape(f, c).t()), y2, bn, act, residual=r2,
                              team=team):  # (F, C) -> (C, F) view, read transposed
            return None
        y4 = y.permute(0, 3, 1, 2)  # (N, Ho, Wo, F) -> (N, F, Ho, Wo), channels-last
        return _finish(y4, residual if not fused_res else None,
                       activation if act != activation else None, activate)
    if x.is_contiguous() and stride == (1, 1):
        x3 = _view(x).reshape(n, c, h * wd)  # (N, C, P) view
        y = BUFFERS.empty((n, f, ho, wo))  # (N, F, H, W)
        y3 = _view(y).reshape(n, f, ho * wo)  # (N, F, P) view
        w2 = _view(w).reshape(f, c)  # (F, C, 1, 1) -> (F, C) view
        act = activation if fused_act and residual is None else None
        if not _native.cols(w2, x3, y3, bn, act, team=team):
            return None
        return _finish(y, residual, activation if act != activation else None, activate)
    return None


def _finish(y: torch.Tensor, residual: torch.Tensor | None, activation: str | None,
            activate: Callable[[torch.Tensor, str | None], torch.Tensor]) -> torch.Tensor:
    """The rest of the epilogue on a fresh ``y``: ``activation(y + residual)``, in place."""
    if residual is not None:
        y.add_(residual)
    return y if activation is None else activate(y, activation)
