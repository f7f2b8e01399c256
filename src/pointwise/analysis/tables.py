"""Plain-text tables and the cells in them, as every renderer of the analyzer writes them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["cell", "pair", "shape", "stride", "table"]


def table(headers: Sequence[str], rows: list[list[str]], numeric: set[int]) -> list[str]:
    """Aligned columns; the ``numeric`` ones right-aligned."""
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if i in numeric else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

    return [line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def shape(shape: Sequence[int] | None) -> str:
    return "" if shape is None else "×".join(str(d) for d in shape)


def pair(v: tuple[int, int] | None) -> str:
    return "" if v is None else f"{v[0]}×{v[1]}"


def stride(v: tuple[int, int] | None) -> str:
    if v is None:
        return ""
    return str(v[0]) if v[0] == v[1] else f"{v[0]}×{v[1]}"


def cell(v: Any) -> Any:
    if isinstance(v, list):
        return "×".join(str(x) for x in v)
    if v is None:
        return ""
    return v
