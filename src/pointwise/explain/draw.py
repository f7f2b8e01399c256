"""Drawings of a 1×1 conv's arrays (what :meth:`~pointwise.explain.Trace.to_png` draws):
annotated heatmaps, as a PNG.

matplotlib (the ``plot`` extra) is imported inside the function only, and drawn on an Agg
canvas, so no display or global backend is touched; ``import pointwise`` never loads it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from pointwise.explain.text import fmt_number
from pointwise.files import atomic_write
from pointwise.layout import LAYOUTS

__all__ = ["draw"]

_Planes = list[tuple[int, np.ndarray]]  # (channel index, (H, W) plane)


def draw(x: np.ndarray, weight: np.ndarray, y: np.ndarray, layout: str,
         path: str | os.PathLike[str], bias: np.ndarray | None = None) -> Path:
    """Draw the input channels, the filter, the bias (if any) and the output of a 1×1 conv
    in ``layout`` (its weight in that layout's format) into the PNG ``path``.

    The file appears whole or not at all (:func:`pointwise.files.atomic_write`).
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:  # the name lets the command line name the extra to install
        raise ModuleNotFoundError("expected matplotlib to draw a PNG, but it is not "
                                  "installed (the 'plot' extra)", name="matplotlib") from None
    xs, w, ys = _planes(x, weight, y, layout)
    panels = [(f"input c={c}", a, "viridis") for c, a in xs]
    panels += [("filter w[c, f]", w, "coolwarm")]
    if bias is not None:  # (1, F): one cell per filter, added to every pixel of output f
        panels += [("bias b[f]", np.asarray(bias).reshape(1, -1), "coolwarm")]
    panels += [(f"output f={f}", a, "viridis") for f, a in ys]
    fig = Figure(figsize=(2.4 * len(panels), 2.9), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (title, a, cmap) in zip(axes, panels, strict=True):
        _heatmap(ax, a.astype(np.float64), title, cmap)
    fig.suptitle(f"1×1 conv, {layout}: {x.shape} → {y.shape}")
    with atomic_write(path) as fh:
        fig.savefig(fh, format="png", dpi=100)
    return Path(path)


def _planes(x: np.ndarray, weight: np.ndarray, y: np.ndarray,
            layout: str) -> tuple[_Planes, np.ndarray, _Planes]:
    """Image 0's first input and output channels as (H, W) planes; the weight as (C, F)."""
    channels_last, batched = LAYOUTS[layout]
    x = x[0] if batched else x  # (H, W, C) or (C, H, W)
    y = y[0] if batched else y  # (H, W, F) or (F, H, W)
    w = weight[0, 0] if weight.ndim == 4 and channels_last else weight  # (C, F)
    if channels_last:
        x, y = np.moveaxis(x, -1, 0), np.moveaxis(y, -1, 0)  # (C, H, W), (F, H, W)
    else:
        w = (w[:, :, 0, 0] if w.ndim == 4 else w).T  # (F, C) -> (C, F)
    return list(enumerate(x[:4])), w, list(enumerate(y[:4]))


def _heatmap(ax: Any, a: np.ndarray, title: str, cmap: str) -> None:
    """One (rows, cols) panel; a diverging map centred on 0 for the weights."""
    lim = float(np.nanmax(np.abs(a))) if a.size and cmap == "coolwarm" else 0.0
    im = ax.imshow(a, cmap=cmap, vmin=-lim if lim else None, vmax=lim if lim else None)
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    if a.size <= 144:  # numbers only while they still fit in their cells
        lo, hi = im.get_clim()
        for (r, c), v in np.ndenumerate(a):
            dark = cmap == "viridis" and v - lo < 0.55 * (hi - lo)
            text = fmt_number(int(v) if float(v).is_integer() else float(v))
            ax.text(c, r, text, ha="center", va="center", fontsize=8,
                    color="white" if dark else "black")
