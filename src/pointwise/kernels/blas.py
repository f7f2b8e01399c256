"""Run row blocks on every core, each with a single-threaded BLAS call and its own epilogue.

NumPy's matmul hands one GEMM to OpenBLAS, which splits it across its threads; the bias and
activation that follow run on one core, over an output that has left the cache. Fusing them
means: give each core its own share of the rows, let it run a single-threaded GEMM on one
cache-sized block, then bias and activate that block while it is still in that core's L2.
Python threads do this well because NumPy releases the GIL in matmul and in ufuncs.

OpenBLAS is told to use one thread for the duration of such a call and restored afterwards.
It is found the way threadpoolctl finds it: among the shared libraries already loaded into
the process (NumPy's own), so nothing is imported or installed. Where it cannot be found
(another BLAS, another OS), :func:`parallel_rows` is None and callers keep the plain path.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

__all__ = ["cores", "parallel_rows"]

_CPUS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
_lock = threading.Lock()  # one fused call at a time owns the BLAS thread setting
_pool: ThreadPoolExecutor | None = None


def _after_fork_in_child() -> None:
    # A forked child (a DataLoader worker, say) inherits the pool object but none of its
    # threads, and possibly a held lock: start both afresh, or the first call would hang.
    global _lock, _pool
    _lock = threading.Lock()
    _pool = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _find_openblas() -> tuple[Callable[[int], None], Callable[[], int]] | None:
    try:
        with open("/proc/self/maps", encoding="utf-8") as fh:
            paths = {line.split()[-1] for line in fh if "openblas" in line.lower()}
    except OSError:
        return None
    for path in sorted(paths):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix in ("scipy_openblas_", "openblas_"):
            for suffix in ("64_", ""):
                setter = getattr(lib, f"{prefix}set_num_threads{suffix}", None)
                getter = getattr(lib, f"{prefix}get_num_threads{suffix}", None)
                if setter is not None and getter is not None:
                    setter.argtypes, getter.restype = [ctypes.c_int], ctypes.c_int
                    return setter, getter
    return None


_openblas: tuple[Callable[[int], None], Callable[[], int]] | bool | None = False


def _blas() -> tuple[Callable[[int], None], Callable[[], int]] | None:
    global _openblas
    if _openblas is False:
        import numpy  # noqa: F401  (loads the BLAS the lookup searches for)

        _openblas = _find_openblas()
    return _openblas  # type: ignore[return-value]


def cores() -> int:
    """Threads the fused path uses: OpenBLAS's own thread count (it honours the usual
    OPENBLAS_NUM_THREADS / OMP_NUM_THREADS settings), at most the CPUs this process may use."""
    blas = _blas()
    if blas is None:
        return 1
    return max(1, min(blas[1](), _CPUS))


@contextlib.contextmanager
def _single_threaded_blas() -> Iterator[None]:
    blas = _blas()
    assert blas is not None
    setter, getter = blas
    with _lock:
        before = getter()
        setter(1)
        try:
            yield
        finally:
            setter(before)


def parallel_rows(total: int, work: Callable[[int, int], None], min_rows: int) -> bool:
    """Call ``work(r0, r1)`` on ``cores()`` contiguous shares of ``range(total)`` at once.

    Each share runs with single-threaded BLAS. Returns False, having done nothing, when
    there is one core, no OpenBLAS to steer, or too few rows (< ``min_rows`` per share) for
    the split to pay; the caller then does the work itself.
    """
    global _pool
    n = cores()
    if n < 2 or total < n * min_rows:
        return False
    bounds = [total * i // n for i in range(n + 1)]
    with _single_threaded_blas():
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=n - 1, thread_name_prefix="pointwise")
        futures = [_pool.submit(work, bounds[i], bounds[i + 1]) for i in range(1, n)]
        try:
            work(bounds[0], bounds[1])  # the calling thread takes the first share
        finally:  # never leave a share running once BLAS threads are restored
            for f in futures:
                f.result()
    return True
