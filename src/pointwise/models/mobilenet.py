"""MobileNet v1 (Howard et al. 2017) and v2 (Sandler et al. 2018).

* ``mobilenet_v1``: the body of the v1 paper's Table 1, a 3×3/2 stem then 13
  depthwise-separable blocks (depthwise 3×3 + BN + ReLU, then pointwise 1×1 + BN + ReLU).
  Table 1 prints stride 2 for the 13th depthwise conv, but its own output column stays at
  7×7, so that stride is a misprint: we use 1 (as TF-slim's reference does). With
  ``width_mult=1`` it has 4,231,976 parameters (the paper: 4.2 million).
* ``mobilenet_v2``: torchvision's, name for name (``features.0`` .. ``features.18``,
  ``classifier.1``), 3,504,872 parameters: inverted residuals of expand 1×1 + BN + ReLU6,
  depthwise 3×3 + BN + ReLU6, then a linear 1×1 projection + BN.

Every 1×1 conv is a :class:`~pointwise.nn.Conv1x1`. Both end in an adaptive average pool,
so inputs smaller than 224×224 work.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from pointwise.models.registry import register_model
from pointwise.nn import Conv1x1
from pointwise.nn.blocks import fused_depthwise_separable, fused_inverted_residual

__all__ = ["ConvNormAct", "DepthwiseSeparable", "InvertedResidual", "MobileNetV1",
           "MobileNetV2"]

Layer = Callable[..., nn.Module]


def _make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """torchvision's channel rounding: to a multiple of ``divisor``, never 10% below ``v``."""
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


class ConvNormAct(nn.Sequential):
    """``(conv, norm, act)`` as torchvision's ``Conv2dNormActivation``: children 0, 1, 2.

    The conv is a ``Conv1x1`` when ``kernel_size == 1``, else an ``nn.Conv2d`` with
    padding ``(k − 1) // 2``; it has no bias (the norm has one).
    """

    def __init__(self, c: int, f: int, kernel_size: int = 3, stride: int = 1, groups: int = 1,
                 norm_layer: Layer = nn.BatchNorm2d, act_layer: Layer = nn.ReLU6) -> None:
        if kernel_size == 1:
            conv: nn.Module = Conv1x1(c, f, stride=stride, groups=groups, bias=False)
        else:
            conv = nn.Conv2d(c, f, kernel_size, stride=stride, padding=(kernel_size - 1) // 2,
                             groups=groups, bias=False)
        super().__init__(conv, norm_layer(f), act_layer(inplace=True))
        self.out_channels = f


# ------------------------------------------------------------------------------ MobileNet v1
class DepthwiseSeparable(nn.Module):
    """Depthwise 3×3 (``conv_dw``, ``bn1``, ``act1``), then pointwise 1×1 (``conv_pw``,
    ``bn2``, ``act2``); the names are timm's."""

    def __init__(self, c: int, f: int, stride: int = 1, norm_layer: Layer = nn.BatchNorm2d,
                 act_layer: Layer = nn.ReLU) -> None:
        super().__init__()
        self.conv_dw = nn.Conv2d(c, c, 3, stride=stride, padding=1, groups=c, bias=False)
        self.bn1 = norm_layer(c)
        self.act1 = act_layer(inplace=True)
        self.conv_pw = Conv1x1(c, f, bias=False)
        self.bn2 = norm_layer(f)
        self.act2 = act_layer(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.bn1(self.conv_dw(x)))  # (N, C, H/s, W/s)
        return self.act2(self.bn2(self.conv_pw(x)))  # (N, F, H/s, W/s)

    def fused_block(self) -> nn.Module | None:
        """The block as one :class:`pointwise.nn.FusedDepthwiseSeparable`, once
        :func:`pointwise.nn.convert` has folded its BNs and fused its activations into its
        convs; None (nothing to swap) before, or for convs the fused kernel does not take."""
        if not all(isinstance(m, nn.Identity) for m in (self.bn1, self.act1, self.bn2,
                                                          self.act2)):
            return None
        return fused_depthwise_separable(self.conv_dw, self.conv_pw)


#: Table 1 of the v1 paper: (pointwise output channels, depthwise stride) per block.
V1_BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
             (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1))


class MobileNetV1(nn.Module):
    """``features`` (stem ``features.0``, blocks ``features.1`` .. ``features.13``),
    ``avgpool``, ``classifier`` (dropout, linear).

    Args:
        width_mult: the paper's α; channels become ``max(int(α·c), 8)`` (TF-slim's rule).
        dropout: before the classifier; 0 (the paper names none) by default.
    """

    def __init__(self, num_classes: int = 1000, in_channels: int = 3, width_mult: float = 1.0,
                 dropout: float = 0.0, norm_layer: Layer = nn.BatchNorm2d,
                 act_layer: Layer = nn.ReLU) -> None:
        super().__init__()
        if width_mult <= 0:
            raise ValueError(f"expected width_mult > 0, but got width_mult={width_mult}")

        def width(ch: int) -> int:
            return max(int(ch * width_mult), 8)

        c = width(32)
        layers: list[nn.Module] = [ConvNormAct(in_channels, c, 3, stride=2,
                                               norm_layer=norm_layer, act_layer=act_layer)]
        for f, s in V1_BLOCKS:
            layers.append(DepthwiseSeparable(c, width(f), s, norm_layer, act_layer))
            c = width(f)
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(c, num_classes))
        _init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)  # (N, 1024α, H/32, W/32)
        x = torch.flatten(self.avgpool(x), 1)  # (N, 1024α)
        return self.classifier(x)  # (N, num_classes)


# ------------------------------------------------------------------------------ MobileNet v2
class InvertedResidual(nn.Module):
    """torchvision's: ``conv`` = [expand ``ConvNormAct`` 1×1 (when ``expand_ratio != 1``),
    depthwise ``ConvNormAct`` 3×3, projection ``Conv1x1``, BN]; a residual when the shapes
    allow."""

    #: Set by :meth:`fuse_shortcut`: the projection adds the block's input itself.
    shortcut_fused = False

    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: float,
                 norm_layer: Layer = nn.BatchNorm2d, act_layer: Layer = nn.ReLU6) -> None:
        super().__init__()
        self.stride = stride
        hidden = round(inp * expand_ratio)
        self.use_res_connect = stride == 1 and inp == oup
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvNormAct(inp, hidden, 1, norm_layer=norm_layer,
                                      act_layer=act_layer))
        layers += [
            ConvNormAct(hidden, hidden, 3, stride, groups=hidden, norm_layer=norm_layer,
                        act_layer=act_layer),
            Conv1x1(hidden, oup, bias=False),  # linear bottleneck: no activation
            norm_layer(oup),
        ]
        self.conv = nn.Sequential(*layers)
        self.out_channels = oup

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.shortcut_fused:  # x + bn(project(h)), the BN folded: one pass
            *body, project, _ = self.conv
            h = x
            for m in body:
                h = m(h)  # (N, hidden, H, W)
            return project(h, residual=x)  # (N, C, H, W)
        if self.use_res_connect:
            return x + self.conv(x)  # (N, C, H, W)
        return self.conv(x)  # (N, F, H/s, W/s)

    def fuse_shortcut(self) -> str | None:
        """Let the projection ``Conv1x1`` add the block's input in its epilogue.

        Called by :func:`pointwise.nn.convert` once it has folded the last BN into the
        projection. Returns the projection's name, or None (nothing changed) when the block
        has no residual, the BN is not folded or the projection has an activation.
        """
        project, bn = self.conv[-2], self.conv[-1]
        if (self.shortcut_fused or not self.use_res_connect or not isinstance(bn, nn.Identity)
                or not isinstance(project, Conv1x1) or project.activation is not None):
            return None
        self.shortcut_fused = True
        return f"conv.{len(self.conv) - 2}"

    def fused_block(self) -> nn.Module | None:
        """The block as one :class:`pointwise.nn.FusedInvertedResidual`, once
        :func:`pointwise.nn.convert` has folded its BNs and fused its activations into its
        convs; None (nothing to swap) before, or for convs the fused kernel does not take."""
        layers: list[Any] = list(self.conv.children())
        *body, project, bn = layers  # body: ConvNormAct's [conv, norm, act], one or two
        if not isinstance(bn, nn.Identity) or not all(
                isinstance(cna[1], nn.Identity) and isinstance(cna[2], nn.Identity)
                for cna in body):
            return None
        expand = body[0][0] if len(body) == 2 else None
        return fused_inverted_residual(expand, body[-1][0], project, self.use_res_connect)


#: Table 2 of the v2 paper: expansion t, channels c, repeats n, first stride s.
V2_SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
              (6, 160, 3, 2), (6, 320, 1, 1))


class MobileNetV2(nn.Module):
    """torchvision's ``MobileNetV2``: ``features``, ``avgpool``, then ``classifier`` (dropout,
    linear); torchvision calls the pool as a function, which has no state, so the two load
    each other's state_dicts."""

    def __init__(self, num_classes: int = 1000, in_channels: int = 3, width_mult: float = 1.0,
                 round_nearest: int = 8, dropout: float = 0.2,
                 norm_layer: Layer = nn.BatchNorm2d, act_layer: Layer = nn.ReLU6) -> None:
        super().__init__()
        if width_mult <= 0:
            raise ValueError(f"expected width_mult > 0, but got width_mult={width_mult}")
        c = _make_divisible(32 * width_mult, round_nearest)
        self.last_channel = _make_divisible(1280 * max(1.0, width_mult), round_nearest)
        kw: dict[str, Any] = {"norm_layer": norm_layer, "act_layer": act_layer}
        layers: list[nn.Module] = [ConvNormAct(in_channels, c, 3, stride=2, **kw)]
        for t, ch, n, s in V2_SETTING:
            f = _make_divisible(ch * width_mult, round_nearest)
            for i in range(n):
                layers.append(InvertedResidual(c, f, s if i == 0 else 1, t, **kw))
                c = f
        layers.append(ConvNormAct(c, self.last_channel, 1, **kw))
        self.features = nn.Sequential(*layers)
        # a module where torchvision calls the function, so that convert() can swap it
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.classifier = nn.Sequential(nn.Dropout(dropout),
                                        nn.Linear(self.last_channel, num_classes))
        _init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)  # (N, 1280, H/32, W/32)
        x = torch.flatten(self.avgpool(x), 1)  # (N, 1280)
        return self.classifier(x)  # (N, num_classes)


def _init(model: nn.Module) -> None:
    """torchvision's MobileNet init."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, Conv1x1)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


def _mobilenet(version: int, **kwargs) -> nn.Module:
    return (MobileNetV1 if version == 1 else MobileNetV2)(**kwargs)


@register_model
def mobilenet_v1(**kwargs) -> nn.Module:
    """MobileNet v1 (``width_mult`` = α): 4,231,976 parameters at α = 1."""
    return _mobilenet(1, **kwargs)


@register_model
def mobilenet_v2(**kwargs) -> nn.Module:
    """MobileNet v2, torchvision's: 3,504,872 parameters."""
    return _mobilenet(2, **kwargs)
