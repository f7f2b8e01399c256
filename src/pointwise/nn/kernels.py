"""The kernels behind :func:`pointwise.nn.functional.conv1x1`, and the rule that picks one.

Every kernel sees the problem as torch sees it, ``x`` (N, C, H, W) and weight (F, C/G, 1, 1),
whatever the memory format; layouts NHWC/HWC/CHW are views of that. Kernels:

* ``conv2d``: ``F.conv2d`` and the activation. Any device, dtype and option; keeps the
  input's memory format; the only kernel used while tracing, scripting or exporting, so the
  graph is the standard one.
* ``addmm``: ``torch.addmm(b, X, Wᵀ)`` on the (N·H·W, C) view of a channels-last input, the
  bias fused into the GEMM. One group, no padding; stride gathers the pixels first.
* ``numpy``: the NumPy core on CPU, wrapped in a :class:`torch.autograd.Function` whose
  backward is :func:`pointwise.conv1x1_backward`. Used for integer tensors (exact, as in the
  core; torch has no integer conv on CPU).
* ``native``: pointwise's compiled kernels (:mod:`pointwise.nn._native_torch`) on the
  tensors' memory, run on torch's own OpenMP team, with bias, ReLU/ReLU6 and a residual
  fused into the output tile. Inference only (no gradient needed): float32 on CPU, one
  group, no padding; channels-last input at any stride, NCHW input at stride 1.

A residual (a tensor of the output's shape, ``act(conv(x) + b + residual)``) is added by the
``native`` kernel in its epilogue; the others add it in place before the activation (or out
of place under autograd).

The rule that picks one is :func:`choose_kernel`; its measurements are in
``benchmarks/bench_nn_kernels.py``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.autograd.forward_ad as _fw_ad
import torch.nn.functional as F

from pointwise import conv as _core
from pointwise.nn import _native_torch

__all__ = ["ACTIVATIONS", "ADDMM_MAX_MACS", "KERNELS", "NATIVE_MIN_MACS", "choose_kernel"]

KERNELS = ("conv2d", "addmm", "numpy", "native")

ACTIVATIONS = {
    None: lambda t, inplace=False: t,
    "relu": F.relu,
    "relu6": F.relu6,
    "silu": F.silu,
    "hardswish": F.hardswish,
}


def _in_place_ok(z: torch.Tensor) -> bool:
    """Whether the epilogue may overwrite the fresh result ``z``: not under autograd, and not
    while a graph is captured (the graph should show the standard ops)."""
    return not (torch.is_grad_enabled() and z.requires_grad) and not _is_graph_capture()


def _activate(z: torch.Tensor, activation: str | None) -> torch.Tensor:
    """``activation(z)``; in place (the epilogue on a fresh result) when autograd is off."""
    return ACTIVATIONS[activation](z, inplace=_in_place_ok(z))


def _epilogue(z: torch.Tensor, residual: torch.Tensor | None,
              activation: str | None) -> torch.Tensor:
    """``activation(z + residual)`` on a fresh conv result ``z``."""
    if residual is not None:
        z = z.add_(residual) if _in_place_ok(z) and not residual.requires_grad else z + residual
    return _activate(z, activation)


def _is_graph_capture() -> bool:
    """True while torch.jit traces or scripts, ONNX exports, or dynamo/export compiles."""
    return bool(
        torch.jit.is_tracing()
        or torch.jit.is_scripting()
        or torch.onnx.is_in_onnx_export()
        or torch.compiler.is_compiling()
    )


def _forward_ad() -> bool:
    """True inside a forward-mode AD dual level (``torch.autograd.forward_ad``): the
    compiled kernels would drop the inputs' tangents, so torch's own ops run."""
    return _fw_ad._current_level >= 0


def choose_kernel(
    x: torch.Tensor,
    w: torch.Tensor,
    b: torch.Tensor | None,
    stride: tuple[int, int],
    padding: tuple[int, int],
    groups: int,
    *,
    grad: bool = False,
) -> str:
    """The kernel for ``x`` (N, C, H, W) and ``w`` (F, C/G, 1, 1), by the measured rule.

    ``grad``: whether the call must be differentiable (autograd on, and an input that
    requires grad).

    * integer dtypes on CPU: ``numpy`` (exact; torch has no integer conv on CPU);
    * float32 on CPU without ``grad``, one group, no padding, channels-last input (any
      stride) or NCHW input at stride 1, at least :data:`NATIVE_MIN_MACS` multiply-adds,
      where the compiled kernels can run on torch's OpenMP team: ``native``. At N=8 it was
      the fastest or within noise of it on all 18 layers of ResNet-50, MobileNetV2 and
      GoogLeNet in both formats (NCHW 56² 64→256: 5.1 ms against conv2d's 10.8; three
      bottleneck bodies: 65.6 against 129.5 ms NCHW, 54.7 against 60.0 channels-last);
      below 2^20 multiply-adds its extra ~10 µs of setup lost to addmm and conv2d;
    * channels-last input on CPU, float32/float64, one group, no padding, and at most
      :data:`ADDMM_MAX_MACS` multiply-adds: ``addmm``. There it is as fast as oneDNN's conv2d
      or faster (N=1 layers of up to 14²·64·64: 0.022–0.035 ms against 0.025–0.040 ms);
      above it conv2d wins or ties (at N=8: GoogLeNet 3a's 192→16/32/64, 0.26–0.94 ms
      against 0.30–0.98 ms; ResNet-50's layers by up to 1.2×), quiet-machine run of
      2026-11-25;
    * everything else (NCHW input, CUDA, half types, groups, padding, every float call
      under autocast, whose dtype torch's conv2d then decides, as for ``nn.Conv2d``, and
      inside a forward-mode AD dual level, whose tangents torch's conv2d carries):
      ``conv2d``.

    Measured and not chosen (benchmarks/bench_nn_kernels.py): a per-image ``W @ X_n`` on
    NCHW input, faster than conv2d alone at 56² but slower inside a model; and the NumPy core
    for floats, which between torch ops competes with torch's spinning OpenMP threads and
    ran 4–40× slower under the default ``OMP_WAIT_POLICY`` (the ``native`` kernel avoids
    that by running on torch's own team).
    """
    if not x.dtype.is_floating_point:
        return "numpy" if x.device.type == "cpu" else "conv2d"
    if (
        x.device.type != "cpu"
        or torch.is_autocast_enabled("cpu")
        or _forward_ad()
        or x.dtype not in (torch.float32, torch.float64)
        or groups != 1
        or padding != (0, 0)
        or x.dim() != 4
        or x.numel() == 0
    ):
        return "conv2d"
    n, c, h, wd = x.shape
    # channels-last memory; a 1×1 image is both formats, and either kernel keeps it so
    channels_last = x.permute(0, 2, 3, 1).is_contiguous() and (
        not x.is_contiguous() or h * wd == 1
    )
    ho, wo = (h - 1) // stride[0] + 1, (wd - 1) // stride[1] + 1
    macs = n * ho * wo * c * w.shape[0]
    if (not grad and macs >= NATIVE_MIN_MACS and x.dtype == torch.float32
            and w.dtype == torch.float32 and (b is None or b.dtype == torch.float32)
            and (channels_last or (x.is_contiguous() and stride == (1, 1)))
            and _native_torch.available()):
        return "native"
    if channels_last and macs <= ADDMM_MAX_MACS:
        return "addmm"
    return "conv2d"


#: channels-last: addmm up to this many multiply-adds (N·Ho·Wo·C·F), conv2d above.
ADDMM_MAX_MACS = 1 << 22

#: inference: the native kernels from this many multiply-adds (N·Ho·Wo·C·F).
NATIVE_MIN_MACS = 1 << 20


def _run(
    kernel: str,
    x: torch.Tensor,
    w: torch.Tensor,
    b: torch.Tensor | None,
    stride: tuple[int, int],
    padding: tuple[int, int],
    groups: int,
    activation: str | None,
    residual: torch.Tensor | None = None,
) -> torch.Tensor:
    """Run one kernel on ``x`` (N, C, H, W), ``w`` (F, C/G, 1, 1) and ``residual``
    (N, F, Ho, Wo) or None: (N, F, Ho, Wo).

    ``native`` falls back to ``conv2d`` for a call its kernels decline."""
    if kernel == "native":
        y = _native_torch.forward(x, w, b, stride, activation, residual, _activate)
        if y is not None:
            return y
        kernel = "conv2d"
    if kernel == "conv2d":
        z = F.conv2d(x, w, b, stride=stride, padding=padding, groups=groups)
        return _epilogue(z, residual, activation)
    if kernel == "addmm":
        return _epilogue(_addmm(x, w, b, stride), residual, activation)
    if kernel == "numpy":
        if residual is None:
            return _NumpyConv.apply(x, w, b, stride, padding, groups, activation)
        z = _NumpyConv.apply(x, w, b, stride, padding, groups, None)
        return _epilogue(z, residual, activation)
    raise ValueError(f"expected kernel to be one of {KERNELS}, but got {kernel!r}")


def _addmm(
    x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, stride: tuple[int, int]
) -> torch.Tensor:
    """One group, no padding: a GEMM on the channels-last view, bias fused."""
    xl = x.permute(0, 2, 3, 1)[:, :: stride[0], :: stride[1]]  # (N, Ho, Wo, C) view
    n, ho, wo, c = xl.shape
    f = w.shape[0]
    x2 = xl.reshape(n * ho * wo, c)  # (M, C); a copy only when strided
    w2 = w.reshape(f, c).t()  # (F, C) -> (C, F)
    y2 = torch.mm(x2, w2) if b is None else torch.addmm(b, x2, w2)  # (M, C) @ (C, F) -> (M, F)
    return y2.view(n, ho, wo, f).permute(0, 3, 1, 2)  # (M, F) -> (N, F, Ho, Wo), channels-last


class _NumpyConv(torch.autograd.Function):
    """The NumPy core as an autograd op, on CPU tensors; backward is conv1x1_backward."""

    @staticmethod
    def forward(ctx, x, w, b, stride, padding, groups, activation):
        layout, xn, wn = _numpy_views(x, w)
        bn = None if b is None else b.detach().numpy()
        opts = dict(layout=layout, stride=stride, padding=padding, groups=groups,
                    activation=activation)
        yn = _core.conv1x1(xn, wn, bn, **opts)
        y = torch.from_numpy(yn)
        if layout == "NHWC":
            y = y.permute(0, 3, 1, 2)  # (N, Ho, Wo, F) -> (N, F, Ho, Wo), channels-last
        ctx.opts, ctx.has_bias = opts, b is not None
        ctx.save_for_backward(x, w, b, y)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        x, w, b, y = ctx.saved_tensors
        layout, xn, wn = _numpy_views(x, w)
        if layout == "NHWC":  # (N, F, Ho, Wo) -> (N, Ho, Wo, F), the core's layout
            grad, y = grad.permute(0, 2, 3, 1), y.permute(0, 2, 3, 1)
        gx, gw, gb = _core.conv1x1_backward(
            grad.detach().numpy(), xn, wn, bias=None if b is None else b.detach().numpy(),
            has_bias=ctx.has_bias, y=y.detach().numpy(), **ctx.opts,
        )
        gxt = torch.from_numpy(gx)
        gwt = torch.from_numpy(gw)
        if layout == "NHWC":
            gxt = gxt.permute(0, 3, 1, 2)  # (N, H, W, C) -> (N, C, H, W)
            gwt = gwt.t()[:, :, None, None]  # (C/G, F) -> (F, C/G, 1, 1)
        gbt = None if gb is None else torch.from_numpy(gb)
        return gxt, gwt.reshape(w.shape), gbt, None, None, None, None


def _numpy_views(x: torch.Tensor, w: torch.Tensor) -> tuple[str, np.ndarray, np.ndarray]:
    """Zero-copy NumPy views in the layout that matches ``x``'s memory: NHWC or NCHW."""
    xd, wd = x.detach(), w.detach()
    if x.dim() == 4 and not x.is_contiguous() and x.permute(0, 2, 3, 1).is_contiguous():
        wm = wd.reshape(wd.shape[0], wd.shape[1]).t()  # (F, C/G) -> (C/G, F)
        return "NHWC", xd.permute(0, 2, 3, 1).numpy(), wm.numpy()
    return "NCHW", xd.numpy(), wd.numpy()
