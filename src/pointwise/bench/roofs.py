"""The machine's roofs, measured in the same run: GEMM peak and memory bandwidth.

* **GEMM peak**: the best of several large square fp32 ``np.matmul`` calls into a reused
  output (NumPy's BLAS, the pinned thread count), ``2·n³`` FLOPs each.
* **Bandwidth**: STREAM's *copy* (``b[:] = a``, 8 bytes per element counted) and *triad*
  (``a = b + s·c``, 12 bytes per element counted) on float32 arrays far larger than the
  last-level cache in the full run. NumPy runs triad as two passes, so its count is a lower
  bound of the traffic actually moved; the roof uses the better of the two.

The attainable rate at arithmetic intensity ``I`` (FLOP per compulsory byte, from
:meth:`pointwise.cost.Cost.intensity`) is ``min(peak, I · bandwidth)``.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np


def _best(fn: Any, repeats: int) -> float:
    fn()  # warm-up (and page the buffers in)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def measure_roofs(quick: bool = False) -> dict[str, Any]:
    """GEMM GFLOP/s and copy/triad GB/s; ``quick`` uses small sizes (seconds → ~0.1 s)."""
    n = 768 if quick else 2048
    reps = 3 if quick else 7
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    c = np.empty((n, n), np.float32)
    t = _best(lambda: np.matmul(a, b, out=c), reps)
    gemm = 2 * n**3 / t / 1e9

    m = (4 if quick else 64) << 20  # elements: 16 MiB (quick) or 256 MiB per array
    x = np.ones(m, np.float32)
    y = np.empty(m, np.float32)
    z = np.full(m, 2.0, np.float32)
    copy = 8 * m / _best(lambda: np.copyto(y, x), reps) / 1e9

    def triad() -> None:
        np.multiply(z, np.float32(3.0), out=y)
        np.add(y, x, out=y)

    tri = 12 * m / _best(triad, reps) / 1e9
    return {"gemm_gflops": gemm, "gemm_n": n, "copy_gbs": copy, "triad_gbs": tri,
            "bandwidth_gbs": max(copy, tri), "stream_elems": m, "quick": quick}


def attainable(roofs: dict[str, Any], intensity: float) -> float:
    """Roofline: GFLOP/s attainable at ``intensity`` FLOP/byte."""
    return float(min(roofs["gemm_gflops"], intensity * roofs["bandwidth_gbs"]))
