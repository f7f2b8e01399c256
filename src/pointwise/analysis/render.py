"""A :class:`~pointwise.analyze.Report` as a terminal table, JSON, CSV or a PNG bar chart.

Each renderer shows one of three views: the layers (default), the groups of a name prefix
(``depth``), and with ``savings=True`` the 1×1 reductions. matplotlib (the ``plot`` extra)
is imported inside :func:`to_png` only and draws on an Agg canvas; every file is written
with :func:`pointwise._io.atomic_write`.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pointwise._io import atomic_write
from pointwise.cost import CONVENTION, Cost, Reduction, conv_cost, reduction_cost

if TYPE_CHECKING:
    from pointwise.analysis.papers import PaperTable
    from pointwise.analyze import Report

__all__ = ["cost_dict", "cost_text", "paper_csv", "paper_text", "to_csv", "to_dict", "to_png",
           "to_text"]

LAYER_COLUMNS = ("name", "kind", "kernel", "stride", "groups", "input", "output", "params",
                 "macs")
GROUP_COLUMNS = ("name", "layers", "input", "output", "params", "macs")
SAVING_COLUMNS = ("reduce", "conv", "channels", "kernel", "direct_macs", "reduced_macs",
                  "ratio", "saved_macs")


def to_text(report: Report, depth: int | None = None, savings: bool = False) -> str:
    """The layers (or the groups at ``depth``), the totals and the convention, as a table."""
    total = report.total
    out = [f"{report.model}, input {_shape(report.input_shape)}", ""]
    pct = max(1, total.macs)
    if depth is None:
        rows = [[la.name or "(model)", la.kind, _pair(la.kernel), _stride(la.stride),
                 "" if la.groups is None else str(la.groups), _shape(la.in_shape) or "not run",
                 _shape(la.out_shape), f"{la.params:,}", f"{la.macs:,}",
                 f"{100 * la.macs / pct:.1f}%"] for la in report.layers]
        out += _table(("name", "kind", "kernel", "stride", "groups", "input", "output",
                       "params", "MACs", "MACs %"), rows, numeric={7, 8, 9})
    else:
        rows = [[g.name or "(model)", str(len(g.layers)), _shape(g.in_shape),
                 _shape(g.out_shape), f"{g.params:,}", f"{g.macs:,}",
                 f"{100 * g.macs / pct:.1f}%"] for g in report.groups(depth)]
        out += _table(("group", "layers", "input", "output", "params", "MACs", "MACs %"),
                      rows, numeric={1, 4, 5, 6})
    share = report.share()
    out += ["", f"total: {total.params:,} params ({total.weights:,} weights + "
                f"{total.biases:,} biases), {total.macs:,} MACs ({total.flops:,} FLOPs)",
            f"1×1 convs: {100 * share['params']:.1f}% of params, "
            f"{100 * share['macs']:.1f}% of MACs"]
    if report.uncounted:
        out.append(f"MACs not counted (no formula for these layers): "
                   f"{', '.join(report.uncounted)}")
    out.append(f"convention: {report.convention}; {report.mac_scope}")
    if savings:
        out += ["", *_savings_text(report, depth or 1)]
    return "\n".join(out)


def _savings_text(report: Report, depth: int) -> list[str]:
    found = report.savings()
    if not found:
        return ["savings: no 1×1 conv feeds a k×k conv in this model"]
    out = ["savings: each 1×1 conv that feeds a k×k conv, against that k×k conv alone on the "
           "1×1's input (same size, stride and padding)"]
    rows = [[s.reduce.name, s.conv.name, _channels(s), _pair(s.conv.kernel),
             f"{s.reduction.direct.macs:,}", f"{s.reduction.reduced.macs:,}",
             f"{s.reduction.ratio:.2f}×"] for s in found]
    out += _table(("1×1", "k×k", "channels", "kernel", "k×k alone MACs", "1×1 + k×k MACs",
                   "ratio"), rows, numeric={4, 5, 6})
    groups = report.savings_by_group(depth)
    out += ["", f"per group (depth {depth}): MACs as built, and with every reduced k×k conv "
                "on its unreduced input instead"]
    rows = [[g.name, str(len(g.savings)), f"{g.cost.macs:,}", f"{g.without.macs:,}",
             f"{g.without.macs - g.cost.macs:,}", f"{g.ratio:.2f}×"] for g in groups]
    out += _table(("group", "reductions", "MACs", "without reductions", "saved", "ratio"),
                  rows, numeric={1, 2, 3, 4, 5})
    return out


def to_dict(report: Report, depth: int | None = None, savings: bool = False) -> dict[str, Any]:
    """A JSON-ready dict: totals, shares, convention, layers, and the requested views."""
    total = report.total
    d: dict[str, Any] = {
        "model": report.model, "input_shape": list(report.input_shape),
        "convention": report.convention, "mac_scope": report.mac_scope,
        "totals": total.as_dict(), "share_1x1": report.share(),
        "by_kind": {k: c.as_dict() for k, c in report.by_kind().items()},
        "uncounted": report.uncounted,
        "layers": [la.as_dict() for la in report.layers],
    }
    if depth is not None:
        d["groups"] = [g.as_dict() for g in report.groups(depth)]
    if savings:
        d["savings"] = [s.as_dict() for s in report.savings()]
        d["savings_by_group"] = [g.as_dict() for g in report.savings_by_group(depth or 1)]
    return d


def to_csv(report: Report, depth: int | None = None, savings: bool = False) -> str:
    """One table as CSV: the savings if asked, else the groups at ``depth``, else the layers."""
    buf = io.StringIO()
    if savings:
        columns: Sequence[str] = SAVING_COLUMNS
        rows = [s.as_dict() for s in report.savings()]
    elif depth is not None:
        columns, rows = GROUP_COLUMNS, [g.as_dict() for g in report.groups(depth)]
    else:
        columns, rows = LAYER_COLUMNS, [la.as_dict() for la in report.layers]
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for row in rows:
        w.writerow([_cell(row[c]) for c in columns])
    return buf.getvalue()


def to_png(report: Report, path: str | os.PathLike[str], depth: int = 1) -> Path:
    """A horizontal bar chart of MACs and params per group at ``depth``, split by kind.

    The file appears whole or not at all (:func:`pointwise._io.atomic_write`).
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError("expected matplotlib to draw a PNG, but it is not installed; "
                          "install it with: pip install 'pointwise-conv[plot]'") from None
    groups = report.groups(depth)
    kinds = list(dict.fromkeys(la.kind for la in report.layers
                               if la.macs or la.params))
    fig = Figure(figsize=(12, 1.5 + 0.28 * len(groups)), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2, sharey=True)
    labels = [g.name or "(model)" for g in groups]
    ys = list(range(len(groups)))
    for ax, (field, title, scale) in zip(axes, (("macs", "MACs (millions)", 1e6),
                                               ("params", "params (thousands)", 1e3)),
                                         strict=True):
        left = [0.0] * len(groups)
        for i, kind in enumerate(kinds):
            values = [sum(getattr(la, field) for la in g.layers if la.kind == kind) / scale
                      for g in groups]
            ax.barh(ys, values, left=left, label=kind, color=f"C{i % 10}")
            left = [a + b for a, b in zip(left, values, strict=True)]
        ax.set_title(title, fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(ys, labels, fontsize=8)
    axes[0].invert_yaxis()
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside lower center", ncols=min(len(kinds), 8) or 1,
               fontsize=8)
    share = report.share()
    fig.suptitle(f"{report.model} at {_shape(report.input_shape)}: {report.macs:,} MACs, "
                 f"{report.params:,} params; 1×1 convs hold {100 * share['macs']:.1f}% of "
                 f"MACs, {100 * share['params']:.1f}% of params", fontsize=10)
    with atomic_write(path) as fh:
        fig.savefig(fh, format="png", dpi=100)
    return Path(path)


def paper_text(table: PaperTable) -> str:
    """The printed table with '!' on flagged cells, our figures beside it, and the flags."""
    out = [table.title, ""]
    one_row = len(table.rows) == 1
    if one_row:  # a row of figures: ours go underneath, column by column
        row = table.rows[0]
        flagged = {f.column for f in row.flagged}
        printed = [cell + ("!" if col in flagged else "")
                   for col, cell in zip(table.columns, row.printed, strict=True)]
        ours = ["ours", *(f.ours for f in row.figures)]
        exacts = ["exact", *(f"{f.exact:,}" if f.exact is not None else ""
                             for f in row.figures)]
        out += _table(table.columns, [printed, ours, exacts],
                      numeric=set(range(1, len(table.columns))))
    else:
        extra = [f.column for f in table.rows[0].figures if f.exact is not None]
        for row in table.rows[1:]:
            extra += [f.column for f in row.figures if f.exact is not None and
                      f.column not in extra]
        headers = [*table.columns, *(f"ours {c}" for c in extra), *(f"exact {c}"
                                                                  for c in extra)]
        rows = []
        for row in table.rows:
            flagged = {f.column for f in row.flagged}
            cells = [cell + ("!" if col in flagged else "")
                     for col, cell in zip(table.columns, row.printed, strict=True)]
            by_col = {f.column: f for f in row.figures}
            cells += [by_col[c].ours if c in by_col else "" for c in extra]
            cells += [f"{by_col[c].exact:,}" if c in by_col and by_col[c].exact is not None
                      else "" for c in extra]
            rows.append(cells)
        out += _table(headers, rows, numeric=set(range(1, len(headers))))
    flags = table.flagged
    out += ["", f"flagged: {len(flags)} cell{'s' * (len(flags) != 1)}"]
    for label, f in flags:
        exact = f" ({f.exact:,})" if f.exact is not None else ""
        out.append(f"  {label}, {f.column}: printed {f.printed}{f.unit}, ours {f.ours}{exact}")
    out += ["", *(f"note: {n}" for n in table.notes)]
    return "\n".join(out)


def paper_csv(table: PaperTable) -> str:
    """Every compared cell of ``table``, one CSV row each."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["row", "column", "printed", "ours", "exact", "unit", "flagged"])
    for row in table.rows:
        for f in row.figures:
            w.writerow([row.label, f.column, f.printed, _cell(f.as_dict()["ours"]),
                        _cell(f.exact), f.unit, f.flagged])
    return buf.getvalue()


# ------------------------------------------------------------------ pointwise cost
def _costs(size: Sequence[int], kernel: tuple[int, int], out_channels: int,
           reduce: int | None, stride: int, bias: bool) -> tuple[Cost, Reduction | None]:
    *batch, h, w, c = size
    n = batch[0] if batch else 1
    if reduce is None:
        pad = (kernel[0] // 2, kernel[1] // 2)
        return conv_cost(c, out_channels, kernel, input_size=(h, w), stride=stride,
                         padding=pad, bias=bias, batch=n), None
    red = reduction_cost(c, out_channels, kernel, reduce, input_size=(h, w), stride=stride,
                         bias=bias, batch=n)
    return red.direct, red


def cost_dict(size: Sequence[int], kernel: tuple[int, int], out_channels: int,
              reduce: int | None = None, *, stride: int = 1, bias: bool = False
              ) -> dict[str, Any]:
    """A k×k conv on an (N×)H×W×C input, direct and behind a 1×1 reduction, as a dict."""
    direct, red = _costs(size, kernel, out_channels, reduce, stride, bias)
    d: dict[str, Any] = {"input": list(size), "kernel": list(kernel),
                         "out_channels": out_channels, "stride": stride,
                         "padding": [kernel[0] // 2, kernel[1] // 2], "bias": bias,
                         "convention": CONVENTION, "direct": direct.as_dict()}
    if red is not None:
        d.update(reduce_channels=reduce, reduce=red.reduce.as_dict(), conv=red.conv.as_dict(),
                 reduced=red.reduced.as_dict(), ratio=red.ratio,
                 weights_ratio=red.weights_ratio, saved_macs=red.saved_macs)
    return d


def cost_text(size: Sequence[int], kernel: tuple[int, int], out_channels: int,
              reduce: int | None = None, *, stride: int = 1, bias: bool = False) -> str:
    """The same as :func:`cost_dict`, as a table: weights (params with ``bias``) and MACs."""
    direct, red = _costs(size, kernel, out_channels, reduce, stride, bias)
    c, f = size[-1], out_channels
    counted = "params" if bias else "weights"

    def count(cost: Cost) -> int:
        return cost.params if bias else cost.weights

    k = _pair(kernel)
    rows: list[tuple[str, str, Cost]] = [("direct", f"{k} conv {c}→{f}", direct)]
    if red is not None:
        rows += [("with reduction", f"1×1 conv {c}→{reduce}", red.reduce),
                 ("", f"{k} conv {reduce}→{f}", red.conv), ("", "total", red.reduced)]
    pad = _stride((kernel[0] // 2, kernel[1] // 2))
    out = [f"input {_shape(size)}, {k} conv to {f} channels, stride {stride}, 'same' "
           f"padding ({pad})", ""]
    out += _table(("", "", counted, "MACs"),
                  [[a, b, f"{count(x):,}", f"{x.macs:,}"] for a, b, x in rows], numeric={2, 3})
    if red is not None:
        ratio = count(red.direct) / max(1, count(red.reduced))
        out += ["", f"the 1×1 reduction needs {red.ratio:.2f}× fewer MACs "
                    f"({red.saved_macs:,} saved) and {ratio:.2f}× fewer {counted}"]
    out.append(f"convention: {CONVENTION}")
    return "\n".join(out)


# ------------------------------------------------------------------------------ helpers
def _table(headers: Sequence[str], rows: list[list[str]], numeric: set[int]) -> list[str]:
    """Aligned columns; the ``numeric`` ones right-aligned."""
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if i in numeric else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

    return [line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def _shape(shape: Sequence[int] | None) -> str:
    return "" if shape is None else "×".join(str(d) for d in shape)


def _pair(v: tuple[int, int] | None) -> str:
    return "" if v is None else f"{v[0]}×{v[1]}"


def _stride(v: tuple[int, int] | None) -> str:
    if v is None:
        return ""
    return str(v[0]) if v[0] == v[1] else f"{v[0]}×{v[1]}"


def _channels(s: Any) -> str:
    c = s.as_dict()["channels"]
    return "→".join(str(x) for x in c) if c else ""


def _cell(v: Any) -> Any:
    if isinstance(v, list):
        return "×".join(str(x) for x in v)
    if v is None:
        return ""
    return v
