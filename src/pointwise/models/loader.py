"""Build a model from a name the user typed: a registered name or ``module:attr``.

Only names the user typed come here (the command line's ``MODEL`` and ``--model``). A name
read from a file (a checkpoint's config, an ONNX file's metadata) must never reach
:func:`load_model`: importing a module runs its code, so a file that names a module would
choose code to run. :func:`pointwise.training.export.load_model` builds a checkpoint's model
from the registry alone for that reason.

Modules are imported from ``sys.path`` as it stands. The current folder is not added: with
it first on the path, any ``onnx.py`` or ``torch.py`` lying in the folder a command runs in
would shadow the real package. ``python -m pointwise`` and ``PYTHONPATH=DIR`` put a folder
on the path when the user wants that.
"""

from __future__ import annotations

import importlib
from typing import Any

from torch import nn

from pointwise.models.registry import create

__all__ = ["load_model"]


def load_model(spec: str, **kwargs: Any) -> tuple[nn.Module, str]:
    """Build ``spec``: a registered name, or ``module:attr`` naming a factory or an nn.Module.

    ``spec`` must come from the user, never from a file (see the module docstring).
    ``kwargs`` (e.g. ``num_classes``) go to the entry point or factory. Returns the model and
    a short name for it (the registry name, or the attribute's name).

    >>> model, name = load_model("nin_digits", num_classes=4)
    >>> name, type(model).__name__
    ('nin_digits', 'NiN')
    """
    if not isinstance(spec, str):
        raise TypeError(f"expected MODEL as a str, but got {type(spec).__name__}")
    if ":" not in spec:
        return create(spec, **kwargs), spec  # an unknown name raises ValueError with close names
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"expected MODEL as a name or module:attr, but got {spec!r}")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as e:
        raise ImportError(f"expected an importable module {module_name!r} for {spec!r}, but "
                          f"got {type(e).__name__}: {e}; modules are found on sys.path, "
                          f"which holds the current folder only under `python -m "
                          f"pointwise` (or add the folder to PYTHONPATH)") from None
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
