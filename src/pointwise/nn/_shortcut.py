"""A residual block's last conv writing its output over the shortcut it adds.

``act(conv(x) + b + r)`` written to a fresh tensor costs one more stream to memory than
written over ``r``, whose memory is then where the sums start: ResNet-50's 56² 64→256 +
residual at N=1, 2 threads, 0.59 against 0.72 ms with warm caches, 0.73 against 0.96 with
them flushed (onnxruntime does the same with its Sum input). It is only allowed where
nothing else can see ``r``: in :class:`pointwise.models.resnet.ResNet`'s own forward, for
the shortcuts of its blocks, which no caller holds and no hook sees (:func:`may_consume`
and :func:`quiet` say when).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from pointwise.nn import _fastcall, _fasttaps
from pointwise.nn.conv2d import Conv2d
from pointwise.nn.kernels import _forward_ad, _is_graph_capture
from pointwise.nn.module import Conv1x1

__all__ = ["into_residual", "may_consume", "quiet"]


def into_residual(conv: Any, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    """``conv(x, residual=residual)`` for a caller that gives ``residual`` up: a planned call
    on the channels-last kernels writes the output over it and returns it; any other call
    (``conv`` with hooks included: they run) runs as usual."""
    y = None
    if quiet(conv):
        if type(conv) is Conv1x1:
            y = _fastcall.call(conv, x, residual, into=True)
        elif type(conv) is Conv2d:
            y = _fasttaps.call(conv, x, residual, into=True)
    return conv(x, residual=residual) if y is None else y


def quiet(m: nn.Module | None) -> bool:
    """Whether ``m`` has no forward hooks (that could keep its input or output)."""
    return m is None or not (m._forward_hooks or m._forward_pre_hooks)


def may_consume(x: Any) -> bool:
    """Whether a forward may overwrite the tensors that pass between its modules (``x`` the
    first): an inference call (no autograd, autocast, tracing or forward-mode AD) on a plain
    tensor, with no global forward hooks; the modules' own hooks are the caller's to check
    (:func:`quiet`)."""
    if (type(x) is not torch.Tensor or torch.is_grad_enabled()
            or torch.is_autocast_enabled("cpu") or _is_graph_capture() or _forward_ad()):
        return False
    glob = nn.modules.module
    return not (getattr(glob, "_global_forward_hooks", None)
                or getattr(glob, "_global_forward_pre_hooks", None))
