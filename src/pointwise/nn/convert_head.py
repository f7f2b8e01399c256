""":func:`pointwise.nn.convert`'s head pass: every ``nn.Linear`` becomes a
:class:`pointwise.nn.Linear` and every ``nn.AdaptiveAvgPool2d`` to one pixel a
:class:`pointwise.nn.GlobalAvgPool2d`, whose inference runs on the head's kernels
(:mod:`pointwise.nn.head`).

The swap keeps the parameters themselves (the new ``Linear`` holds the old one's
``Parameter`` objects, so an optimizer or a caller holding them still sees every edit), their
state_dict keys and the module's mode; the pool has no state. Always safe: both are torch's
modules with another inference path, which falls back to torch's own wherever it can't run.

Left as they are: subclasses (their forward may differ), a ``Linear`` whose weight is not
yet initialised (``nn.LazyLinear``), and modules with hooks (reported), which the swap would
drop.
"""

from __future__ import annotations

from torch import nn

from pointwise.nn._chains import hooks
from pointwise.nn.head import GlobalAvgPool2d, Linear, is_global
from pointwise.nn.report import ConvertReport

__all__ = ["replace_head"]


def _candidate(m: nn.Module) -> bool:
    if type(m) is nn.Linear:
        return not isinstance(m.weight, nn.parameter.UninitializedParameter)
    return type(m) is nn.AdaptiveAvgPool2d and is_global(m)


def _swap(m: nn.Module) -> nn.Module:
    if isinstance(m, nn.Linear):
        return Linear.from_linear(m)
    assert isinstance(m, nn.AdaptiveAvgPool2d)  # _candidate
    return GlobalAvgPool2d.from_pool(m)


def replace_head(model: nn.Module, report: ConvertReport) -> nn.Module:
    """Swap the ``nn.Linear`` and global ``nn.AdaptiveAvgPool2d`` modules of ``model`` (in
    place; the model itself if it is one)."""
    new: dict[int, nn.Module] = {}  # a module held at two places stays one module
    for qualname, child in list(model.named_modules(remove_duplicate=False)):
        if not _candidate(child):
            continue
        name = qualname or "(model)"
        why = hooks(child)
        if why is not None:
            report.skipped.append((name, why))
            continue
        if id(child) not in new:
            new[id(child)] = _swap(child)
        swapped = new[id(child)]
        report.head.append((name, f"nn.{type(child).__name__} -> {type(swapped).__name__}"))
        if not qualname:
            return swapped
        parent, _, attr = qualname.rpartition(".")
        setattr(model.get_submodule(parent), attr, swapped)
    return model
