"""Where a network's parameters and multiply-adds are: per layer, per module, per 1×1.

:func:`analyze` runs a model's forward once on torch's *meta* device: tensors there have
shapes but no data, so no arithmetic runs (ResNet-152 at 224² takes well under a second) and
the model you pass is never touched (a copy of it, without its data, is traced). A forward
hook on every leaf module records its input and output shapes; every count then comes from a
formula in :mod:`pointwise.cost`, where the convention is written once (``CONVENTION``,
``MAC_SCOPE``).

The :class:`Report` holds one :class:`Layer` per call of a leaf module, the totals, the share
held by 1×1 convs, a grouping by module-name prefix, and the "savings" view: for each 1×1
that feeds a k×k conv, what the k×k conv would cost on the 1×1's unreduced input. It renders
as a table, JSON, CSV and a PNG chart (:mod:`pointwise.analysis.render`); the published
tables it reproduces are in :mod:`pointwise.analysis.papers`.

>>> from torch import nn
>>> from pointwise.nn import Conv1x1
>>> net = nn.Sequential(Conv1x1(192, 16, bias=False), nn.ReLU(),
...                     nn.Conv2d(16, 32, 5, padding=2, bias=False))
>>> r = analyze(net, (1, 192, 28, 28))
>>> [(layer.name, layer.kind, layer.macs) for layer in r.layers]
[('0', 'conv 1×1', 2408448), ('1', 'act', 0), ('2', 'conv 5×5', 10035200)]
>>> s = r.savings()[0]
>>> s.reduce.name, s.conv.name, s.reduction.direct.macs, round(s.reduction.ratio, 2)
('0', '2', 120422400, 9.68)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from pointwise.analysis.trace import (
    KIND_1X1,
    PASS_THROUGH,
    Layer,
    Shape,
    as_list,
    batch_size,
    check_shape,
    name_prefix,
    spatial,
    trace,
)
from pointwise.cost import CONVENTION, MAC_SCOPE, Cost, Reduction, conv_cost_for_output, total_cost

__all__ = ["KIND_1X1", "Group", "GroupSaving", "Layer", "Report", "Saving", "analyze"]


@dataclass(frozen=True)
class Group:
    """The layers whose names share a prefix (``inception3a``), summed."""

    name: str
    layers: tuple[Layer, ...]
    cost: Cost
    in_shape: Shape | None
    out_shape: Shape | None

    @property
    def params(self) -> int:
        return self.cost.params

    @property
    def macs(self) -> int:
        return self.cost.macs

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "layers": len(self.layers), "input": as_list(self.in_shape),
                "output": as_list(self.out_shape), "weights": self.cost.weights,
                "biases": self.cost.biases, "params": self.params, "macs": self.macs}


@dataclass(frozen=True)
class Saving:
    """A 1×1 conv feeding a k×k conv, against the k×k conv alone on the 1×1's input.

    ``reduction.direct`` keeps the k×k conv's own geometry (spatial size, stride, padding,
    bias) and gives it the 1×1's input channels.
    """

    reduce: Layer
    conv: Layer
    reduction: Reduction

    def as_dict(self) -> dict[str, Any]:
        r = self.reduction
        return {"reduce": self.reduce.name, "conv": self.conv.name,
                "channels": [self.reduce.channels[0], self.reduce.channels[1],
                             self.conv.channels[1]] if self.reduce.channels
                and self.conv.channels else None,
                "kernel": as_list(self.conv.kernel), "direct_macs": r.direct.macs,
                "direct_weights": r.direct.weights, "reduced_macs": r.reduced.macs,
                "reduced_weights": r.reduced.weights, "ratio": r.ratio,
                "saved_macs": r.saved_macs}


@dataclass(frozen=True)
class GroupSaving:
    """What the reductions inside one group save: its MACs as built and without them."""

    name: str
    savings: tuple[Saving, ...]
    cost: Cost  # the group as built
    without: Cost  # each reduced k×k conv on its unreduced input, the reducing 1×1s removed

    @property
    def ratio(self) -> float:
        return self.without.macs / max(1, self.cost.macs)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "reductions": len(self.savings), "macs": self.cost.macs,
                "macs_without": self.without.macs, "weights": self.cost.weights,
                "weights_without": self.without.weights, "ratio": self.ratio,
                "saved_macs": self.without.macs - self.cost.macs}


@dataclass(frozen=True)
class Report:
    """What :func:`analyze` found. Every count is a :class:`~pointwise.cost.Cost`."""

    model: str
    input_shape: Shape
    layers: tuple[Layer, ...]
    modules: dict[str, tuple[Shape, Shape]] = field(repr=False)  # every module that ran
    convention: str = CONVENTION
    mac_scope: str = MAC_SCOPE

    @property
    def total(self) -> Cost:
        return total_cost(layer.cost for layer in self.layers)

    @property
    def params(self) -> int:
        return self.total.params

    @property
    def macs(self) -> int:
        return self.total.macs

    @property
    def flops(self) -> int:
        return self.total.flops

    @property
    def uncounted(self) -> list[str]:
        """Layers with params whose MACs no formula counts (kind ``other``)."""
        return [layer.name for layer in self.layers if layer.kind == "other" and layer.params]

    def share(self, kind: str = KIND_1X1) -> dict[str, float]:
        """The fraction of params and of MACs held by layers of ``kind`` (0 to 1)."""
        part = total_cost(layer.cost for layer in self.layers if layer.kind == kind)
        total = self.total
        return {"params": part.params / max(1, total.params),
                "macs": part.macs / max(1, total.macs)}

    def by_kind(self) -> dict[str, Cost]:
        """Costs summed per kind, in order of first appearance."""
        kinds: dict[str, list[Cost]] = {}
        for layer in self.layers:
            kinds.setdefault(layer.kind, []).append(layer.cost)
        return {k: total_cost(v) for k, v in kinds.items()}

    def groups(self, depth: int = 1) -> list[Group]:
        """One :class:`Group` per distinct name prefix of ``depth`` dotted parts.

        >>> from torch import nn
        >>> net = nn.Sequential(nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU()), nn.Flatten())
        >>> [(g.name, g.params) for g in analyze(net, (1, 3, 8, 8)).groups(1)]
        [('0', 224), ('1', 0)]
        """
        if depth < 1:
            raise ValueError(f"expected a group depth >= 1, but got {depth}")
        members: dict[str, list[Layer]] = {}
        for layer in self.layers:
            members.setdefault(name_prefix(layer.name, depth), []).append(layer)
        out = []
        for name, layers in members.items():
            ran = [la for la in layers if la.traced]
            shapes = self.modules.get(name)
            out.append(Group(
                name=name, layers=tuple(layers), cost=total_cost(la.cost for la in layers),
                in_shape=shapes[0] if shapes else (ran[0].in_shape if ran else None),
                out_shape=shapes[1] if shapes else (ran[-1].out_shape if ran else None),
            ))
        return out

    def upstream(self, layer: Layer) -> Layer | None:
        """The layer that computed ``layer``'s input, looking through norms and activations."""
        seen = 0
        index = layer.source
        while index is not None and seen < len(self.layers):
            src = self.layers[index]
            if src.kind not in PASS_THROUGH or src.in_shape != src.out_shape:
                return src
            index, seen = src.source, seen + 1
        return None

    def savings(self) -> list[Saving]:
        """For every 1×1 conv (one group) that feeds a k×k conv (one group, k > 1), the k×k
        conv's cost on the 1×1's input channels (``Reduction.direct``) against both."""
        out = []
        for conv in self.layers:
            if not (conv.traced and conv.kernel and conv.kernel != (1, 1)
                    and conv.kind.startswith("conv ") and conv.groups == 1):
                continue
            red = self.upstream(conv)
            if red is None or red.kind != KIND_1X1 or red.groups != 1 or not red.channels:
                continue
            assert conv.channels and conv.in_shape and conv.out_shape  # a traced conv
            direct = conv_cost_for_output(
                red.channels[0], conv.channels[1], conv.kernel,
                input_size=spatial(conv.in_shape), output_size=spatial(conv.out_shape),
                bias=conv.cost.biases > 0, batch=batch_size(conv.in_shape),
            )
            out.append(Saving(red, conv, Reduction(direct=direct, reduce=red.cost,
                                                   conv=conv.cost)))
        return out

    def savings_by_group(self, depth: int = 1) -> list[GroupSaving]:
        """Per group with reductions in it: its cost as built, and without the reductions.

        Only pairs whose 1×1 and k×k are both inside the group count towards it.
        """
        per: dict[str, list[Saving]] = {}
        for s in self.savings():
            group = name_prefix(s.conv.name, depth)
            if name_prefix(s.reduce.name, depth) == group:
                per.setdefault(group, []).append(s)
        out = []
        for g in self.groups(depth):
            found = per.get(g.name)
            if not found:
                continue
            replaced = {id(s.reduce) for s in found} | {id(s.conv) for s in found}
            kept = [la.cost for la in g.layers if id(la) not in replaced]
            out.append(GroupSaving(g.name, tuple(found), g.cost,
                                   total_cost(kept + [s.reduction.direct for s in found])))
        return out

    # Renderers live in pointwise.analysis.render; these are shortcuts to them.
    def to_text(self, depth: int | None = None, savings: bool = False) -> str:
        from pointwise.analysis.render import to_text

        return to_text(self, depth=depth, savings=savings)

    def to_dict(self, depth: int | None = None, savings: bool = False) -> dict[str, Any]:
        from pointwise.analysis.render import to_dict

        return to_dict(self, depth=depth, savings=savings)

    def to_csv(self, depth: int | None = None, savings: bool = False) -> str:
        from pointwise.analysis.render import to_csv

        return to_csv(self, depth=depth, savings=savings)

    def to_png(self, path: str | os.PathLike[str], depth: int = 1) -> Path:
        from pointwise.analysis.render import to_png

        return to_png(self, path, depth=depth)


def analyze(model: nn.Module, input_shape: Sequence[int] = (1, 3, 224, 224), *,
            name: str | None = None) -> Report:
    """Trace ``model`` on a meta-device input of ``input_shape`` and count every layer.

    The model is deep-copied without its data onto the meta device and run once in eval
    mode; ``model`` itself is not changed, moved or run. Every count comes from
    :mod:`pointwise.cost`. Modules the forward never calls still have their params counted,
    so ``report.params == sum(p.numel() for p in model.parameters())`` always holds.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``.
        ValueError: a bad ``input_shape``, or a forward that fails on it (the message says
            why: wrong channel count, data-dependent control flow…).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected an nn.Module to analyze, but got {type(model).__name__}")
    shape = check_shape(input_shape)
    label = name or type(model).__name__
    layers, modules = trace(model, shape, label)
    report = Report(label, shape, tuple(layers), dict(modules))
    expected = sum(p.numel() for p in model.parameters())  # parameters() skips shared ones
    if report.params != expected:  # every module's own tensors are counted exactly once
        raise AssertionError(f"analyzer counted {report.params} params, but the model has "
                             f"{expected}; a layer escaped the trace")
    return report
