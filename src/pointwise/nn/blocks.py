"""MobileNet's blocks as one module each, for inference: :func:`pointwise.inverted_residual`
and :func:`pointwise.depthwise_separable` inside torch models.

:func:`pointwise.nn.convert` builds them from the zoo's ``InvertedResidual`` and
``DepthwiseSeparable`` (and any block with a ``fused_block()`` hook) once their BatchNorms
are folded and their activations fused into the convs. The modules keep those convs as
children (``expand``, ``dw``, ``project``), so the parameters are the block's; for float32
CPU inference on channels-last tensors the whole block runs on the fused kernel
(``kernels/csrc/blocks.c``) on torch's OpenMP team, the expanded tensor never written out.
Anything else (autograd, NCHW-contiguous input, other dtypes, tracing and export) runs the
children one after the other. ``to_conv2d()`` gives the block as torch's own modules.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from pointwise.kernels import native as _native
from pointwise.nn import _fastblock
from pointwise.nn import _native_torch as _nt
from pointwise.nn._native_taps import is_depthwise3x3
from pointwise.nn.conv2d import Conv2d
from pointwise.nn.kernels import _forward_ad, _is_graph_capture
from pointwise.nn.module import Conv1x1

__all__ = ["FusedDepthwiseSeparable", "FusedInvertedResidual", "fused_depthwise_separable",
           "fused_inverted_residual"]


class _Fused(nn.Module):
    """What both blocks share: children, the fused forward and the way back to torch."""

    #: the activation after each of (expand, dw, project)
    acts: tuple[str | None, str | None, str | None]
    expand: Any  # Conv1x1 or None
    dw: Any  # pointwise.nn.Conv2d
    project: Any  # Conv1x1

    def __init__(self, expand: Any, dw: Any, project: Any,
                 residual: bool) -> None:
        super().__init__()
        self.expand = expand
        self.dw = dw
        self.project = project
        self.residual = residual

    #: the call's plan (pointwise.nn._fastblock) is no TorchScript
    __jit_ignored_attributes__: ClassVar[list[str]] = ["_plan"]
    #: pointwise.nn.freeze applies: its planned calls can read weights packed once
    _freezable: ClassVar[bool] = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = _fastblock.call(self, x)  # planned before: the data pointers, straight on
        if y is not None:
            return y
        if ((not torch.is_grad_enabled() or not _needs_grad(self, x))
                and not _is_graph_capture() and not _forward_ad()):
            y = self._fused(x)
            if y is not None:
                _fastblock.plan(self, x)
                return y
        h = x if self.expand is None else self.expand(x)  # (N, E, H, W)
        h = self.dw(h)  # (N, E, H/s, W/s)
        return self.project(h, residual=x) if self.residual else self.project(h)

    def _fused(self, x: torch.Tensor) -> torch.Tensor | None:
        if (x.dim() != 4 or x.dtype != torch.float32 or x.device.type != "cpu"
                or not _nt.available()):
            return None
        xl = x.permute(0, 2, 3, 1)  # (N, H, W, C) view
        n, h, w, _ = xl.shape
        if xl.stride(3) != 1 or n * h * w == 0 or (self.residual and not xl.is_contiguous()):
            return None
        s = self.dw.stride[0]
        ho, wo = (h - 1) // s + 1, (w - 1) // s + 1
        f = self.project.out_channels
        try:
            we, wd, wp = self._weights()
            y = _nt.BUFFERS.empty((n, ho, wo, f))  # (N, Ho, Wo, F)
            bias = [None if c is None or c.bias is None else _nt._view(c.bias)
                    for c in (self.expand, self.dw, self.project)]
            if not _native.block(_nt._view(xl), we, bias[0], wd, bias[1], wp, bias[2],
                                 _nt._view(y).reshape(n * ho * wo, f), self.acts, s,
                                 self.residual, transposed=True,
                                 team=torch.get_num_threads()):
                return None
        except _nt._NoView:  # a tensor without plain memory (vmap's wrappers, say)
            return None
        return y.permute(0, 3, 1, 2)  # (N, Ho, Wo, F) -> (N, F, Ho, Wo), channels-last

    def _weights(self) -> tuple[Any, ...]:
        """(we (E, C) or None, wd (3, 3, E), wp (F, E)): the 1×1 weights as views of torch's
        own (F, C) storage, which the kernel packs on every call (as every pointwise.nn
        inference call does: no edit to a weight, however made, leaves a stale copy), and
        the depthwise weight copied (9·E floats)."""
        def matrix(conv: Any) -> np.ndarray:
            w = conv.weight.detach()
            return _nt._view(w.reshape(w.shape[0], w.shape[1]))  # (F, C, 1, 1) -> (F, C)

        we = None if self.expand is None else matrix(self.expand)
        wd = np.ascontiguousarray(_nt._view(self.dw.weight.detach()[:, 0].permute(1, 2, 0)))
        return we, wd, matrix(self.project)  # wd: (E, 1, 3, 3) -> (3, 3, E)

    def to_conv2d(self) -> nn.Module:
        """The block as torch's own modules (``nn.Conv2d`` and activations)."""
        def plain(conv: Any) -> nn.Module:
            return conv.to_conv2d() if hasattr(conv, "to_conv2d") else conv

        return _TorchBlock(None if self.expand is None else plain(self.expand), plain(self.dw),
                           plain(self.project), self.residual)


def _needs_grad(m: nn.Module, x: torch.Tensor) -> bool:
    return x.requires_grad or any(p.requires_grad for p in m.parameters())


class FusedInvertedResidual(_Fused):
    """MobileNetV2's inverted residual for inference, as :func:`pointwise.inverted_residual`.

    Args:
        expand: the expanding 1×1 conv (``Conv1x1`` with its BN folded and activation
            fused), or None (expansion 1).
        dw: the depthwise 3×3 conv (``pointwise.nn.Conv2d``, padding 1, stride 1 or 2),
            with the same activation as ``expand``.
        project: the linear 1×1 projection (``Conv1x1``, no activation).
        residual: add the block's input.

    Examples:
        >>> import torch
        >>> from pointwise.models.mobilenet import InvertedResidual
        >>> from pointwise.nn import convert
        >>> block = InvertedResidual(24, 24, 1, 6).eval()
        >>> fused, _ = convert(block)
        >>> type(fused).__name__
        'FusedInvertedResidual'
        >>> x = torch.randn(2, 24, 14, 14).to(memory_format=torch.channels_last)
        >>> with torch.inference_mode():
        ...     ok = torch.allclose(fused(x), block(x), atol=1e-4)
        >>> ok
        True
    """

    def __init__(self, expand: Any, dw: Any, project: Any,
                 residual: bool) -> None:
        super().__init__(expand, dw, project, residual)
        self.acts = (getattr(expand, "activation", None), dw.activation, project.activation)


class FusedDepthwiseSeparable(_Fused):
    """MobileNet's depthwise-separable block for inference, as
    :func:`pointwise.depthwise_separable`: ``dw`` (depthwise 3×3 with its activation), then
    ``project`` (the pointwise 1×1 with its activation)."""

    def __init__(self, dw: Any, project: Any) -> None:
        super().__init__(None, dw, project, False)
        self.acts = (None, dw.activation, project.activation)


class _TorchBlock(nn.Module):
    """A fused block's convs as torch modules: each conv, then its activation, then the
    input added when ``residual``."""

    def __init__(self, expand: Any, dw: Any, project: Any,
                 residual: bool) -> None:
        super().__init__()
        self.expand, self.dw, self.project, self.residual = expand, dw, project, residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x if self.expand is None else self.expand(x)  # (N, E, H, W)
        y = self.project(self.dw(h))  # (N, F, H/s, W/s)
        return y + x if self.residual else y


# ------------------------------------------------------------------ building them from convs
def fused_inverted_residual(expand: Any, dw: Any, project: Any,
                            residual: bool) -> FusedInvertedResidual | None:
    """The block of these convs (BN folded, activations fused), or None when the fused
    kernel's block is not theirs (strides, padding or groups of another shape)."""
    if expand is not None and not _plain_1x1(expand):
        return None
    e = dw.in_channels if expand is None else expand.out_channels
    if not (_depthwise(dw, e) and _plain_1x1(project) and project.in_channels == e):
        return None
    c = e if expand is None else expand.in_channels
    if residual and (dw.stride != (1, 1) or project.out_channels != c):
        return None
    return FusedInvertedResidual(expand, dw, project, residual)


def fused_depthwise_separable(dw: Any, project: Any
                              ) -> FusedDepthwiseSeparable | None:
    """The block of these convs, or None as for :func:`fused_inverted_residual`."""
    if not (_depthwise(dw, dw.in_channels) and _plain_1x1(project)
            and project.in_channels == dw.out_channels):
        return None
    return FusedDepthwiseSeparable(dw, project)


def _plain_1x1(m: Any) -> bool:
    return (isinstance(m, Conv1x1) and m.stride == (1, 1) and m.padding == (0, 0)
            and m.groups == 1)


def _depthwise(m: Any, channels: int) -> bool:
    return isinstance(m, Conv2d) and is_depthwise3x3(m) and m.in_channels == channels
