"""What :func:`pointwise.analysis.analyze` reports, and its renderings.

The :class:`Report` holds one :class:`Layer` per call of a leaf module, the totals, the share
held by 1×1 convs, a grouping by module-name prefix, and the "savings" view: for each 1×1
that feeds a k×k conv, what the k×k conv would cost on the 1×1's unreduced input. It renders
as a table (``to_text``), JSON (``to_dict``), CSV (``to_csv``) and a PNG chart (``to_png``).
Every count is a :class:`~pointwise.cost.Cost`, where the convention is written once.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pointwise.analysis.chart import bar_chart
from pointwise.analysis.tables import cell, pair, shape, stride, table
from pointwise.analysis.trace import (
    KIND_1X1,
    PASS_THROUGH,
    Layer,
    Shape,
    as_list,
    batch_size,
    name_prefix,
    spatial,
)
from pointwise.cost import CONVENTION, MAC_SCOPE, Cost, Reduction, conv_cost_for_output, total_cost

__all__ = ["Group", "GroupSaving", "Report", "Saving"]

LAYER_COLUMNS = ("name", "kind", "kernel", "stride", "groups", "input", "output", "params",
                 "macs")
GROUP_COLUMNS = ("name", "layers", "input", "output", "params", "macs")
SAVING_COLUMNS = ("reduce", "conv", "channels", "kernel", "direct_macs", "reduced_macs",
                  "ratio", "saved_macs")


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


def _channels(s: Saving) -> str:
    c = s.as_dict()["channels"]
    return "→".join(str(x) for x in c) if c else ""


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
        >>> from pointwise.analysis import analyze
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

    def to_text(self, depth: int | None = None, savings: bool = False) -> str:
        """The layers (or the groups at ``depth``), the totals and the convention, as a table."""
        total = self.total
        out = [f"{self.model}, input {shape(self.input_shape)}", ""]
        pct = max(1, total.macs)
        if depth is None:
            rows = [[la.name or "(model)", la.kind, pair(la.kernel), stride(la.stride),
                     "" if la.groups is None else str(la.groups), shape(la.in_shape) or "not run",
                     shape(la.out_shape), f"{la.params:,}", f"{la.macs:,}",
                     f"{100 * la.macs / pct:.1f}%"] for la in self.layers]
            out += table(("name", "kind", "kernel", "stride", "groups", "input", "output",
                           "params", "MACs", "MACs %"), rows, numeric={7, 8, 9})
        else:
            rows = [[g.name or "(model)", str(len(g.layers)), shape(g.in_shape),
                     shape(g.out_shape), f"{g.params:,}", f"{g.macs:,}",
                     f"{100 * g.macs / pct:.1f}%"] for g in self.groups(depth)]
            out += table(("group", "layers", "input", "output", "params", "MACs", "MACs %"),
                          rows, numeric={1, 4, 5, 6})
        share = self.share()
        out += ["", f"total: {total.params:,} params ({total.weights:,} weights + "
                    f"{total.biases:,} biases), {total.macs:,} MACs ({total.flops:,} FLOPs)",
                f"1×1 convs: {100 * share['params']:.1f}% of params, "
                f"{100 * share['macs']:.1f}% of MACs"]
        if self.uncounted:
            out.append(f"MACs not counted (no formula for these layers): "
                       f"{', '.join(self.uncounted)}")
        out.append(f"convention: {self.convention}; {self.mac_scope}")
        if savings:
            out += ["", *self._savings_text(depth or 1)]
        return "\n".join(out)

    def _savings_text(self, depth: int) -> list[str]:
        found = self.savings()
        if not found:
            return ["savings: no 1×1 conv feeds a k×k conv in this model"]
        out = ["savings: each 1×1 conv that feeds a k×k conv, against that k×k conv alone on the "
               "1×1's input (same size, stride and padding)"]
        rows = [[s.reduce.name, s.conv.name, _channels(s), pair(s.conv.kernel),
                 f"{s.reduction.direct.macs:,}", f"{s.reduction.reduced.macs:,}",
                 f"{s.reduction.ratio:.2f}×"] for s in found]
        out += table(("1×1", "k×k", "channels", "kernel", "k×k alone MACs", "1×1 + k×k MACs",
                       "ratio"), rows, numeric={4, 5, 6})
        groups = self.savings_by_group(depth)
        out += ["", f"per group (depth {depth}): MACs as built, and with every reduced k×k conv "
                    "on its unreduced input instead"]
        rows = [[g.name, str(len(g.savings)), f"{g.cost.macs:,}", f"{g.without.macs:,}",
                 f"{g.without.macs - g.cost.macs:,}", f"{g.ratio:.2f}×"] for g in groups]
        out += table(("group", "reductions", "MACs", "without reductions", "saved", "ratio"),
                      rows, numeric={1, 2, 3, 4, 5})
        return out

    def to_dict(self, depth: int | None = None, savings: bool = False) -> dict[str, Any]:
        """A JSON-ready dict: totals, shares, convention, layers, and the requested views."""
        total = self.total
        d: dict[str, Any] = {
            "model": self.model, "input_shape": list(self.input_shape),
            "convention": self.convention, "mac_scope": self.mac_scope,
            "totals": total.as_dict(), "share_1x1": self.share(),
            "by_kind": {k: c.as_dict() for k, c in self.by_kind().items()},
            "uncounted": self.uncounted,
            "layers": [la.as_dict() for la in self.layers],
        }
        if depth is not None:
            d["groups"] = [g.as_dict() for g in self.groups(depth)]
        if savings:
            d["savings"] = [s.as_dict() for s in self.savings()]
            d["savings_by_group"] = [g.as_dict() for g in self.savings_by_group(depth or 1)]
        return d

    def to_csv(self, depth: int | None = None, savings: bool = False) -> str:
        """One table as CSV: the savings if asked, else the groups at ``depth``, else the layers."""
        buf = io.StringIO()
        if savings:
            columns: Sequence[str] = SAVING_COLUMNS
            rows = [s.as_dict() for s in self.savings()]
        elif depth is not None:
            columns, rows = GROUP_COLUMNS, [g.as_dict() for g in self.groups(depth)]
        else:
            columns, rows = LAYER_COLUMNS, [la.as_dict() for la in self.layers]
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(columns)
        for row in rows:
            w.writerow([cell(row[c]) for c in columns])
        return buf.getvalue()

    def to_png(self, path: str | os.PathLike[str], depth: int = 1) -> Path:
        """A horizontal bar chart of MACs and params per group at ``depth``, split by kind.

        The file appears whole or not at all (:func:`pointwise.files.atomic_write`).
        """
        groups = self.groups(depth)
        kinds = list(dict.fromkeys(la.kind for la in self.layers if la.macs or la.params))

        def per_kind(field: str) -> list[list[float]]:
            return [[sum(getattr(la, field) for la in g.layers if la.kind == kind)
                     for g in groups] for kind in kinds]

        share = self.share()
        title = (f"{self.model} at {shape(self.input_shape)}: {self.macs:,} MACs, "
                 f"{self.params:,} params; 1×1 convs hold {100 * share['macs']:.1f}% of "
                 f"MACs, {100 * share['params']:.1f}% of params")
        return bar_chart(path, title, [g.name or "(model)" for g in groups], kinds,
                         per_kind("macs"), per_kind("params"))
