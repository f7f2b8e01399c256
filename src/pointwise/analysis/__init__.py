"""The analyzer: where a network's parameters and multiply-adds are, and the papers' tables.

* :mod:`~pointwise.analysis.trace`: the meta-device trace, one :class:`Layer` per leaf call;
* :mod:`~pointwise.analysis.report`: the :class:`Report` and its renderings (text, JSON,
  CSV, a PNG chart drawn by :mod:`~pointwise.analysis.chart`);
* :mod:`~pointwise.analysis.analyzer`: :func:`analyze`, which builds it;
* :mod:`~pointwise.analysis.published` and :mod:`~pointwise.analysis.papers`: the papers'
  tables, transcribed once as data, beside our own counts.

The names below load on first use, so that the torch-free pieces of this package (its text
tables, say) can be imported without torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pointwise.analysis.analyzer import analyze
    from pointwise.analysis.report import Group, GroupSaving, Report, Saving
    from pointwise.analysis.trace import KIND_1X1, Layer

__all__ = ["KIND_1X1", "Group", "GroupSaving", "Layer", "Report", "Saving", "analyze"]

_HOME = {"analyze": "analyzer", "Group": "report", "GroupSaving": "report", "Report": "report",
         "Saving": "report", "KIND_1X1": "trace", "Layer": "trace"}


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'pointwise.analysis' has no attribute {name!r}")
    return getattr(importlib.import_module(f"pointwise.analysis.{home}"), name)
