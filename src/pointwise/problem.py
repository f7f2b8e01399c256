"""A validated call in canonical form: what every layer below the argument checks sees.

``x`` is a 4-D batched view in its layout's axis order, the weight a 2-D matrix, and every
size already checked (:func:`pointwise.layout.check_forward` builds it). The output size of
each spatial axis, and where its interior lies, is a :class:`Geometry`.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np

__all__ = ["Geometry", "Problem", "output_size"]


def output_size(size: int, padding: int, stride: int) -> int:
    """Output length of one spatial axis of a 1×1 conv: ``(size + 2·padding − 1) // stride + 1``.

    >>> output_size(56, 1, 2)
    29

    Raises:
        TypeError: an argument is not an int (a bool, float or str).
        ValueError: ``size`` or ``padding`` below 0, or ``stride`` below 1.
    """
    for name, v, minimum in (("size", size, 0), ("padding", padding, 0), ("stride", stride, 1)):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise TypeError(f"expected {name} to be an int, but got {v!r}")
        if v < minimum:
            raise ValueError(f"expected {name} >= {minimum}, but got {name}={v!r}")
    return _output_size(int(size), int(padding), int(stride))


def _output_size(size: int, padding: int, stride: int) -> int:
    """:func:`output_size` of arguments already checked (the hot path's)."""
    return (size + 2 * padding - 1) // stride + 1


@dataclass(frozen=True)
class Geometry:
    """Where the output's interior (the pixels that see real input) lies, per spatial axis.

    Output index ``o`` reads input index ``o·s − p``; it is interior when that index is inside
    ``[0, size)``. Interior outputs form the contiguous range ``[lo, lo + count)`` and read the
    inputs ``start, start + s, …``.
    """

    out: int
    lo: int
    count: int
    start: int
    stride: int

    @classmethod
    def of(cls, size: int, padding: int, stride: int) -> Geometry:
        out = _output_size(size, padding, stride)
        lo = -(-padding // stride)  # ceil(p / s): first o with o·s − p ≥ 0
        hi = min(out, (size - 1 + padding) // stride + 1) if size > 0 else lo
        count = max(0, hi - lo)
        return cls(out=out, lo=lo, count=count, start=lo * stride - padding, stride=stride)

    def in_slice(self) -> slice:
        """The input positions that interior outputs read."""
        if self.count == 0:
            return slice(0, 0)
        return slice(self.start, self.start + (self.count - 1) * self.stride + 1, self.stride)

    def out_slice(self) -> slice:
        return slice(self.lo, self.lo + self.count)

    @property
    def full(self) -> bool:
        """True when every output pixel is interior (no padded border on this axis)."""
        return self.count == self.out


@dataclass(frozen=True)
class Problem:
    """A validated 1×1 conv call, in canonical form.

    ``x`` is 4-D: (N, H, W, C) when ``channels_last`` else (N, C, H, W); a view, never a copy.
    ``w`` is the weight as a matrix: (C/G, F) when ``channels_last`` else (F, C/G).
    """

    x: np.ndarray
    w: np.ndarray
    bias: np.ndarray | None
    layout: str
    channels_last: bool
    batched: bool
    groups: int
    activation: str | None
    rows: Geometry
    cols: Geometry
    dtype: np.dtype  # result dtype
    compute_dtype: np.dtype  # float32 for half types, else dtype
    weight_shape: tuple[int, ...]
    x_shape: tuple[int, ...]

    @property
    def n(self) -> int:
        return int(self.x.shape[0])

    @property
    def c(self) -> int:
        return int(self.x.shape[3] if self.channels_last else self.x.shape[1])

    @property
    def f(self) -> int:
        return int(self.w.shape[1] if self.channels_last else self.w.shape[0])

    @property
    def out_shape4(self) -> tuple[int, int, int, int]:
        """Output shape in canonical 4-D form."""
        ho, wo = self.rows.out, self.cols.out
        return (self.n, ho, wo, self.f) if self.channels_last else (self.n, self.f, ho, wo)

    @property
    def out_shape(self) -> tuple[int, ...]:
        """Output shape in the caller's layout."""
        return self.out_shape4 if self.batched else self.out_shape4[1:]
