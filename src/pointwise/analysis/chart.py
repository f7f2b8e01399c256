"""The analyzer's chart: MACs and params per group, one bar segment per layer kind, as a PNG.

matplotlib (the ``plot`` extra) is imported inside :func:`bar_chart` only and draws on an
Agg canvas; the file is written with :func:`pointwise.files.atomic_write`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from pointwise.files import atomic_write

__all__ = ["bar_chart"]


def bar_chart(path: str | os.PathLike[str], title: str, labels: Sequence[str],
              kinds: Sequence[str], macs: Sequence[Sequence[float]],
              params: Sequence[Sequence[float]]) -> Path:
    """Horizontal stacked bars: one row per label, one segment per kind.

    ``macs[k][g]`` and ``params[k][g]`` are kind k's MACs and params in row g. The file
    appears whole or not at all.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ModuleNotFoundError("expected matplotlib to draw a PNG, but it is not "
                                  "installed (the 'plot' extra)", name="matplotlib") from None
    fig = Figure(figsize=(12, 1.5 + 0.28 * len(labels)), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2, sharey=True)
    ys = list(range(len(labels)))
    for ax, (series, what, scale) in zip(axes, ((macs, "MACs (millions)", 1e6),
                                                (params, "params (thousands)", 1e3)),
                                         strict=True):
        left = [0.0] * len(labels)
        for i, (kind, values) in enumerate(zip(kinds, series, strict=True)):
            scaled = [v / scale for v in values]
            ax.barh(ys, scaled, left=left, label=kind, color=f"C{i % 10}")
            left = [a + b for a, b in zip(left, scaled, strict=True)]
        ax.set_title(what, fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(ys, labels, fontsize=8)
    axes[0].invert_yaxis()
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside lower center", ncols=min(len(kinds), 8) or 1,
               fontsize=8)
    fig.suptitle(title, fontsize=10)
    with atomic_write(path) as fh:
        fig.savefig(fh, format="png", dpi=100)
    return Path(path)
