"""A network's head on the kernels: :class:`GlobalAvgPool2d` and :class:`Linear`.

A classifier ends in ``y = mean over pixels(x) @ Wᵀ + b``. At batch 1 that is a
matrix-vector product: MobileNetV2's 1280→1000 reads a 5 MB weight for 1.3 M multiply-adds,
so its time is the time to stream the weight. torch's ``nn.Linear`` took 0.43–0.58 ms of a
converted MobileNet at N=1 where onnxruntime took 0.19–0.21, and its adaptive average pool on
a channels-last 7×7×1024 map 0.19 ms against 0.018. Both modules here keep torch's module
(its parameters, state_dict keys, ``repr`` and init) and run float32 CPU inference on the
kernels (``csrc/head.c``), by address, on torch's OpenMP team. Right after the body, at
N=1, MobileNetV2's head then took 0.32 ms against torch's 0.62, ResNet-18's 0.25 against
0.45 (``benchmarks/bench_head.py --suite after-body``):

* :class:`Linear` reads its (F, C) weight where it is, without packing it (no copy of a
  weight outlives a call, so every edit is seen), each thread a share of its rows, as dot
  products with the N inputs (``linear_at``), for batches up to :data:`LINEAR_MAX_BATCH`;
  larger ones are a GEMM, on the kernels' rows driver.
* :class:`GlobalAvgPool2d` averages a channels-last map (channels contiguous, any pixel
  strides) in float64 (``mean_at``): the mean is float64's, rounded once.

Anything else (autograd, autocast, tracing and export, forward-mode AD, torch.func's
tensors, other dtypes or devices, a pool over an NCHW map, the kernels switched off with
``POINTWISE_NATIVE=0``) runs torch's own forward, which is what these modules are.
:func:`pointwise.nn.convert` swaps them in (:mod:`pointwise.nn.convert_head`);
:func:`pointwise.nn.to_conv2d` swaps torch's back.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from pointwise.kernels import native as _native
from pointwise.nn import _native_torch as _nt
from pointwise.nn.kernels import _forward_ad, _is_graph_capture

__all__ = ["LINEAR_MAX_BATCH", "GlobalAvgPool2d", "Linear"]

#: Inputs up to this many rows run on ``linear_at``, larger ones on the rows kernel (a GEMM:
#: the weight packed per thread, read transposed from torch's storage). 2 threads, medians of
#: 15 interleaved rounds, warm (``benchmarks/bench_head.py --suite batch``, in ``measured/``),
#: ms for linear_at / rows / torch's F.linear: 1280→1000 N=64 1.03 / 1.14 / 1.27, N=96
#: 1.52 / 1.49 / 1.74, N=128 2.04 / 1.99 / 2.24; 2048→1000 N=96 2.51 / 2.88 / 3.29; 512→1000
#: N=96 0.60 / 0.67 / 0.93. At N=16 linear_at took about half the time of either.
LINEAR_MAX_BATCH = 96


def _inference(*ts: torch.Tensor | None) -> bool:
    """Whether a call on ``ts`` may run on the kernels: no gradient to record, no autocast,
    tracing, export or forward-mode AD, and the kernels built and bound to torch's team."""
    if torch.is_grad_enabled():
        for t in ts:
            if t is not None and t.requires_grad:
                return False
    return not (torch.is_autocast_enabled("cpu") or _forward_ad() or _is_graph_capture()
                ) and _nt.available()


def _f32_cpu(t: torch.Tensor, exact: bool = True) -> bool:
    """A float32 CPU tensor; with ``exact``, a plain ``torch.Tensor`` (no subclass, whose
    operations torch dispatches elsewhere); without, a ``Parameter`` too."""
    return ((type(t) is torch.Tensor or (not exact and type(t) is nn.Parameter))
            and t.dtype is torch.float32 and t.is_cpu)


class Linear(nn.Linear):
    r"""``nn.Linear`` whose float32 CPU inference runs on pointwise's kernels.

    ``y = x Wᵀ + b``, as ``nn.Linear``: the same arguments, parameters, init and state_dict
    keys, so it loads and saves like one (it *is* one: a subclass).

    Unlike torch, a batch of up to :data:`LINEAR_MAX_BATCH` rows (``x``'s leading axes
    together) reads the weight in place as dot products, each thread a share of its rows;
    a larger one runs on the kernels' GEMM (the rows driver).

    Shape:
        Input (\*, C), output (\*, F).

    Examples:
        >>> import torch
        >>> from pointwise.nn import Linear
        >>> m = Linear(1280, 1000)
        >>> m
        Linear(in_features=1280, out_features=1000, bias=True)
        >>> with torch.no_grad():
        ...     torch.allclose(m(torch.ones(2, 1280)), torch.nn.functional.linear(
        ...         torch.ones(2, 1280), m.weight, m.bias), atol=1e-5)
        True
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_tracing():  # before any check: a traced shape makes a TracerWarning
            return super().forward(x)
        y = self._native(x)
        if y is not None:
            return y
        self._check(x)
        return super().forward(x)

    def _native(self, x: Any) -> torch.Tensor | None:
        """The call on ``linear_at``, or None where it can't run. Each check here costs
        ~0.1-3 µs against the kernels' ~40 µs at 1280→1000, N=1, so they are few."""
        w, b = self.weight, self.bias
        if not (_f32_cpu(x) and _f32_cpu(w, False) and (b is None or _f32_cpu(b, False))):
            return None
        shape, c = x.shape, self.in_features
        f = w.shape[0]
        # the shapes as well as the strides: a weight or bias may have been swapped for one
        # of another size, which the kernels would read past
        if (not shape or shape[-1] != c or w.dim() != 2 or w.shape[1] != c
                or (w.stride(1) != 1 and c > 1) or (x.stride(-1) != 1 and c > 1)
                or (b is not None and (b.shape != (f,) or (b.stride(0) != 1 and f > 1)))):
            return None
        n = x.numel() // c if c else 0
        if n == 0 or not _inference(x, w, b):
            return None
        if len(shape) == 2:
            ldx = x.stride(0)
        elif len(shape) == 1:
            ldx = c
        else:
            try:
                ldx = x.view(n, c).stride(0)  # (*, C) -> (N, C): rows evenly spaced
            except RuntimeError:
                return None
        try:
            xa, wa, ba = x.data_ptr(), w.data_ptr(), 0 if b is None else b.data_ptr()
        except RuntimeError:  # torch.func's tensors have no memory of their own
            return None
        y = torch.empty((n, f))  # (N, F)
        kernels = _native._kernel
        if kernels is None:  # switched off since (tests do, to run torch's path)
            return None
        team, ya = torch.get_num_threads(), y.data_ptr()
        if n <= LINEAR_MAX_BATCH:
            ok = kernels.linear_at(team, True, xa, ldx, wa, w.stride(0), ya, f, ba, n, c, f)
        else:  # (N, C) @ (C, F), the weight read transposed: wt
            ok = kernels.rows_at(team, True, 0, xa, ldx, (0, 0, 0, 0, 0), wa, w.stride(0), True,
                                 ya, f, ba, n, c, f)
        if not ok:
            return None
        return y if len(shape) == 2 else y.view(*shape[:-1], f)  # (N, F) -> (*, F)

    def _check(self, x: Any) -> None:
        """What torch would raise as a RuntimeError, as a ValueError or TypeError that names
        the fix."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"expected a torch.Tensor input, but got {type(x).__name__}")
        if x.dim() == 0 or x.shape[-1] != self.in_features:
            raise ValueError(
                f"expected input of shape (*, {self.in_features}) (features on the last "
                f"axis) for weight {tuple(self.weight.shape)}, but got {tuple(x.shape)}; "
                f"flatten the input first (torch.flatten(x, 1)), or give the layer "
                f"in_features={x.shape[-1] if x.dim() else 'C'}")

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> Linear:
        """A ``Linear`` holding ``linear``'s own parameters (not copies), in its mode."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"expected an nn.Linear, but got {type(linear).__name__}")
        new = cls(linear.in_features, linear.out_features, bias=linear.bias is not None,
                  device="meta")  # no init: the parameters are linear's
        new.weight = linear.weight
        new.bias = linear.bias
        new.train(linear.training)
        return new

    def to_conv2d(self) -> nn.Linear:
        """The plain ``nn.Linear`` with these parameters, for :func:`pointwise.nn.to_conv2d`."""
        plain = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                          device="meta")
        plain.weight = self.weight
        plain.bias = self.bias
        plain.train(self.training)
        return plain


class GlobalAvgPool2d(nn.AdaptiveAvgPool2d):
    r"""``nn.AdaptiveAvgPool2d((1, 1))`` whose float32 CPU inference on a channels-last map
    runs on pointwise's kernels.

    ``y[n, c] = mean over (i, j) of x[n, c, i, j]``, summed in float64. Unlike torch, the
    output of a channels-last input is C-contiguous (both memory formats at 1×1).

    Shape:
        Input (N, C, H, W) or (C, H, W); output (N, C, 1, 1) or (C, 1, 1).

    Examples:
        >>> import torch
        >>> from pointwise.nn import GlobalAvgPool2d
        >>> x = torch.arange(8.0).reshape(1, 2, 2, 2).to(memory_format=torch.channels_last)
        >>> GlobalAvgPool2d()(x).flatten().tolist()
        [1.5, 5.5]
    """

    def __init__(self) -> None:
        super().__init__((1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_tracing():  # before any check: a traced shape makes a TracerWarning
            return super().forward(x)
        y = self._native(x)
        if y is not None:
            return y
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"expected a torch.Tensor input, but got {type(x).__name__}")
        if x.dim() not in (3, 4):
            raise ValueError(f"expected input of shape (N, C, H, W) or (C, H, W), but got "
                             f"{tuple(x.shape)}; add the missing axes with x.view(...)")
        return super().forward(x)

    def _native(self, x: Any) -> torch.Tensor | None:
        """The call on ``mean_at``, or None where it can't run. Right after a network's body
        every Python step costs several times what it costs warm (~60 µs in all here against
        the kernel's 15-20 at 7×7×1280, N=1), so the steps are few."""
        # one channel's stride is no matter: torch gives (N, 1, H, W) any
        if not (_f32_cpu(x) and x.dim() == 4 and (x.stride(1) == 1 or x.shape[1] == 1)
                and x.numel() > 0
                and _inference(x)):
            return None
        n, c, h, w = x.shape
        sn, _, sh, sw = x.stride()
        try:
            xa = x.data_ptr()
        except RuntimeError:  # torch.func's tensors have no memory of their own
            return None
        y = torch.empty((n, c, 1, 1))  # (N, C, 1, 1): both memory formats
        kernels = _native._kernel
        if kernels is None:  # switched off since (tests do, to run torch's path)
            return None
        if not kernels.mean_at(torch.get_num_threads(), True, xa, (n, h, w, c, sn, sh, sw),
                               y.data_ptr(), c):
            return None
        return y

    @classmethod
    def from_pool(cls, pool: nn.AdaptiveAvgPool2d) -> GlobalAvgPool2d:
        """The ``GlobalAvgPool2d`` for an ``nn.AdaptiveAvgPool2d`` of output size 1."""
        if not isinstance(pool, nn.AdaptiveAvgPool2d) or not is_global(pool):
            raise ValueError(f"expected nn.AdaptiveAvgPool2d((1, 1)), but got {pool!r}")
        new = cls()
        new.train(pool.training)
        return new

    def to_conv2d(self) -> nn.AdaptiveAvgPool2d:
        """The plain ``nn.AdaptiveAvgPool2d((1, 1))``, for :func:`pointwise.nn.to_conv2d`."""
        return nn.AdaptiveAvgPool2d((1, 1)).train(self.training)


def is_global(pool: nn.Module) -> bool:
    """Whether ``pool`` is an adaptive average pool to one pixel."""
    size = getattr(pool, "output_size", None)
    return isinstance(pool, nn.AdaptiveAvgPool2d) and size in (1, (1, 1), [1, 1])
