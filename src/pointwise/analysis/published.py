"""A published table beside our counts: its cells, the rule by which a printed figure agrees
with ours, and its renderings as text and CSV.

>>> agrees("73", Fraction(73608192, 10**6)), agrees("364", Fraction(375552, 1024))
(True, False)
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from pointwise.analysis.tables import cell, table

__all__ = ["RULE", "Figure", "PaperRow", "PaperTable", "agrees"]

RULE = ("a printed figure agrees when our exact value, rounded to the printed digits (to "
        "nearest or by truncation), gives it; '!' flags every other figure")


@dataclass(frozen=True)
class Figure:
    """One printed cell beside ours.

    ``value`` is our exact figure in the printed unit (a Fraction, or an int for counts that
    must match exactly); ``exact`` our raw count (weights, MACs) when there is one.
    """

    column: str
    printed: str
    value: Fraction | int | str | None
    exact: int | None = None
    unit: str = ""

    @property
    def flagged(self) -> bool:
        return self.value is not None and not agrees(self.printed, self.value)

    @property
    def ours(self) -> str:
        """Our value, written with two more digits than printed."""
        v = self.value
        if v is None:
            return ""
        if isinstance(v, (str, int)):
            return str(v)
        digits = _decimals(self.printed) + 2
        return f"{float(v):.{digits}f}{self.unit}"

    def as_dict(self) -> dict[str, Any]:
        v = self.value
        return {"column": self.column, "printed": self.printed,
                "ours": float(v) if isinstance(v, Fraction) else v, "ours_text": self.ours,
                "exact": self.exact, "unit": self.unit, "flagged": self.flagged}


@dataclass(frozen=True)
class PaperRow:
    label: str
    printed: tuple[str, ...]  # every cell of the row as printed, in PaperTable.columns order
    figures: tuple[Figure, ...]  # the cells we compare

    @property
    def flagged(self) -> list[Figure]:
        return [f for f in self.figures if f.flagged]


@dataclass(frozen=True)
class PaperTable:
    key: str
    title: str
    columns: tuple[str, ...]
    rows: tuple[PaperRow, ...]
    notes: tuple[str, ...]

    @property
    def flagged(self) -> list[tuple[str, Figure]]:
        return [(row.label, f) for row in self.rows for f in row.flagged]

    def as_dict(self) -> dict[str, Any]:
        return {"key": self.key, "title": self.title, "columns": list(self.columns),
                "notes": list(self.notes), "rule": RULE,
                "rows": [{"label": r.label, "printed": list(r.printed),
                          "figures": [f.as_dict() for f in r.figures]} for r in self.rows]}

    def to_text(self) -> str:
        """The printed table with '!' on flagged cells, our figures beside it, and the flags."""
        out = [self.title, ""]
        one_row = len(self.rows) == 1
        if one_row:  # a row of figures: ours go underneath, column by column
            row = self.rows[0]
            flagged = {f.column for f in row.flagged}
            printed = [cell + ("!" if col in flagged else "")
                       for col, cell in zip(self.columns, row.printed, strict=True)]
            ours = ["ours", *(f.ours for f in row.figures)]
            exacts = ["exact", *(f"{f.exact:,}" if f.exact is not None else ""
                                 for f in row.figures)]
            out += table(self.columns, [printed, ours, exacts],
                          numeric=set(range(1, len(self.columns))))
        else:
            extra = [f.column for f in self.rows[0].figures if f.exact is not None]
            for row in self.rows[1:]:
                extra += [f.column for f in row.figures if f.exact is not None and
                          f.column not in extra]
            headers = [*self.columns, *(f"ours {c}" for c in extra), *(f"exact {c}"
                                                                      for c in extra)]
            rows = []
            for row in self.rows:
                flagged = {f.column for f in row.flagged}
                cells = [cell + ("!" if col in flagged else "")
                         for col, cell in zip(self.columns, row.printed, strict=True)]
                by_col = {f.column: f for f in row.figures}
                cells += [by_col[c].ours if c in by_col else "" for c in extra]
                cells += [f"{by_col[c].exact:,}" if c in by_col and by_col[c].exact is not None
                          else "" for c in extra]
                rows.append(cells)
            out += table(headers, rows, numeric=set(range(1, len(headers))))
        flags = self.flagged
        out += ["", f"flagged: {len(flags)} cell{'s' * (len(flags) != 1)}"]
        for label, f in flags:
            exact = f" ({f.exact:,})" if f.exact is not None else ""
            out.append(f"  {label}, {f.column}: printed {f.printed}{f.unit}, ours {f.ours}{exact}")
        out += ["", *(f"note: {n}" for n in self.notes)]
        return "\n".join(out)

    def to_csv(self) -> str:
        """Every compared cell of ``table``, one CSV row each."""
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["row", "column", "printed", "ours", "exact", "unit", "flagged"])
        for row in self.rows:
            for f in row.figures:
                w.writerow([row.label, f.column, f.printed, cell(f.as_dict()["ours"]),
                            cell(f.exact), f.unit, f.flagged])
        return buf.getvalue()


def agrees(printed: str, ours: Fraction | int | str) -> bool:
    """Whether ``printed`` (``"364"``, ``"2.7"``, ``"94.86"``) is ``ours`` rounded to its
    digits, to nearest (halves up) or by truncation. Integers and strings must be equal.

    >>> agrees("159", Fraction(163328, 1024)), agrees("360", Fraction(359661568, 10**6))
    (True, True)
    >>> agrees("1.19", Fraction(190560, 1000)), agrees("1.91", Fraction(190560, 100000))
    (False, True)
    """
    if isinstance(ours, (int, str)):
        return str(ours) == printed
    number = _number(printed)
    if number is None:
        return False
    scale = 10 ** _decimals(printed)
    target = round(number * scale)
    return target in (math.floor(ours * scale), math.floor(ours * scale + Fraction(1, 2)))


def _number(text: str) -> Fraction | None:
    try:
        return Fraction(text.replace(",", ""))
    except ValueError:
        return None


def _decimals(text: str) -> int:
    return len(text.split(".")[1]) if "." in text else 0
