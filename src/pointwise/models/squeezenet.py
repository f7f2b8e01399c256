"""SqueezeNet 1.0 and 1.1 (Iandola et al. 2016), torchvision's, name for name.

A fire module squeezes with a 1×1 conv, then concatenates a 1×1 and a 3×3 expand. The
classifier is dropout, a 1×1 conv to the classes (``classifier.1``) with ReLU, and a global
average pool. Every 1×1 conv is a :class:`~pointwise.nn.Conv1x1`. Parameters: 1,248,424
(1.0) and 1,235,496 (1.1), as torchvision's. The max pools round up (``ceil_mode``), as in
the authors' Caffe release.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from pointwise.models.registry import register_model
from pointwise.nn import Conv1x1

__all__ = ["Fire", "SqueezeNet"]

Layer = Callable[..., nn.Module]


class Fire(nn.Module):
    """``squeeze`` 1×1 → ReLU → [``expand1x1`` 1×1, ``expand3x3`` 3×3] → ReLU, concatenated."""

    def __init__(self, inplanes: int, squeeze_planes: int, expand1x1_planes: int,
                 expand3x3_planes: int, act_layer: Layer = nn.ReLU) -> None:
        super().__init__()
        self.inplanes = inplanes
        self.squeeze = Conv1x1(inplanes, squeeze_planes)
        self.squeeze_activation = act_layer(inplace=True)
        self.expand1x1 = Conv1x1(squeeze_planes, expand1x1_planes)
        self.expand1x1_activation = act_layer(inplace=True)
        self.expand3x3 = nn.Conv2d(squeeze_planes, expand3x3_planes, 3, padding=1)
        self.expand3x3_activation = act_layer(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.squeeze_activation(self.squeeze(x))  # (N, S, H, W)
        return torch.cat([
            self.expand1x1_activation(self.expand1x1(x)),  # (N, E1, H, W)
            self.expand3x3_activation(self.expand3x3(x)),  # (N, E3, H, W)
        ], 1)  # (N, E1 + E3, H, W)


#: Fire modules (squeeze, expand1x1, expand3x3) with "M" for a 3×3/2 max pool, after the stem.
CONFIGS: dict[str, tuple[tuple[int, int], list[Any]]] = {
    "1_0": ((96, 7), ["M", (16, 64, 64), (16, 64, 64), (32, 128, 128), "M", (32, 128, 128),
                      (48, 192, 192), (48, 192, 192), (64, 256, 256), "M", (64, 256, 256)]),
    "1_1": ((64, 3), ["M", (16, 64, 64), (16, 64, 64), "M", (32, 128, 128), (32, 128, 128),
                      "M", (48, 192, 192), (48, 192, 192), (64, 256, 256), (64, 256, 256)]),
}


class SqueezeNet(nn.Module):
    """``features`` (stem conv, ReLU, pools and fires), ``classifier``, as torchvision's.

    Args:
        version: ``"1_0"`` or ``"1_1"``.
        num_classes, in_channels: classifier width and image channels.
        dropout: before the final conv, 0.5.
    """

    def __init__(self, version: str = "1_0", num_classes: int = 1000, in_channels: int = 3,
                 dropout: float = 0.5, act_layer: Layer = nn.ReLU) -> None:
        super().__init__()
        if version not in CONFIGS:
            raise ValueError(f"expected version '1_0' or '1_1', but got version={version!r}")
        self.num_classes = num_classes
        (stem, k), body = CONFIGS[version]
        layers: list[nn.Module] = [nn.Conv2d(in_channels, stem, k, stride=2),
                                   act_layer(inplace=True)]
        c = stem
        for item in body:
            if item == "M":
                layers.append(nn.MaxPool2d(3, stride=2, ceil_mode=True))
            else:
                s, e1, e3 = item
                layers.append(Fire(c, s, e1, e3, act_layer))
                c = e1 + e3
        self.features = nn.Sequential(*layers)
        final_conv = Conv1x1(c, num_classes)
        self.classifier = nn.Sequential(nn.Dropout(dropout), final_conv,
                                        act_layer(inplace=True), nn.AdaptiveAvgPool2d((1, 1)))
        for m in self.modules():  # torchvision's init
            if isinstance(m, (nn.Conv2d, Conv1x1)):
                if m is final_conv:
                    nn.init.normal_(m.weight, mean=0.0, std=0.01)
                else:
                    nn.init.kaiming_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.constant_(m.bias, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)  # (N, 512, H', W')
        x = self.classifier(x)  # (N, num_classes, 1, 1)
        return torch.flatten(x, 1)  # (N, num_classes)


def _squeezenet(version: str, **kwargs) -> SqueezeNet:
    return SqueezeNet(version, **kwargs)


@register_model
def squeezenet1_0(**kwargs) -> SqueezeNet:
    """SqueezeNet 1.0: 1,248,424 parameters, as torchvision's."""
    return _squeezenet("1_0", **kwargs)


@register_model
def squeezenet1_1(**kwargs) -> SqueezeNet:
    """SqueezeNet 1.1 (2.4× fewer MACs, same accuracy): 1,235,496 parameters."""
    return _squeezenet("1_1", **kwargs)
