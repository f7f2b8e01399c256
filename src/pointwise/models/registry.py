"""The model registry: ``@register_model``, ``create(name, **kwargs)``, ``names(pattern)``.

timm's pattern (STYLE.md, item 9), with one thing done better: an unknown name suggests the
close ones. Each family module ends with small entry points decorated with
``@register_model``; importing :mod:`pointwise.models` imports every family, which fills the
one module-level :class:`Registry`. Registering only adds to that dict: no I/O, no torch
state, nothing built until :func:`create` is called.
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["Registry", "create", "names", "register_model"]

F = TypeVar("F", bound=Callable[..., Any])


class Registry:
    """Model entry points by name.

    >>> r = Registry()
    >>> @r.register
    ... def tiny(num_classes=10):
    ...     return num_classes
    >>> r.names("t*"), r.create("tiny", num_classes=3)
    (['tiny'], 3)
    """

    def __init__(self) -> None:
        self._fns: dict[str, Callable[..., Any]] = {}

    def register(self, fn: F) -> F:
        """Register ``fn`` under its ``__name__``; a name taken already raises ``ValueError``."""
        name = fn.__name__
        if name in self._fns:
            old = self._fns[name]
            raise ValueError(
                f"expected a new model name, but got {name!r}, already registered by "
                f"{old.__module__}.{old.__qualname__}"
            )
        self._fns[name] = fn
        return fn

    def names(self, pattern: str = "*") -> list[str]:
        """The registered names matching the fnmatch ``pattern`` (``*``, ``?``, ``[ab]``),
        in natural order (resnet18 before resnet101)."""
        return sorted((n for n in self._fns if fnmatch.fnmatchcase(n, pattern)), key=_natural)

    def create(self, name: str, **kwargs: Any) -> Any:
        """Build the model ``name``; ``kwargs`` go to its entry point.

        Raises:
            ValueError: ``name`` is not registered; the message suggests the close names.
        """
        fn = self._fns.get(name)
        if fn is None:
            raise ValueError(self._unknown(name)) from None
        return fn(**kwargs)

    def _unknown(self, name: str) -> str:
        every = sorted(self._fns)
        close = difflib.get_close_matches(name, every, n=4, cutoff=0.6)
        if not close:  # a family prefix such as "resnet" or "mobile"
            close = [n for n in every if n.startswith(str(name).lower())][:4]
        hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
        return (f"unknown model {name!r}; {hint}"
                f"(pointwise.models.names() lists all {len(every)})")

    def __contains__(self, name: object) -> bool:
        return name in self._fns

    def __len__(self) -> int:
        return len(self._fns)


def _natural(name: str) -> list[Any]:
    """Sort key that compares digit runs as numbers: resnet18 < resnet50 < resnet101."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


_REGISTRY = Registry()
register_model = _REGISTRY.register
names = _REGISTRY.names
create = _REGISTRY.create
