"""Old import paths of modules that moved when the package was split into layers.

``import pointwise.train`` (and every other path below) still works for one release: it
warns with a ``DeprecationWarning`` naming the new path, and gives a module whose names are
the new module's. Nothing here is imported until an old path is.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import warnings
from types import ModuleType
from typing import Any

__all__ = ["MOVED", "install"]

#: old module path -> new module path
MOVED = {
    "pointwise.analyze": "pointwise.analysis",
    "pointwise.bench_cli": "pointwise.cli.bench",
    "pointwise.checkpoint": "pointwise.training.checkpoint",
    "pointwise.data": "pointwise.training.data",
    "pointwise.distributed": "pointwise.training.distributed",
    "pointwise.export": "pointwise.training.export",
    "pointwise.train": "pointwise.training.train",
    "pointwise.train_cli": "pointwise.cli.train",
    "pointwise.train_config": "pointwise.training.config",
}


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name: str, path: Any, target: Any = None
                  ) -> importlib.machinery.ModuleSpec | None:
        return importlib.util.spec_from_loader(name, self) if name in MOVED else None

    def exec_module(self, module: ModuleType) -> None:
        new = MOVED[module.__name__]
        warnings.warn(f"{module.__name__} moved to {new}; import it from there (the old "
                      f"path goes in the next release)", DeprecationWarning, stacklevel=2)
        target = importlib.import_module(new)
        module.__all__ = list(getattr(target, "__all__", ()))  # type: ignore[attr-defined]
        setattr(module, "__getattr__", lambda name: getattr(target, name))  # noqa: B010


def install() -> None:
    """Put the finder on ``sys.meta_path`` once."""
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.append(_Finder())
