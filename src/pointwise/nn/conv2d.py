"""``Conv2d``: ``nn.Conv2d`` whose inference runs on pointwise's taps kernels, with an
activation and a residual fused into its epilogue."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from pointwise.layout import check_activation
from pointwise.nn import _fasttaps, _native_taps
from pointwise.nn.kernels import _activate, _epilogue, _forward_ad, _is_graph_capture
from pointwise.nn.module import ACTIVATION_MODULES

__all__ = ["Conv2d"]


class Conv2d(nn.Conv2d):
    r"""``nn.Conv2d`` with an optional fused ``activation`` and ``residual``.

    ``y = act(conv2d(x) + bias + residual)``, with every argument of ``nn.Conv2d`` and the
    same weight (F, C/G, kh, kw), init, state_dict keys and ``repr`` (plus the activation).

    For inference (no gradient needed) on float32 CPU tensors whose channels are contiguous
    (``channels_last``), with one group, the conv runs on pointwise's compiled taps kernels
    (:func:`pointwise.conv2d`'s implicit GEMM), or, a depthwise 3×3 with padding 1 and
    stride 1 or 2, on the depthwise kernel, on torch's OpenMP threads, with bias,
    ReLU/ReLU6 and the residual applied to each output tile; the weight is read from its
    own memory on every call, so any edit to it is seen. Everything else (autograd,
    NCHW-contiguous input, other dtypes and devices, other groups, autocast, tracing and
    export) runs ``nn.Conv2d``'s own forward, then the residual and activation.

    Args:
        activation (str or None): ``"relu"``, ``"relu6"``, ``"silu"`` or ``"hardswish"``.
            Unlike torch, the conv can carry its activation.
        The others: as ``nn.Conv2d``.

    Examples:
        >>> import torch
        >>> from pointwise.nn import Conv2d
        >>> m = Conv2d(8, 8, 3, padding=1, activation="relu")
        >>> m
        Conv2d(8, 8, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1), activation='relu')
        >>> x = torch.randn(2, 8, 14, 14).to(memory_format=torch.channels_last)
        >>> with torch.inference_mode():
        ...     y = m(x, residual=x)
        >>> y.shape, bool((y >= 0).all())
        (torch.Size([2, 8, 14, 14]), True)
    """

    __jit_ignored_attributes__: ClassVar[list[str]] = ["activation"]
    #: pointwise.nn.freeze applies: its planned taps calls can read a weight packed once
    _freezable: ClassVar[bool] = True

    def __init__(self, *args: Any, activation: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.activation = check_activation(activation)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """``activation(conv(x) + bias + residual)``; ``residual`` (the output's shape) is
        optional, a residual block's shortcut added before the activation."""
        grad = torch.is_grad_enabled() and (
            x.requires_grad or self.weight.requires_grad
            or (self.bias is not None and self.bias.requires_grad)
            or (residual is not None and residual.requires_grad))
        # under autocast torch's conv decides the dtype, as for nn.Conv2d
        if (not grad and not _is_graph_capture() and not _forward_ad()
                and not torch.is_autocast_enabled("cpu")):
            y = _fasttaps.call(self, x, residual)  # an inference call planned before
            if y is not None:
                return y
            y = _native_taps.forward(self, x, residual, _activate)
            if y is not None:
                _fasttaps.plan(self, x, residual)
                return y
        return _epilogue(self._conv_forward(x, self.weight, self.bias), residual,
                         self.activation)

    def extra_repr(self) -> str:
        s = super().extra_repr()
        return s if self.activation is None else f"{s}, activation={self.activation!r}"

    @classmethod
    def from_conv2d(cls, conv: nn.Conv2d, activation: str | None = None) -> Conv2d:
        """A ``Conv2d`` with a copy of ``conv``'s parameters and options (device, dtype,
        training mode and ``requires_grad`` included)."""
        if not isinstance(conv, nn.Conv2d):
            raise TypeError(f"expected an nn.Conv2d, but got {type(conv).__name__}")
        w = conv.weight
        opts: dict[str, Any] = {"stride": conv.stride, "padding": conv.padding,
                                "dilation": conv.dilation, "kernel_size": conv.kernel_size}
        new = cls(conv.in_channels, conv.out_channels, groups=conv.groups,
                  bias=conv.bias is not None, padding_mode=conv.padding_mode,
                  device=w.device, dtype=w.dtype, activation=activation, **opts)
        new.load_state_dict(conv.state_dict())
        new.weight.requires_grad_(w.requires_grad)
        new.train(conv.training)
        return new

    def to_conv2d(self) -> nn.Module:
        """A plain ``nn.Conv2d`` with a copy of the parameters; with an activation,
        ``nn.Sequential(conv, activation)``."""
        w = self.weight
        opts: dict[str, Any] = {"stride": self.stride, "padding": self.padding,
                                "dilation": self.dilation, "kernel_size": self.kernel_size}
        conv = nn.Conv2d(self.in_channels, self.out_channels, groups=self.groups,
                         bias=self.bias is not None, padding_mode=self.padding_mode,
                         device=w.device, dtype=w.dtype, **opts)
        conv.load_state_dict(self.state_dict())
        conv.weight.requires_grad_(w.requires_grad)
        conv.train(self.training)
        if self.activation is None:
            return conv
        return nn.Sequential(conv, ACTIVATION_MODULES[self.activation]())
