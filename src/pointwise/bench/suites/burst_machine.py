"""What the machine itself allows a burst: the same call split over pinned threads that never
hand work to one another.

A pool's burst can be slow for two kinds of reasons: its own (a worker woken late, or on the
caller's CPU; a spinning neighbour pool) or the machine's (the host runs another guest on
our vCPUs' cores, or slows them). Only the first is ours to fix. :class:`PinnedShares`
separates them: one thread per CPU the kernels would use, each pinned to its own CPU and
each running its own share of the call's rows on the single-threaded kernel ``CALLS`` times
in a row, started together once per burst and never waiting for each other within it. A
call's time is the slowest share's; no wake-up, hand-off or placement is left in it, so a
round where this row is slow is a round where the machine was.

Pinning is done with ``os.sched_setaffinity(0, …)``, which on Linux moves only the calling
thread, on threads the burst starts and stops itself: the caller and every pool keep their
masks.
"""

from __future__ import annotations

import os
import threading
import time

import numpy as np

from pointwise.kernels import native

__all__ = ["PinnedShares", "cpus_for"]


def cpus_for(threads: int) -> list[int]:
    """The first ``threads`` CPUs this process may use; fewer if it may use fewer, and none
    where affinity cannot be set (not Linux)."""
    if not hasattr(os, "sched_setaffinity"):
        return []
    return sorted(os.sched_getaffinity(0))[:threads]


class PinnedShares:
    """``y (M, F) = act(x (M, C) @ w (C, F) + b)`` split by rows over threads pinned to
    ``cpus``, one share each, each share on one kernel thread.

    :meth:`burst` runs ``calls`` calls in every thread at once and returns, per call, the
    slowest share's time. :meth:`call` runs one call the same way and returns ``y``.
    """

    def __init__(self, x: np.ndarray, w: np.ndarray, y: np.ndarray, b: np.ndarray,
                 act: str | None, cpus: list[int]) -> None:
        kernel = native._kernel
        if kernel is None:
            raise RuntimeError("the compiled kernels are off (POINTWISE_NATIVE=0 or not built)")
        if len(cpus) < 2:
            raise ValueError(f"PinnedShares needs at least 2 CPUs to split over, got {cpus}")
        self.kernel = kernel
        self.x, self.w, self.y, self.b = x, w, y, b  # (M, C), (C, F), (M, F), (F,)
        self.code = native.ACTIVATIONS[act]
        cut = np.linspace(0, x.shape[0], len(cpus) + 1).astype(int)  # share k: rows cut[k]:cut[k+1]
        self.shares = list(zip(cpus, cut[:-1], cut[1:], strict=True))

    def _share(self, k: int, calls: int, out: list[list[float]],
               start: threading.Barrier) -> None:
        cpu, r0, r1 = self.shares[k]
        os.sched_setaffinity(0, {cpu})  # this thread only (Linux)
        x, y = self.x[r0:r1], self.y[r0:r1]  # (rows, C), (rows, F): views
        start.wait()
        ts = out[k]
        for _ in range(calls):
            t0 = time.perf_counter()
            self.kernel.rows(1, x, self.w, y, self.b, self.code, None, False)
            ts.append(time.perf_counter() - t0)

    def burst(self, calls: int) -> list[float]:
        """Per call, the slowest share's time (s), ``calls`` calls back to back."""
        times: list[list[float]] = [[] for _ in self.shares]
        start = threading.Barrier(len(self.shares))
        threads = [threading.Thread(target=self._share, args=(k, calls, times, start),
                                    daemon=True) for k in range(len(self.shares))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return [max(ts) for ts in zip(*times, strict=True)]

    def call(self) -> np.ndarray:
        """One call, for verification: ``y``."""
        self.burst(1)
        return self.y
