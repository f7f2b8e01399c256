"""``Conv1x1``: a drop-in ``nn.Conv2d(kernel_size=1)`` whose forward is ``conv1x1``."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import nn

from pointwise.layout import check_activation
from pointwise.nn import _fastcall
from pointwise.nn import functional as PF

__all__ = ["Conv1x1"]

ACTIVATION_MODULES: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "silu": nn.SiLU,
    "hardswish": nn.Hardswish,
}


def _pair(v: Any, name: str, minimum: int) -> tuple[int, int]:
    pair = tuple(v) if isinstance(v, (tuple, list)) else (v, v)
    if len(pair) != 2 or not all(isinstance(i, int) and i >= minimum for i in pair):
        raise ValueError(f"expected {name} to be an int >= {minimum} or a pair of them, "
                         f"but got {name}={v!r}")
    return int(pair[0]), int(pair[1])


class Conv1x1(nn.Module):
    r"""A 1×1 convolution that can replace ``nn.Conv2d(kernel_size=1)`` anywhere.

    ``y[n, f, i, j] = act(b[f] + Σ_c w[f, c] · x[n, c, i·s − p, j·s − p])``, per group.

    Args:
        in_channels (int): C, channels of the input.
        out_channels (int): F, channels of the output.
        stride (int or tuple): default 1.
        padding (int or tuple): zero padding, default 0. Padded pixels give ``act(bias)``.
        groups (int): default 1; must divide C and F.
        bias (bool): learnable bias, default True.
        activation (str or None): ``"relu"``, ``"relu6"``, ``"silu"`` or ``"hardswish"``,
            fused into the epilogue. Unlike torch, the conv can carry its activation.
        device, dtype: as for every torch module.

    Shape:
        Input (N, C, H, W) or unbatched (C, H, W), NCHW-contiguous or channels_last.
        Output (N, F, Ho, Wo) or (F, Ho, Wo) with ``Ho = (H + 2·padding − 1) // stride + 1``,
        in the input's memory format.

    Attributes:
        weight: (F, C/G, 1, 1), initialised like ``nn.Conv2d``:
            ``kaiming_uniform_(a=√5)``, i.e. U(−1/√(C/G), 1/√(C/G)).
        bias: (F,), U(−1/√(C/G), 1/√(C/G)), or None when ``bias=False``.

    The state_dict keys and shapes are those of ``nn.Conv2d(kernel_size=1)``, so weights load
    both ways; see :meth:`from_conv2d` and :meth:`to_conv2d`. Unlike torch, the module is
    not scriptable (``torch.jit.script``); ``torch.jit.trace`` and ONNX export work and
    record a standard conv2d.

    Examples:
        >>> import torch
        >>> from pointwise.nn import Conv1x1
        >>> m = Conv1x1(64, 256, stride=2, bias=False)
        >>> m
        Conv1x1(64, 256, stride=2, bias=False)
        >>> m(torch.randn(8, 64, 56, 56)).shape
        torch.Size([8, 256, 28, 28])
    """

    # None and str would give instances different TorchScript types, which makes
    # torch.jit.trace's check fail, and a plan (pointwise.nn._fastcall) is no TorchScript
    # type; forward reads both in Python only.
    __jit_ignored_attributes__: ClassVar[list[str]] = ["activation", "_plan"]
    #: pointwise.nn.freeze applies: its planned taps calls can read a weight packed once
    _freezable: ClassVar[bool] = True

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        groups: int = 1,
        bias: bool = True,
        activation: str | None = None,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        if groups < 1 or in_channels % groups or out_channels % groups:
            raise ValueError(
                f"expected groups to divide in_channels={in_channels} and "
                f"out_channels={out_channels}, but got groups={groups}"
            )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = _pair(stride, "stride", 1)
        self.padding = _pair(padding, "padding", 0)
        self.groups = groups
        self.activation = check_activation(activation)
        kw = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, 1, 1, **kw))
        if bias:
            self.bias = nn.Parameter(torch.empty(out_channels, **kw))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The init of ``nn.Conv2d``, in the same order, so one seed gives the same weights."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight.shape[1]  # C/G · 1 · 1
            if fan_in:
                bound = 1 / math.sqrt(fan_in)
                nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """``activation(conv(x) + bias + residual)``; ``residual`` (the output's shape) is
        optional, a residual block's shortcut added before the activation."""
        y = _fastcall.call(self, x, residual)  # an inference call planned before
        if y is not None:
            return y
        try:
            y = PF.conv1x1(
                x, self.weight, self.bias, layout="CHW" if x.dim() == 3 else "NCHW",
                stride=self.stride, padding=self.padding, groups=self.groups,
                activation=self.activation, residual=residual,
            )
        except ValueError:  # the weight is this module's: name the input's channels instead
            if x.dim() in (3, 4) and x.shape[-3] != self.in_channels:
                raise ValueError(
                    f"expected input {tuple(x.shape)} to have {self.in_channels} channels "
                    f"for weight {tuple(self.weight.shape)}, but got {x.shape[-3]} channels "
                    f"instead") from None
            raise
        _fastcall.plan(self, x, residual)
        return y

    def extra_repr(self) -> str:
        parts = [str(self.in_channels), str(self.out_channels)]
        for name, value, default in (
            ("stride", self.stride, (1, 1)),
            ("padding", self.padding, (0, 0)),
            ("groups", self.groups, 1),
            ("bias", self.bias is not None, True),
            ("activation", self.activation, None),
        ):
            if value != default:
                if isinstance(value, tuple) and value[0] == value[1]:
                    value = value[0]
                parts.append(f"{name}={value!r}")
        return ", ".join(parts)

    @classmethod
    def from_conv2d(cls, conv: nn.Conv2d, activation: str | None = None) -> Conv1x1:
        """A ``Conv1x1`` with a copy of ``conv``'s parameters (same device and dtype).

        Dilation is irrelevant to a 1×1 kernel. Only ``padding_mode="zeros"`` is accepted
        with padding: the other modes pad with copies of the input.
        """
        if not isinstance(conv, nn.Conv2d):
            raise TypeError(f"expected an nn.Conv2d, but got {type(conv).__name__}")
        if tuple(conv.kernel_size) != (1, 1):
            raise ValueError(
                f"expected an nn.Conv2d with kernel_size=(1, 1), but got "
                f"kernel_size={tuple(conv.kernel_size)}"
            )
        if isinstance(conv.padding, str):  # 'same' / 'valid' are both no padding at 1×1
            padding: tuple[int, int] = (0, 0)
        else:
            padding = (int(conv.padding[0]), int(conv.padding[1]))
        if conv.padding_mode != "zeros" and padding != (0, 0):
            raise ValueError(
                f"expected padding_mode='zeros', but got padding_mode={conv.padding_mode!r} "
                f"with padding={padding}; Conv1x1 pads with zeros only"
            )
        w = conv.weight
        new = cls(
            conv.in_channels, conv.out_channels, stride=(conv.stride[0], conv.stride[1]),
            padding=padding,
            groups=conv.groups, bias=conv.bias is not None, activation=activation,
            device=w.device, dtype=w.dtype,
        )
        with torch.no_grad():
            new.weight.copy_(w)
            if conv.bias is not None:
                new.bias.copy_(conv.bias)
        new.weight.requires_grad_(w.requires_grad)
        new.train(conv.training)
        return new

    def to_conv2d(self) -> nn.Module:
        """An ``nn.Conv2d(kernel_size=1)`` with a copy of the parameters.

        With an activation the result is ``nn.Sequential(conv, act)``.
        """
        w = self.weight
        conv = nn.Conv2d(
            self.in_channels, self.out_channels, 1, stride=self.stride, padding=self.padding,
            groups=self.groups, bias=self.bias is not None, device=w.device, dtype=w.dtype,
        )
        with torch.no_grad():
            conv.weight.copy_(w)
            if self.bias is not None and conv.bias is not None:
                conv.bias.copy_(self.bias)
        conv.train(self.training)
        if self.activation is None:
            return conv
        return nn.Sequential(conv, ACTIVATION_MODULES[self.activation]())
