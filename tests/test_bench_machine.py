"""The burst suite's yardstick: a call split over pinned threads that never hand off."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest

from pointwise.bench.suites import burst_machine
from pointwise.kernels import native

needs_two = pytest.mark.skipif(
    not native.ENABLED or len(burst_machine.cpus_for(2)) < 2,
    reason="needs the compiled kernels and two CPUs to pin to")


def _problem(m: int, c: int, f: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((m, c), dtype=np.float32)  # (M, C)
    w = rng.standard_normal((c, f), dtype=np.float32)  # (C, F)
    b = rng.standard_normal(f, dtype=np.float32)  # (F,)
    ref = np.maximum(x.astype(np.float64) @ w + b, 0.0)  # (M, C) @ (C, F), float64
    return x, w, b, ref


@needs_two
@pytest.mark.parametrize("m", [2, 7, 255, 1000])
def test_shares_compute_the_whole_call(m: int) -> None:
    x, w, b, ref = _problem(m, 19, 33)
    y = np.full((m, 33), np.nan, np.float32)
    shares = burst_machine.PinnedShares(x, w, y, b, "relu", burst_machine.cpus_for(2))
    out = shares.call()
    assert out is y and np.isfinite(y).all()
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


@needs_two
def test_burst_times_every_call_and_leaves_the_caller_where_it_was() -> None:
    x, w, b, _ = _problem(512, 64, 64)
    y = np.empty((512, 64), np.float32)
    before = os.sched_getaffinity(0)
    threads = threading.active_count()
    times = burst_machine.PinnedShares(x, w, y, b, None, burst_machine.cpus_for(2)).burst(5)
    assert len(times) == 5 and all(t > 0 for t in times)
    assert os.sched_getaffinity(0) == before  # only the burst's own threads were pinned
    assert threading.active_count() == threads  # and they have ended


def test_bad_setups_are_refused() -> None:
    x, w, b, _ = _problem(8, 4, 4)
    y = np.empty((8, 4), np.float32)
    if not native.ENABLED:
        with pytest.raises(RuntimeError, match="kernels are off"):
            burst_machine.PinnedShares(x, w, y, b, None, [0, 1])
        return
    with pytest.raises(ValueError, match="at least 2 CPUs"):
        burst_machine.PinnedShares(x, w, y, b, None, [0])
