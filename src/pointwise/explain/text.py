"""Numbers and arrays as the explainer writes them: exact integers, 4 significant digits
for floats, nested lists that fit the width of a terminal."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["Number", "factor", "fmt_number", "labelled"]

Number = int | float


def fmt_number(v: Number) -> str:
    return str(v) if isinstance(v, int) else format(v, ".4g")


def factor(v: Number) -> str:
    return f"({fmt_number(v)})" if v < 0 else fmt_number(v)


def _nested(a: np.ndarray, width: int) -> str:
    """A nested list: the outer axes go one index per line, as few as make every line fit."""
    text = fmt_number(a.item()) if a.ndim == 0 else ""
    for depth in range(a.ndim):
        text = _split(a, depth)
        if max(len(line) for line in text.splitlines()) <= width:
            break
    return text


def _split(a: np.ndarray, depth: int) -> str:
    if a.ndim == 0:
        return fmt_number(a.item())
    sep = ",\n " if depth > 0 else ", "
    return "[" + sep.join(_split(s, depth - 1).replace("\n", "\n ") for s in a) + "]"


def labelled(name: str, a: np.ndarray, max_items: int, width: int = 92) -> str:
    prefix = f"{name} = "
    if a.size > max_items:  # numpy's own summary: the edges of each axis, "..." between
        fmt: Any = {"int_kind": str, "float_kind": lambda v: fmt_number(float(v))}
        with np.printoptions(threshold=0, edgeitems=1, linewidth=width, formatter=fmt):
            body = np.array2string(a, separator=", ", prefix=prefix)
        return f"{prefix}{body}  # {a.size} values, summarized"
    body = _nested(a if a.dtype.kind in "iu" else a.astype(np.float64), width - len(prefix))
    return prefix + body.replace("\n", "\n" + " " * len(prefix))
