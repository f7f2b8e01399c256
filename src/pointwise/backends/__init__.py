"""Array backends: which library computes an argument, without importing any library.

NumPy arrays, lists and scalars take the NumPy core. A torch tensor or a JAX array is routed
to that library's implementation, which returns the same type. Like einops and
array-api-compat, this looks only at the type's module, so a library the caller has not
imported is never imported here. The backends themselves: :mod:`pointwise.backends.jax`,
and :mod:`pointwise.nn.functional` for torch (it lives with the rest of the torch
integration).
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

__all__ = ["backend_for"]

# module-name prefix of the array type -> module that implements conv1x1 for it
_BACKENDS = {
    "torch": "pointwise.nn.functional",
    "jax": "pointwise.backends.jax",
    "jaxlib": "pointwise.backends.jax",
}


def backend_for(*arrays: Any) -> ModuleType | None:
    """The implementation module for these arguments, or None for the NumPy core."""
    found = None
    for a in arrays:
        root = type(a).__module__.partition(".")[0]
        target = _BACKENDS.get(root)
        if target is None:
            continue
        if found is not None and found != target:
            raise TypeError(
                f"expected arrays from one library, but got {found!r} and {target!r} arrays"
            )
        found = target
    return None if found is None else importlib.import_module(found)
