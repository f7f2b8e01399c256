"""GoogLeNet ("Going deeper with convolutions", Szegedy et al. 2014), two ways.

* ``googlenet``: paper-exact, Table 1 and section 5. Convs have biases and a ReLU, and
  there is no BatchNorm (it came later). The "5×5" branches are true 5×5. After the first
  max pool and after the 3×3 conv sits local response normalisation; the paper gives no
  settings, so we use those of the BVLC Caffe reproduction (size 5, α = 1e-4, β = 0.75,
  k = 1; parameter-free). Max pools are 3×3/2 rounding up (Caffe's rule, which gives the
  table's 112 → 56 → 28 → 14 → 7). Dropout 40%. 6,998,552 parameters, of which 6,990,272
  weights (Table 1 totals ≈ 6.8M, with K = 1024; the analyzer compares per layer).
* ``googlenet_tv``: torchvision's variant, name for name, 6,624,904 parameters (without
  the auxiliary classifiers): every conv is conv (no bias) + BatchNorm (eps 0.001) + ReLU,
  the "5×5" branches use 3×3 kernels (a bug its source admits), the 4th max pool is 2×2/2,
  dropout 20%. ``transform_input`` is not provided.

Both end in an adaptive average pool, which at 224×224 is the paper's 7×7 pool, so smaller
inputs (≥ 64×64) work too. ``aux_logits=True`` adds the two auxiliary classifiers on
4a and 4d; in training mode ``forward`` then returns
``GoogLeNetOutputs(logits, aux_logits2, aux_logits1)``, as torchvision's does. Every 1×1
conv, the reductions and pool projections included, is a :class:`~pointwise.nn.Conv1x1`.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import torch
from torch import nn

from pointwise.models.registry import register_model
from pointwise.nn import Conv1x1

__all__ = ["BasicConv2d", "GoogLeNet", "GoogLeNetOutputs", "Inception", "InceptionAux"]

Layer = Callable[..., nn.Module]


class GoogLeNetOutputs(NamedTuple):
    logits: torch.Tensor
    aux_logits2: torch.Tensor | None
    aux_logits1: torch.Tensor | None


class BasicConv2d(nn.Module):
    """``conv`` (a ``Conv1x1`` for 1×1 kernels), ``bn`` (None without ``norm_layer``), ``relu``.

    The conv has a bias exactly when there is no norm layer.
    """

    def __init__(self, c: int, f: int, kernel_size: int, stride: int = 1, padding: int = 0,
                 norm_layer: Layer | None = None, act_layer: Layer = nn.ReLU) -> None:
        super().__init__()
        bias = norm_layer is None
        if kernel_size == 1:
            self.conv: nn.Module = Conv1x1(c, f, stride=stride, padding=padding, bias=bias)
        else:
            self.conv = nn.Conv2d(c, f, kernel_size, stride=stride, padding=padding, bias=bias)
        self.bn = None if norm_layer is None else norm_layer(f)
        self.relu = act_layer(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)  # (N, F, H', W')
        if self.bn is not None:
            x = self.bn(x)
        return self.relu(x)


class Inception(nn.Module):
    """Four branches, concatenated on channels: ``branch1`` 1×1; ``branch2`` 1×1 reduce →
    3×3; ``branch3`` 1×1 reduce → k5×k5 (5 in the paper, 3 in torchvision); ``branch4``
    3×3/1 max pool → 1×1 projection."""

    def __init__(self, c: int, ch1x1: int, ch3x3red: int, ch3x3: int, ch5x5red: int,
                 ch5x5: int, pool_proj: int, conv_block: Layer = BasicConv2d,
                 k5: int = 5) -> None:
        super().__init__()
        self.branch1 = conv_block(c, ch1x1, 1)
        self.branch2 = nn.Sequential(conv_block(c, ch3x3red, 1),
                                     conv_block(ch3x3red, ch3x3, 3, padding=1))
        self.branch3 = nn.Sequential(conv_block(c, ch5x5red, 1),
                                     conv_block(ch5x5red, ch5x5, k5, padding=k5 // 2))
        self.branch4 = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True),
                                     conv_block(c, pool_proj, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)],
                         1)  # (N, ch1x1 + ch3x3 + ch5x5 + pool_proj, H, W)


class InceptionAux(nn.Module):
    """Auxiliary classifier: ``pool`` → ``conv`` 1×1 128 → ``fc1`` 1024 + ReLU → ``dropout``
    → ``fc2``. The paper's pool is 5×5/3 (4×4 out at 14×14); torchvision's is adaptive 4×4.
    An adaptive 4×4 pool follows either (the identity at 224×224) so any input works."""

    def __init__(self, c: int, num_classes: int, conv_block: Layer = BasicConv2d,
                 pool: nn.Module | None = None, dropout: float = 0.7,
                 act_layer: Layer = nn.ReLU) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d((4, 4)) if pool is None else pool
        self.conv = conv_block(c, 128, 1)
        self.fc1 = nn.Linear(2048, 1024)
        self.act = act_layer(inplace=True)
        self.fc2 = nn.Linear(1024, num_classes)
        self.dropout = nn.Dropout(p=dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.adaptive_avg_pool2d(self.pool(x), (4, 4))  # (N, C, 4, 4)
        x = torch.flatten(self.conv(x), 1)  # (N, 128·4·4)
        x = self.dropout(self.act(self.fc1(x)))  # (N, 1024)
        return self.fc2(x)  # (N, num_classes)


#: Table 1: input channels, then #1×1, #3×3 reduce, #3×3, #5×5 reduce, #5×5, pool proj.
TABLE1: dict[str, tuple[int, int, int, int, int, int, int]] = {
    "3a": (192, 64, 96, 128, 16, 32, 32), "3b": (256, 128, 128, 192, 32, 96, 64),
    "4a": (480, 192, 96, 208, 16, 48, 64), "4b": (512, 160, 112, 224, 24, 64, 64),
    "4c": (512, 128, 128, 256, 24, 64, 64), "4d": (512, 112, 144, 288, 32, 64, 64),
    "4e": (528, 256, 160, 320, 32, 128, 128),
    "5a": (832, 256, 160, 320, 32, 128, 128), "5b": (832, 384, 192, 384, 48, 128, 128),
}


class GoogLeNet(nn.Module):
    """GoogLeNet; ``variant`` is ``"paper"`` or ``"torchvision"`` (see the module docstring).

    Children in torchvision's order: ``conv1, maxpool1, norm1, conv2, conv3, norm2,
    maxpool2, inception3a, inception3b, maxpool3, inception4a`` .. ``inception4e, maxpool4,
    inception5a, inception5b, aux1, aux2, avgpool, dropout, fc``. ``norm1``/``norm2`` are
    the paper's LRN, and ``nn.Identity`` in the torchvision variant.
    """

    def __init__(self, variant: str = "paper", num_classes: int = 1000, in_channels: int = 3,
                 aux_logits: bool = False, dropout: float | None = None,
                 dropout_aux: float = 0.7, act_layer: Layer = nn.ReLU) -> None:
        super().__init__()
        if variant not in ("paper", "torchvision"):
            raise ValueError(f"expected variant 'paper' or 'torchvision', but got {variant!r}")
        paper = variant == "paper"
        norm = None if paper else partial(nn.BatchNorm2d, eps=0.001)
        block = partial(BasicConv2d, norm_layer=norm, act_layer=act_layer)
        self.aux_logits = aux_logits

        def lrn() -> nn.Module:
            return nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0) if paper \
                else nn.Identity()

        self.conv1 = block(in_channels, 64, 7, stride=2, padding=3)
        self.maxpool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.norm1 = lrn()
        self.conv2 = block(64, 64, 1)
        self.conv3 = block(64, 192, 3, padding=1)
        self.norm2 = lrn()
        self.maxpool2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        inc = partial(Inception, conv_block=block, k5=5 if paper else 3)
        self.inception3a = inc(*TABLE1["3a"])
        self.inception3b = inc(*TABLE1["3b"])
        self.maxpool3 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception4a = inc(*TABLE1["4a"])
        self.inception4b = inc(*TABLE1["4b"])
        self.inception4c = inc(*TABLE1["4c"])
        self.inception4d = inc(*TABLE1["4d"])
        self.inception4e = inc(*TABLE1["4e"])
        self.maxpool4 = nn.MaxPool2d(3 if paper else 2, stride=2, ceil_mode=True)  # tv: 2×2
        self.inception5a = inc(*TABLE1["5a"])
        self.inception5b = inc(*TABLE1["5b"])
        self.aux1: InceptionAux | None = None
        self.aux2: InceptionAux | None = None
        if aux_logits:
            def aux(cin: int) -> InceptionAux:
                pool = nn.AvgPool2d(5, stride=3) if paper else None
                return InceptionAux(cin, num_classes, block, pool, dropout_aux, act_layer)
            self.aux1, self.aux2 = aux(512), aux(528)  # on 4a and 4d
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(p=(0.4 if paper else 0.2) if dropout is None else dropout)
        self.fc = nn.Linear(1024, num_classes)
        _init(self, paper)

    def forward(self, x: torch.Tensor) -> torch.Tensor | GoogLeNetOutputs:
        x = self.maxpool1(self.conv1(x))  # (N, 64, H/4, W/4)
        x = self.maxpool2(self.norm2(self.conv3(self.conv2(self.norm1(x)))))  # (N, 192, H/8, ·)
        x = self.maxpool3(self.inception3b(self.inception3a(x)))  # (N, 480, H/16, W/16)
        x = self.inception4a(x)  # (N, 512, H/16, W/16)
        aux1 = self.aux1(x) if self.aux1 is not None and self.training else None
        x = self.inception4d(self.inception4c(self.inception4b(x)))  # (N, 528, H/16, W/16)
        aux2 = self.aux2(x) if self.aux2 is not None and self.training else None
        x = self.maxpool4(self.inception4e(x))  # (N, 832, H/32, W/32)
        x = self.inception5b(self.inception5a(x))  # (N, 1024, H/32, W/32)
        x = torch.flatten(self.avgpool(x), 1)  # (N, 1024)
        x = self.fc(self.dropout(x))  # (N, num_classes)
        if self.training and self.aux_logits:
            return GoogLeNetOutputs(x, aux2, aux1)
        return x


def _init(model: nn.Module, paper: bool) -> None:
    """torchvision's init (truncated normal, std 0.01) for its variant. Without BatchNorm
    that would make the paper's 22 layers vanish, so the paper variant uses He init."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, Conv1x1, nn.Linear)):
            if paper and not isinstance(m, nn.Linear):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            else:
                nn.init.trunc_normal_(m.weight, mean=0.0, std=0.01, a=-2, b=2)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)


def _googlenet(variant: str, **kwargs) -> GoogLeNet:
    return GoogLeNet(variant, **kwargs)


@register_model
def googlenet(**kwargs) -> GoogLeNet:
    """GoogLeNet as in the paper's Table 1 (true 5×5 branches, LRN, no BatchNorm)."""
    return _googlenet("paper", **kwargs)


@register_model
def googlenet_tv(**kwargs) -> GoogLeNet:
    """torchvision's GoogLeNet (BatchNorm, 3×3 "5×5" branches): 6,624,904 parameters."""
    return _googlenet("torchvision", **kwargs)
