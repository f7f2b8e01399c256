"""The activations the operator fuses, applied in place, and their derivatives.

Each forward works in place on a block that is still in cache, so the epilogue never costs
a separate pass over a large output. Definitions match PyTorch's:

==========  ==========================  ===================================================
name        act(z)                      act'(z)
==========  ==========================  ===================================================
relu        max(z, 0)                   1 if z > 0 else 0
relu6       min(max(z, 0), 6)           1 if 0 < z < 6 else 0
silu        z · sigmoid(z)              s · (1 + z · (1 − s)),  s = sigmoid(z)
hardswish   z · relu6(z + 3) / 6        0 if z < −3; z/3 + 1/2 if z ≤ 3; else 1
==========  ==========================  ===================================================

NaN propagates through every activation, as in IEEE arithmetic and PyTorch.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from pointwise.layout import ACTIVATIONS

__all__ = ["apply_", "derivative", "grad_mask_from_output", "value"]


def _relu_(z: np.ndarray) -> None:
    np.maximum(z, 0, out=z)  # np.maximum propagates NaN, unlike np.fmax


def _relu6_(z: np.ndarray) -> None:
    np.maximum(z, 0, out=z)
    np.minimum(z, 6, out=z)


def _silu_(z: np.ndarray) -> None:
    # z / (1 + exp(−z)): exp overflows to inf for very negative z, giving −0, which is the limit.
    t = np.negative(z)
    with np.errstate(over="ignore"):
        np.exp(t, out=t)
    t += 1
    np.divide(z, t, out=z)


def _hardswish_(z: np.ndarray) -> None:
    t = z + 3
    _relu6_(t)
    z *= t
    z /= 6


_FORWARD: dict[str, Callable[[np.ndarray], None]] = {
    "relu": _relu_,
    "relu6": _relu6_,
    "silu": _silu_,
    "hardswish": _hardswish_,
}
assert tuple(_FORWARD) == ACTIVATIONS


def apply_(z: np.ndarray, activation: str | None) -> None:
    """Apply ``activation`` to ``z`` in place (``None`` is the identity)."""
    if activation is not None:
        _FORWARD[activation](z)


def value(z: np.ndarray, activation: str | None) -> np.ndarray:
    """``activation(z)`` as a new array."""
    out = np.array(z, copy=True)
    apply_(out, activation)
    return out


def derivative(z: np.ndarray, activation: str | None) -> np.ndarray:
    """``act'(z)`` elementwise, from the pre-activation ``z``, as a new array of z's dtype."""
    if activation is None:
        return np.ones_like(z)
    if activation == "relu":
        return (z > 0).astype(z.dtype)
    if activation == "relu6":
        return ((z > 0) & (z < 6)).astype(z.dtype)
    if activation == "silu":
        with np.errstate(over="ignore"):
            s = 1 / (1 + np.exp(-z))
        return s * (1 + z * (1 - s))
    if activation == "hardswish":
        return np.where(z < -3, 0, np.where(z <= 3, z / 3 + 0.5, 1)).astype(z.dtype)
    raise AssertionError(activation)


def grad_mask_from_output(y: np.ndarray, activation: str) -> np.ndarray:
    """``act'(z)`` recovered from the output ``y = act(z)``; valid for relu and relu6 only."""
    if activation == "relu":
        return (y > 0).astype(y.dtype)
    if activation == "relu6":
        return ((y > 0) & (y < 6)).astype(y.dtype)
    raise AssertionError(f"{activation} cannot be differentiated from its output")
