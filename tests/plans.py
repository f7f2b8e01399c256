"""What the tests of the planned inference calls share (``pointwise.nn._fastcall``,
``_fasttaps``): a spy on the kernels' by-address entries, and the check that a planned module
copies and pickles with a weight of its own."""

from __future__ import annotations

import copy
import pickle
from collections.abc import Callable
from typing import Any

import torch

from pointwise.nn import _native_torch as NT


def spy_at(monkeypatch: Any, *names: str) -> list[str]:
    """Record, in order, each call of the kernels' entries ``names`` (``"rows_at"``, ...)."""
    seen: list[str] = []
    for name in names:
        real = getattr(NT._native._kernel, name)
        monkeypatch.setattr(NT._native._kernel, name,
                            lambda *a, real=real, name=name: seen.append(name) or real(*a))
    return seen


def check_copies_and_pickles(m: torch.nn.Module, x: torch.Tensor,
                             expected: Callable[[Any, torch.Tensor], torch.Tensor]) -> None:
    """``m`` planned on ``x``, then a deep copy and a pickled copy, each with its weight
    negated: each gives its own weight's result, and ``m`` its own."""
    with torch.no_grad():
        m(x)
        m(x)
        for other in (copy.deepcopy(m), pickle.loads(pickle.dumps(m))):
            other.weight.data.mul_(-1)  # its own weight, not m's
            torch.testing.assert_close(other(x).double(), expected(other, x), rtol=1e-5,
                                       atol=1e-5)
        torch.testing.assert_close(m(x).double(), expected(m, x), rtol=1e-5, atol=1e-5)
