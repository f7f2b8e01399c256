"""The compiled float32 kernels (``_kernel.c``), behind checks that make every call safe.

The kernels compute ``act(A @ B + bias)`` with bias and ReLU/ReLU6 applied to each output
tile in registers, so the output is written once; OpenBLAS's GEMM followed by NumPy's epilogue
writes it, then reads and writes it again. They read the large operand in place (no packing
pass over the activations) and split the work over a small spinning thread pool of their own,
which hands work over in about a microsecond where a sleeping thread needs ~60 µs.

They exist for x86-64 CPUs with AVX-512 and are built when the package is installed. Where
they are missing (no compiler at install time, another CPU) or switched off with
``POINTWISE_NATIVE=0``, :data:`ENABLED` is False and every call runs on NumPy's BLAS, with the
same results to rounding.

:func:`rows` and :func:`cols` take only what the kernels can address directly: float32,
aligned, unit stride along the channel or pixel axis, one group, and an activation the
kernel fuses. Anything else returns False, having done nothing, and the caller computes the
block its usual way.
"""

from __future__ import annotations

import os
from types import ModuleType

import numpy as np

from pointwise._blas import cores

__all__ = ["ENABLED", "cols", "rows"]


def _load() -> ModuleType | None:
    if os.environ.get("POINTWISE_NATIVE", "1") == "0":
        return None
    try:
        from pointwise import _kernel
    except ImportError:  # not built: no C compiler at install time, or another platform
        return None
    return _kernel if _kernel.available() else None


_kernel = _load()
ENABLED = _kernel is not None

# Below this many multiply-adds a call runs on the calling thread alone: handing half of it
# to a pool thread that has gone to sleep costs more than it saves.
PARALLEL_MIN_MACS = 1 << 20

_ACT = {None: 0, "relu": 1, "relu6": 2}
_F32 = np.dtype(np.float32)


def _ok(a: np.ndarray, unit_axis: int) -> bool:
    """float32, aligned, unit stride on ``unit_axis`` and non-negative strides elsewhere."""
    return (a.dtype == _F32 and a.flags.aligned
            and a.strides[unit_axis] == 4 and all(s >= 0 and s % 4 == 0 for s in a.strides))


def _threads(macs: int) -> int:
    return cores() if macs >= PARALLEL_MIN_MACS else 1


def rows(x: np.ndarray, w: np.ndarray, y: np.ndarray, b: np.ndarray | None,
         act: str | None) -> bool:
    """``y (M, F) = act(x (M, C) @ w (C, F) + b)`` on the kernels; False if they can't."""
    if (_kernel is None or act not in _ACT or not (_ok(x, 1) and _ok(w, 1) and _ok(y, 1))
            or (b is not None and not _ok(b, 0))):
        return False
    m, c = x.shape
    f = w.shape[1]
    if m == 0 or c == 0 or f == 0:
        return False
    _kernel.rows(_threads(m * c * f), m, c, f, x.ctypes.data, x.strides[0] // 4,
                 w.ctypes.data, w.strides[0] // 4, y.ctypes.data, y.strides[0] // 4,
                 0 if b is None else b.ctypes.data, _ACT[act])
    return True


def cols(w: np.ndarray, x: np.ndarray, y: np.ndarray, b: np.ndarray | None,
         act: str | None) -> bool:
    """``y[n] (F, P) = act(w (F, C) @ x[n] (C, P) + b)`` for every image n on the kernels;
    False if they can't."""
    if (_kernel is None or act not in _ACT or not (_ok(x, 2) and _ok(w, 1) and _ok(y, 2))
            or (b is not None and not _ok(b, 0))):
        return False
    n, c, p = x.shape
    f = w.shape[0]
    if n == 0 or c == 0 or p == 0 or f == 0:
        return False
    _kernel.cols(_threads(n * p * c * f), n, p, c, f, w.ctypes.data, w.strides[0] // 4,
                 x.ctypes.data, x.strides[0] // 4, x.strides[1] // 4, y.ctypes.data,
                 y.strides[0] // 4, y.strides[1] // 4, 0 if b is None else b.ctypes.data,
                 _ACT[act])
    return True
