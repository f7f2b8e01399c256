"""Small MobileNet- and ResNet-style models for 8×8 images, built from the zoo's blocks.

The zoo's ``mobilenet_v1`` and ``resnet18`` accept 8×8 inputs (their pools are adaptive),
but their stems divide the image by 2 and 4 at once and they carry 3 and 11 million
parameters: on digits that leaves one pixel after two stages. These keep the stem at full
resolution and downsample twice (8 → 4 → 2), with the zoo's own blocks
(:class:`~pointwise.models.mobilenet.DepthwiseSeparable`,
:class:`~pointwise.models.resnet.Bottleneck`), so every 1×1 conv is a ``Conv1x1``.

Train them with ``pointwise train mobilenet_digits --data digits``. ``nin_digits`` (in
:mod:`pointwise.models.nin`) is the third small model for digits.

>>> import torch
>>> mobilenet_digits()(torch.zeros(2, 1, 8, 8)).shape
torch.Size([2, 10])
>>> resnet_digits()(torch.zeros(2, 1, 8, 8)).shape
torch.Size([2, 10])
"""

from __future__ import annotations

import torch
from torch import nn

from pointwise.models.mobilenet import ConvNormAct, DepthwiseSeparable
from pointwise.models.registry import register_model
from pointwise.models.resnet import Bottleneck
from pointwise.nn import Conv1x1

__all__ = ["mobilenet_digits", "resnet_digits"]


class _Small(nn.Module):
    """``features``, global average pool, ``classifier``."""

    def __init__(self, features: nn.Sequential, width: int, num_classes: int) -> None:
        super().__init__()
        self.features = features
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.classifier = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)  # (N, C', 2, 2) for 8×8 inputs
        return self.classifier(torch.flatten(self.avgpool(x), 1))  # (N, num_classes)


@register_model
def mobilenet_digits(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """A 3×3 stem of 16, then depthwise-separable blocks 32, 64/2, 64, 128/2, 128."""
    blocks = ((32, 1), (64, 2), (64, 1), (128, 2), (128, 1))
    layers: list[nn.Module] = [ConvNormAct(in_channels, 16, 3, act_layer=nn.ReLU)]
    c = 16
    for f, s in blocks:
        layers.append(DepthwiseSeparable(c, f, s))
        c = f
    return _Small(nn.Sequential(*layers), c, num_classes)


@register_model
def resnet_digits(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """A 3×3 stem of 32, then bottleneck stages of widths 16·4, 32·4 /2, 32·4 /2."""
    layers: list[nn.Module] = [ConvNormAct(in_channels, 32, 3, act_layer=nn.ReLU)]
    c = 32
    for planes, stride in ((16, 1), (32, 2), (32, 2)):
        out = planes * Bottleneck.expansion
        down = (nn.Sequential(Conv1x1(c, out, stride=stride, bias=False), nn.BatchNorm2d(out))
                if stride != 1 or c != out else None)
        layers.append(Bottleneck(c, planes, stride, down))
        c = out
    return _Small(nn.Sequential(*layers), c, num_classes)
