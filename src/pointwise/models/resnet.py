"""ResNet-18/34/50/101/152 ("Deep Residual Learning for Image Recognition", He et al. 2015).

Structure, submodule names and parameter counts are torchvision's, so a torchvision
state_dict loads key for key: ``conv1, bn1, relu, maxpool, layer1..layer4, avgpool, fc``;
blocks hold ``conv1/bn1/conv2/bn2[/conv3/bn3]`` and ``downsample.0`` (the shortcut's 1×1
conv) / ``downsample.1`` (its BN). Every 1×1 conv, the shortcut's included, is a
:class:`~pointwise.nn.Conv1x1`.

Bottleneck models put the downsampling stride on the 3×3 conv, as torchvision does (its
"v1.5"); ``stride_in_1x1=True`` puts it on the block's first 1×1 instead, as in the paper
and its Caffe release (same parameters, 4× fewer MACs in that 1×1, different outputs).

>>> from pointwise.models import create
>>> m = create("resnet50", num_classes=10)
>>> sum(p.numel() for p in m.parameters())
23528522
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from pointwise.models.registry import register_model
from pointwise.nn import Conv1x1, Conv2d
from pointwise.nn._shortcut import into_residual, may_consume, quiet
from pointwise.nn.convert import FUSABLE

__all__ = ["BasicBlock", "Bottleneck", "ResNet"]

Layer = Callable[..., nn.Module]


def _takes_activation(convs: tuple[nn.Module, ...], bns: tuple[nn.Module, ...]) -> bool:
    """Whether each conv can apply an activation in its epilogue and has none yet, its BN
    having been folded into it (convert() leaves an nn.Identity in the BN's place)."""
    return (all(isinstance(c, (Conv1x1, Conv2d)) and c.activation is None for c in convs)
            and all(isinstance(b, nn.Identity) for b in bns))


def _conv3x3(c: int, f: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c, f, 3, stride=stride, padding=1, groups=groups, bias=False)


class BasicBlock(nn.Module):
    """3×3 → 3×3, plus the shortcut. Has no 1×1 conv except in ``downsample``."""

    expansion = 1
    #: Set by :meth:`fuse_shortcut`: the convs apply the activations, ``conv2`` adds the
    #: shortcut; the block's activation module is no longer called.
    shortcut_fused = activations_fused = False

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None, norm_layer: Layer = nn.BatchNorm2d,
                 act_layer: Layer = nn.ReLU) -> None:
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = norm_layer(planes)
        self.relu = act_layer(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = norm_layer(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)  # (N, F, H/s, W/s)
        if self.shortcut_fused:  # relu(conv2(relu(conv1(x))) + identity), BNs folded: 2 passes
            return self.conv2(self.conv1(x), residual=identity)  # (N, F, H/s, W/s)
        out = self.relu(self.bn1(self.conv1(x)))  # (N, F, H/s, W/s)
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)

    @property
    def consumes(self) -> bool:
        """Whether :meth:`consume` may run: the shortcut and activations fused."""
        return self.shortcut_fused

    def consume(self, x: torch.Tensor) -> torch.Tensor:
        """``forward(x)`` for a caller that gives ``x`` up, once the shortcut is fused: the
        output may be written over the shortcut (``x``, or the downsampled ``x``)."""
        identity = x if self.downsample is None else self.downsample(x)  # (N, F, H/s, W/s)
        return into_residual(self.conv2, self.conv1(x), identity)  # (N, F, H/s, W/s)

    def fuse_shortcut(self) -> str | None:
        """Let ``conv1`` apply the block's activation and ``conv2`` add the shortcut and
        apply it, in their epilogues.

        Called by :func:`pointwise.nn.convert` once ``bn1`` and ``bn2`` are folded and the
        convs are :class:`pointwise.nn.Conv2d`: the block then writes each output once.
        Returns ``"conv2"``, or None (nothing changed) when that is not the case or the
        block's activation is not one the convs apply.
        """
        act = FUSABLE.get(type(self.relu))
        if (self.shortcut_fused or act is None
                or not _takes_activation((self.conv1, self.conv2), (self.bn1, self.bn2))):
            return None
        for conv in (self.conv1, self.conv2):
            conv.activation = act  # type: ignore[assignment]  # a Conv1x1 or Conv2d's
        self.shortcut_fused = self.activations_fused = True
        return "conv2"


class Bottleneck(nn.Module):
    """1×1 reduce → 3×3 → 1×1 expand (×4), plus the shortcut.

    ``stride_in_1x1``: the stride on ``conv1`` (the paper) rather than ``conv2`` (torchvision).
    """

    expansion = 4
    #: Set by :meth:`fuse_shortcut`: ``conv3`` adds the shortcut and applies the activation.
    shortcut_fused = False
    #: ... and ``conv1`` and ``conv2`` apply the block's activation too: the block's
    #: activation module is no longer called.
    activations_fused = False

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None, norm_layer: Layer = nn.BatchNorm2d,
                 act_layer: Layer = nn.ReLU, stride_in_1x1: bool = False) -> None:
        super().__init__()
        s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = Conv1x1(inplanes, planes, stride=s1, bias=False)
        self.bn1 = norm_layer(planes)
        self.conv2 = _conv3x3(planes, planes, s3)
        self.bn2 = norm_layer(planes)
        self.conv3 = Conv1x1(planes, planes * self.expansion, bias=False)
        self.bn3 = norm_layer(planes * self.expansion)
        self.relu = act_layer(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)  # (N, 4P, H/s, W/s)
        if self.activations_fused:  # each conv applies its ReLU: every output written once
            return self.conv3(self.conv2(self.conv1(x)), residual=identity)  # (N, 4P, H/s, W/s)
        out = self.relu(self.bn1(self.conv1(x)))  # (N, P, H, W), or H/s with stride_in_1x1
        out = self.relu(self.bn2(self.conv2(out)))  # (N, P, H/s, W/s)
        if self.shortcut_fused:  # relu(conv3(out) + identity), bn3 folded in: one pass
            return self.conv3(out, residual=identity)  # (N, 4P, H/s, W/s)
        out = self.bn3(self.conv3(out))  # (N, 4P, H/s, W/s)
        return self.relu(out + identity)

    @property
    def consumes(self) -> bool:
        """Whether :meth:`consume` may run: every activation and the shortcut fused."""
        return self.activations_fused

    def consume(self, x: torch.Tensor) -> torch.Tensor:
        """``forward(x)`` for a caller that gives ``x`` up, once every activation and the
        shortcut are fused: the output may be written over the shortcut (``x``, or the
        downsampled ``x``)."""
        identity = x if self.downsample is None else self.downsample(x)  # (N, 4P, H/s, W/s)
        out = self.conv2(self.conv1(x))  # (N, P, H/s, W/s)
        return into_residual(self.conv3, out, identity)  # (N, 4P, H/s, W/s)

    def fuse_shortcut(self) -> str | None:
        """Let ``conv3`` add the shortcut and apply the block's activation in its epilogue.

        Called by :func:`pointwise.nn.convert` once it has folded ``bn3`` into ``conv3``:
        the block's last steps, ``relu(bn3(conv3(out)) + identity)``, then cost one pass
        over the output instead of three. Where ``conv1`` and ``conv2`` can apply the
        activation too (``conv2`` a :class:`pointwise.nn.Conv2d`, both BNs folded), they do,
        and the block's ReLU module is no longer called. Returns the name of the conv that
        took the shortcut, or None (nothing changed) when ``bn3`` is not folded, ``conv3``
        already has an activation or the block's activation is not one a ``Conv1x1`` applies.
        """
        act = FUSABLE.get(type(self.relu))
        if (self.shortcut_fused or act is None
                or not _takes_activation((self.conv3,), (self.bn3,))):
            return None
        self.conv3.activation = act
        self.shortcut_fused = True
        if _takes_activation((self.conv1, self.conv2), (self.bn1, self.bn2)):
            for conv in (self.conv1, self.conv2):
                conv.activation = act  # a Conv1x1 or Conv2d's
            self.activations_fused = True
        return "conv3"


class ResNet(nn.Module):
    """The ResNet trunk: 7×7/2 stem, max pool, four stages, global average pool, ``fc``.

    The average pool is adaptive, as in torchvision: at 224×224 it is the paper's 7×7 pool,
    and smaller inputs (down to 32×32) also work.

    Args:
        block: :class:`BasicBlock` or :class:`Bottleneck`.
        layers: blocks per stage, e.g. ``(3, 4, 6, 3)`` for ResNet-50.
        num_classes, in_channels: classifier width and image channels.
        norm_layer, act_layer: classes, called as ``norm_layer(C)`` and
            ``act_layer(inplace=True)``.
        stride_in_1x1: Bottleneck only; see the module docstring.
    """

    def __init__(self, block: type[BasicBlock | Bottleneck], layers: tuple[int, ...],
                 num_classes: int = 1000, in_channels: int = 3,
                 norm_layer: Layer = nn.BatchNorm2d, act_layer: Layer = nn.ReLU,
                 stride_in_1x1: bool = False) -> None:
        super().__init__()
        if stride_in_1x1 and block is not Bottleneck:
            raise ValueError(f"expected stride_in_1x1=False for {block.__name__} models (they "
                             f"have no 1×1 conv in their blocks), but got stride_in_1x1=True")
        self._norm, self._act = norm_layer, act_layer
        self._extra: dict[str, Any] = (
            {"stride_in_1x1": stride_in_1x1} if block is Bottleneck else {})
        self.inplanes = 64
        self.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = norm_layer(64)
        self.relu = act_layer(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)
        for m in self.modules():  # torchvision's init
            if isinstance(m, (nn.Conv2d, Conv1x1)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _make_layer(self, block: type[BasicBlock | Bottleneck], planes: int, blocks: int,
                    stride: int = 1) -> nn.Sequential:
        out = planes * block.expansion
        downsample = None
        if stride != 1 or self.inplanes != out:
            downsample = nn.Sequential(
                Conv1x1(self.inplanes, out, stride=stride, bias=False), self._norm(out))
        kw: dict[str, Any] = {"norm_layer": self._norm, "act_layer": self._act, **self._extra}
        layers = [block(self.inplanes, planes, stride, downsample, **kw)]
        self.inplanes = out
        layers += [block(out, planes, **kw) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (N, 64, H/4, W/4)
        if may_consume(x):  # inference: blocks may write over shortcuts only they hold
            x = self._stages_consuming(x)  # (N, 512e, H/32, W/32)
        else:
            x = self.layer1(x)  # (N, 64e, H/4, W/4), e = block.expansion
            x = self.layer2(x)  # (N, 128e, H/8, W/8)
            x = self.layer3(x)  # (N, 256e, H/16, W/16)
            x = self.layer4(x)  # (N, 512e, H/32, W/32)
        x = torch.flatten(self.avgpool(x), 1)  # (N, 512e)
        return self.fc(x)  # (N, num_classes)


    def _stages_consuming(self, x: torch.Tensor) -> torch.Tensor:
        """The four stages on ``x``, which this forward made, each block whose shortcut is
        fused writing its output over the shortcut (:mod:`pointwise.nn._shortcut`) where no
        hook can see that tensor: the block's input is kept where a hook saw it made."""
        seen = not quiet(self.maxpool)  # whether a hook could hold x
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            if not quiet(stage):
                x, seen = stage(x), True
                continue
            blocks: list[Any] = list(stage)  # BasicBlock or Bottleneck
            for b in blocks:
                own = b.downsample is not None  # the shortcut is downsample(x), made here
                if (getattr(b, "consumes", False) and quiet(b) and quiet(b.conv1)
                        and (not own or all(quiet(m) for m in b.downsample.modules()))
                        and (own or not seen)):
                    x = b.consume(x)  # its output: from its last conv, seen by its hooks
                    seen = not quiet(b) or not quiet(getattr(b, "conv3", b.conv2))
                else:
                    x = b(x)
                    seen = not all(quiet(m) for m in b.modules())
        return x


def _resnet(block: type[BasicBlock | Bottleneck], layers: tuple[int, ...],
            **kwargs) -> ResNet:
    return ResNet(block, layers, **kwargs)


@register_model
def resnet18(**kwargs) -> ResNet:
    """ResNet-18: 11,689,512 parameters, as torchvision's."""
    return _resnet(BasicBlock, (2, 2, 2, 2), **kwargs)


@register_model
def resnet34(**kwargs) -> ResNet:
    """ResNet-34: 21,797,672 parameters, as torchvision's."""
    return _resnet(BasicBlock, (3, 4, 6, 3), **kwargs)


@register_model
def resnet50(**kwargs) -> ResNet:
    """ResNet-50: 25,557,032 parameters, as torchvision's."""
    return _resnet(Bottleneck, (3, 4, 6, 3), **kwargs)


@register_model
def resnet101(**kwargs) -> ResNet:
    """ResNet-101: 44,549,160 parameters, as torchvision's."""
    return _resnet(Bottleneck, (3, 4, 23, 3), **kwargs)


@register_model
def resnet152(**kwargs) -> ResNet:
    """ResNet-152: 60,192,808 parameters, as torchvision's."""
    return _resnet(Bottleneck, (3, 8, 36, 3), **kwargs)
