"""OpenBLAS's threads, the CPUs this process may use, and the pool that shares row blocks.

NumPy's matmul hands one GEMM to OpenBLAS, which splits it across its threads; the bias and
activation that follow run on one core, over an output that has left the cache. Fusing them
means: give each core its own share of the rows, let it run a single-threaded GEMM on one
cache-sized block, then bias and activate that block while it is still in that core's L2.
Python threads do this well because NumPy releases the GIL in matmul and in ufuncs.

OpenBLAS has one thread count for the whole process (``openblas_set_num_threads_local`` is
the same global setter in its pthreads builds), so a fused call sets it to one for its
duration and restores it afterwards. Nothing else may notice: :func:`cores` answers the
count to be restored while a call holds it at one, and a child forked during such a call
gets the count back at once (it would otherwise keep one thread for good, at half speed).
Fused calls run one at a time, so their windows never overlap.

OpenBLAS is found the way threadpoolctl finds it: among the shared libraries already
loaded into the process (NumPy's own), so nothing is imported or installed. Where it cannot
be found (another BLAS, another OS), :func:`parallel_rows` declines and callers keep the
plain path.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

__all__ = ["OpenBLAS", "allowed_cpus", "cores", "openblas", "parallel_rows", "wanted"]

_lock = threading.Lock()  # one fused call at a time owns the BLAS thread setting
_pool: ThreadPoolExecutor | None = None
#: OpenBLAS's own thread count while a fused call holds it at one, else None.
_held: int | None = None


@dataclass(frozen=True)
class OpenBLAS:
    """The entry points of the OpenBLAS that NumPy loaded."""

    path: str
    set_threads: Callable[[int], None]
    get_threads: Callable[[], int]
    #: address of ``openblas_set_threads_callback_function`` (OpenBLAS >= 0.3.27), or 0
    callback_setter: int


def _after_fork_in_child() -> None:
    # A forked child (a DataLoader worker, say) inherits the pool object but none of its
    # threads, and possibly a held lock: start both afresh, or the first call would hang.
    # A fork during a fused call would also leave the child's OpenBLAS at one thread.
    global _lock, _pool, _held
    _lock = threading.Lock()
    _pool = None
    if _held is not None:
        blas = openblas()
        if blas is not None:
            blas.set_threads(_held)
        _held = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _symbol(lib: ctypes.CDLL, stem: str) -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    for prefix in ("scipy_openblas_", "openblas_"):
        for suffix in ("64_", ""):
            fn = getattr(lib, f"{prefix}{stem}{suffix}", None)
            if fn is not None:
                return fn
    return None


def _find_openblas() -> OpenBLAS | None:
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
        setter, getter = _symbol(lib, "set_num_threads"), _symbol(lib, "get_num_threads")
        if setter is None or getter is None:
            continue
        setter.argtypes, getter.restype = [ctypes.c_int], ctypes.c_int
        callback = _symbol(lib, "set_threads_callback_function")
        address = ctypes.cast(callback, ctypes.c_void_p).value if callback is not None else 0
        return OpenBLAS(path, setter, getter, address or 0)
    return None


_openblas: OpenBLAS | bool | None = False


def openblas() -> OpenBLAS | None:
    """The OpenBLAS NumPy uses, found once; None for another BLAS."""
    global _openblas
    if _openblas is False:
        import numpy  # noqa: F401  (loads the BLAS the lookup searches for)

        _openblas = _find_openblas()
    return _openblas  # type: ignore[return-value]


def _quota() -> int | None:
    """CPUs the cgroup's quota allows (cgroup v2 ``cpu.max``, v1 ``cfs_quota_us``), rounded
    up; None without a quota. Read once: a container's quota is set before it starts."""
    for path, period_path in (("/sys/fs/cgroup/cpu.max", None),
                              ("/sys/fs/cgroup/cpu/cpu.cfs_quota_us",
                               "/sys/fs/cgroup/cpu/cpu.cfs_period_us")):
        try:
            with open(path) as fh:
                fields = fh.read().split()
            if period_path is not None:
                with open(period_path) as fh:
                    fields.append(fh.read().strip())
        except OSError:
            continue
        if len(fields) >= 2 and fields[0] not in ("max", "-1"):
            with contextlib.suppress(ValueError, ZeroDivisionError):
                return max(1, math.ceil(int(fields[0]) / int(fields[1])))
    return None


_QUOTA = _quota()


def _env_threads() -> int | None:
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        with contextlib.suppress(ValueError):
            n = int(os.environ.get(var, "").split(",")[0])
            if n > 0:
                return n
    return None


def allowed_cpus() -> int:
    """CPUs the calling thread may run on now (its affinity mask, which a cgroup's cpuset
    also narrows) and that the cgroup's CPU quota pays for."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(n, _QUOTA or n))


def wanted() -> int:
    """Threads asked for: OpenBLAS's own count (it honours the usual OPENBLAS_NUM_THREADS /
    OMP_NUM_THREADS settings; those settings themselves where NumPy uses another BLAS), at
    most the cgroup's quota. While a fused call holds OpenBLAS at one thread, the count it
    will restore. The kernels' pool takes this and clamps it to the CPUs the caller may use
    (it reads its affinity in C, where that costs 0.6 us against 1 us from here)."""
    blas = openblas()
    held = _held
    n = held if held is not None else blas.get_threads() if blas is not None else None
    if n is None:
        n = _env_threads() or allowed_cpus()
    return max(1, min(n, _QUOTA or n))


def cores() -> int:
    """Threads for one call: :func:`wanted`, at most :func:`allowed_cpus`."""
    return max(1, min(wanted(), allowed_cpus()))


@contextlib.contextmanager
def _single_threaded_blas(blas: OpenBLAS) -> Iterator[None]:
    global _held
    with _lock:
        before = blas.get_threads()
        _held = before  # first: whoever looks, or forks, from now on sees the true count
        blas.set_threads(1)
        try:
            yield
        finally:
            blas.set_threads(before)
            _held = None


def parallel_rows(total: int, work: Callable[[int, int], None], min_rows: int) -> bool:
    """Call ``work(r0, r1)`` on ``cores()`` contiguous shares of ``range(total)`` at once.

    Each share runs with single-threaded BLAS. Returns False, having done nothing, when
    there is one core, no OpenBLAS to steer, or too few rows (< ``min_rows`` per share) for
    the split to pay; the caller then does the work itself.
    """
    global _pool
    blas = openblas()
    n = cores()
    if blas is None or n < 2 or total < n * min_rows:
        return False
    bounds = [total * i // n for i in range(n + 1)]
    with _single_threaded_blas(blas):
        if _pool is None or _pool._max_workers < n - 1:  # more CPUs allowed than before
            if _pool is not None:
                _pool.shutdown(wait=False)
            _pool = ThreadPoolExecutor(max_workers=n - 1, thread_name_prefix="pointwise")
        futures = [_pool.submit(work, bounds[i], bounds[i + 1]) for i in range(1, n)]
        try:
            work(bounds[0], bounds[1])  # the calling thread takes the first share
        finally:  # never leave a share running once BLAS threads are restored
            for f in futures:
                f.result()
    return True
