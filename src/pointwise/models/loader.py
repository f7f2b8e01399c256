"""Build a model from a name on the command line: a registered name or ``module:attr``."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

from torch import nn

from pointwise.models.registry import create

__all__ = ["load_model"]


def load_model(spec: str, **kwargs: Any) -> tuple[nn.Module, str]:
    """Build ``spec``: a registered name, or ``module:attr`` naming a factory or an nn.Module.

    ``kwargs`` (e.g. ``num_classes``) go to the entry point or factory. Returns the model and
    a short name for it (the registry name, or the attribute's name).

    >>> model, name = load_model("nin_digits", num_classes=4)
    >>> name, type(model).__name__
    ('nin_digits', 'NiN')
    """
    if ":" not in spec:
        return create(spec, **kwargs), spec  # an unknown name raises ValueError with close names
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"expected MODEL as a name or module:attr, but got {spec!r}")
    if os.getcwd() not in sys.path:  # as `python -m` would: the user's own modules import
        sys.path.insert(0, os.getcwd())
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as e:
        raise ImportError(f"expected an importable module {module_name!r} for {spec!r}, but "
                          f"got {type(e).__name__}: {e}") from None
    except Exception as e:  # the user's module failed while it ran
        raise ValueError(f"expected module {module_name!r} to import, but it raised "
                         f"{type(e).__name__}: {e}") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"expected {module_name!r} to define {attr!r}, but it has no "
                             f"{part!r}")
        obj = getattr(obj, part)
    if isinstance(obj, nn.Module) and kwargs:
        raise TypeError(f"expected a factory for {spec!r} to pass {sorted(kwargs)} to, but got "
                        f"an nn.Module instance; expose a function that builds it instead")
    if not isinstance(obj, nn.Module):
        if not callable(obj):
            raise TypeError(f"expected {spec!r} to be an nn.Module or a function returning "
                            f"one, but got {type(obj).__name__}")
        try:
            obj = obj(**kwargs)
        except Exception as e:
            raise ValueError(f"expected {spec}() to build a model, but it raised "
                             f"{type(e).__name__}: {e}") from None
        if not isinstance(obj, nn.Module):
            raise TypeError(f"expected {spec}() to return an nn.Module, but got "
                            f"{type(obj).__name__}")
    return obj, attr.rsplit(".", 1)[-1]
