"""Network in Network (Lin, Chen & Yan 2013): mlpconv blocks and global average pooling.

An mlpconv block is a k×k conv followed by 1×1 convs (the paper's "cascaded cross channel
parametric pooling", ``cccp`` in the authors' Caffe release), each with a ReLU. The last
block has one channel per class, and global average pooling turns its maps into logits: no
fully connected layer. Every 1×1 conv is a :class:`~pointwise.nn.Conv1x1`.

* ``nin_cifar10``: the authors' CIFAR-10 release: mlpconv 5×5 192 → 160 → 96, max pool
  3×3/2, dropout 0.5; mlpconv 5×5 192 → 192 → 192, *average* pool 3×3/2, dropout 0.5;
  mlpconv 3×3 192 → 192 → 10; global average pool. Paddings 2, 2, 1 and pools that round
  up (Caffe's rule) give 32 → 16 → 8 → 1, as in the release. The second pool averages
  because the release's prototxt says so (the paper's text only says "max pooling").
  ReLU after every conv, the class maps included. 966,986 parameters.
* ``nin_digits``: a small NiN for 8×8 single-channel images (scikit-learn's digits):
  mlpconv 3×3 32 → 32 → 32 with BatchNorm, max pool 2×2/2 (8 → 4), mlpconv 3×3 64 → 64 →
  10, global average pool; 25,962 parameters. Its class maps have no ReLU or BN, so no
  class can die at a zero logit; BatchNorm lets it train to ≥ 97% in seconds on a CPU.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence

import torch
from torch import nn

from pointwise.models.registry import register_model
from pointwise.nn import Conv1x1

__all__ = ["MlpConv", "NiN"]

Layer = Callable[..., nn.Module]


class MlpConv(nn.Sequential):
    """k×k ``conv``, then 1×1 ``cccp1``, ``cccp2``, …; each followed by ``bnI`` (with
    ``norm_layer``) and ``actI`` (I = 0 for the k×k conv).

    Args:
        c: input channels.
        widths: output channels of the k×k conv, then of each 1×1 conv.
        kernel_size, padding: of the k×k conv.
        norm_layer: a class such as ``nn.BatchNorm2d``, or None (the release has none).
        act_layer: the activation class.
        last_act: False leaves the last conv linear (no norm, no activation).
    """

    def __init__(self, c: int, widths: Sequence[int], kernel_size: int, padding: int,
                 norm_layer: Layer | None = None, act_layer: Layer = nn.ReLU,
                 last_act: bool = True) -> None:
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        for i, f in enumerate(widths):
            last = i == len(widths) - 1
            bias = norm_layer is None or (last and not last_act)
            if i == 0:
                layers["conv"] = nn.Conv2d(c, f, kernel_size, padding=padding, bias=bias)
            else:
                layers[f"cccp{i}"] = Conv1x1(c, f, bias=bias)
            if not last or last_act:
                if norm_layer is not None:
                    layers[f"bn{i}"] = norm_layer(f)
                layers[f"act{i}"] = act_layer(inplace=True)
            c = f
        super().__init__(layers)


class NiN(nn.Module):
    """``features`` (mlpconv blocks, pools, dropouts), then global average pooling.

    Args:
        blocks: per block ``(widths, kernel_size, padding)``; the last width is the class
            count.
        pools: the pool after each block but the last.
        dropout: after each pool.
        norm_layer, act_layer: classes passed to every :class:`MlpConv`.
        last_act: whether the class maps have an activation.
    """

    def __init__(self, blocks: Sequence[tuple[Sequence[int], int, int]],
                 pools: Sequence[nn.Module], in_channels: int = 3, dropout: float = 0.5,
                 norm_layer: Layer | None = None, act_layer: Layer = nn.ReLU,
                 last_act: bool = True) -> None:
        super().__init__()
        if len(pools) != len(blocks) - 1:
            raise ValueError(f"expected {len(blocks) - 1} pools for {len(blocks)} blocks, "
                             f"but got {len(pools)}")
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        c = in_channels
        for i, (widths, k, p) in enumerate(blocks, start=1):
            final = i == len(blocks)
            layers[f"mlpconv{i}"] = MlpConv(c, widths, k, p, norm_layer, act_layer,
                                            last_act=last_act or not final)
            if not final:
                layers[f"pool{i}"] = pools[i - 1]
                if dropout:
                    layers[f"drop{i}"] = nn.Dropout(dropout)
            c = widths[-1]
        self.features = nn.Sequential(layers)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))  # global average pooling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)  # (N, num_classes, H', W')
        return torch.flatten(self.avgpool(x), 1)  # (N, num_classes)


def _nin(config: str, num_classes: int = 10, in_channels: int | None = None,
         **kwargs) -> NiN:
    if config == "cifar10":
        blocks = [((192, 160, 96), 5, 2), ((192, 192, 192), 5, 2),
                  ((192, 192, num_classes), 3, 1)]
        pools = [nn.MaxPool2d(3, stride=2, ceil_mode=True),
                 nn.AvgPool2d(3, stride=2, ceil_mode=True)]  # the release averages here
        kw: dict = {"in_channels": 3, "dropout": 0.5}
    else:  # digits
        blocks = [((32, 32, 32), 3, 1), ((64, 64, num_classes), 3, 1)]
        pools = [nn.MaxPool2d(2, stride=2)]
        kw = {"in_channels": 1, "dropout": 0.0, "norm_layer": nn.BatchNorm2d,
              "last_act": False}
    if in_channels is not None:
        kw["in_channels"] = in_channels
    return NiN(blocks, pools, **{**kw, **kwargs})


@register_model
def nin_cifar10(**kwargs) -> NiN:
    """NiN for 32×32 RGB images, as the authors' CIFAR-10 release: 966,986 parameters."""
    return _nin("cifar10", **kwargs)


@register_model
def nin_digits(**kwargs) -> NiN:
    """A small NiN for 8×8 grey images (scikit-learn digits): 25,962 parameters."""
    return _nin("digits", **kwargs)
