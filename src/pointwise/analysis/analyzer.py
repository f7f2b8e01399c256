"""Where a network's parameters and multiply-adds are: per layer, per module, per 1×1.

:func:`analyze` runs a model's forward once on torch's *meta* device: tensors there have
shapes but no data, so no arithmetic runs and the model you pass is never touched (a copy of
it, without its data, is traced). A forward hook on every leaf module records its input and
output shapes; every count then comes from a formula in :mod:`pointwise.cost`, where the
convention is written once (``CONVENTION``, ``MAC_SCOPE``). The result is a
:class:`~pointwise.analysis.report.Report`; the published tables it reproduces are in
:mod:`pointwise.analysis.papers`.

>>> from torch import nn
>>> from pointwise.nn import Conv1x1
>>> net = nn.Sequential(Conv1x1(192, 16, bias=False), nn.ReLU(),
...                     nn.Conv2d(16, 32, 5, padding=2, bias=False))
>>> r = analyze(net, (1, 192, 28, 28))
>>> [(layer.name, layer.kind, layer.macs) for layer in r.layers]
[('0', 'conv 1×1', 2408448), ('1', 'act', 0), ('2', 'conv 5×5', 10035200)]
>>> s = r.savings()[0]
>>> s.reduce.name, s.conv.name, s.reduction.direct.macs, round(s.reduction.ratio, 2)
('0', '2', 120422400, 9.68)
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from pointwise.analysis.report import Report
from pointwise.analysis.trace import check_shape, trace

__all__ = ["analyze"]


def analyze(model: nn.Module, input_shape: Sequence[int] = (1, 3, 224, 224), *,
            name: str | None = None) -> Report:
    """Trace ``model`` on a meta-device input of ``input_shape`` and count every layer.

    The model is deep-copied without its data onto the meta device and run once in eval
    mode; ``model`` itself is not changed, moved or run. Every count comes from
    :mod:`pointwise.cost`. Modules the forward never calls still have their params counted,
    so ``report.params == sum(p.numel() for p in model.parameters())`` always holds.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``.
        ValueError: a bad ``input_shape``, or a forward that fails on it (the message says
            why: wrong channel count, data-dependent control flow…).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected an nn.Module to analyze, but got {type(model).__name__}")
    shape = check_shape(input_shape)
    label = name or type(model).__name__
    layers, modules = trace(model, shape, label)
    report = Report(label, shape, tuple(layers), dict(modules))
    expected = sum(p.numel() for p in model.parameters())  # parameters() skips shared ones
    if report.params != expected:  # every module's own tensors are counted exactly once
        raise AssertionError(f"analyzer counted {report.params} params, but the model has "
                             f"{expected}; a layer escaped the trace")
    return report
