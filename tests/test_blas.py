"""OpenBLAS's one thread count, held at one during a fused call: nobody else may notice.

A fused call of the NumPy path runs single-threaded GEMMs on every core, and OpenBLAS has
a single count for the whole process. While it is held at one, other threads must still
see the true count, and a child forked in that window must get it back.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

import pointwise as pw
from forked import answer_from_forked_child
from pointwise.kernels import blas


@pytest.fixture
def two_blas_threads():
    found = blas.openblas()
    if found is None:
        pytest.skip("no OpenBLAS found in this process to steer")
    if blas.cores() < 2:
        pytest.skip("one CPU: a fused call never holds the count at one")
    return found


def test_other_threads_and_forked_children_see_the_true_count(two_blas_threads):
    before = two_blas_threads.get_threads()
    seen: dict[str, int | None] = {}

    def work(r0: int, r1: int) -> None:
        if r0:
            return
        seen["inside"] = two_blas_threads.get_threads()  # the window is open: one
        other = threading.Thread(target=lambda: seen.__setitem__("other", blas.cores()))
        other.start()
        other.join(30)
        seen["child"] = answer_from_forked_child(lambda: blas.openblas().get_threads(),
                                                 timeout=60)

    assert blas.parallel_rows(4, work, 1)
    assert seen["inside"] == 1, "the call did not hold OpenBLAS at one thread"
    assert seen["other"] == min(before, blas.allowed_cpus()), seen
    assert seen["child"] == before, f"the forked child kept {seen['child']} OpenBLAS thread(s)"
    assert two_blas_threads.get_threads() == before


def test_a_child_forked_during_a_fused_float64_call_keeps_the_count(two_blas_threads, monkeypatch):
    # The case: a large fused float64 conv in one thread, a fork in another.
    import pointwise.kernels.gemm as gemm

    before = two_blas_threads.get_threads()
    x = np.random.default_rng(0).standard_normal((8, 64, 64, 64))
    w = np.random.default_rng(1).standard_normal((64, 64))
    b = np.zeros(64)
    children: list[int | None] = []
    started = threading.Event()
    real = gemm.parallel_rows

    def slow_share(total, work, min_rows):  # the first share lets the fork happen inside
        def share(r0: int, r1: int) -> None:
            if r0 == 0:
                started.set()
                threading.Event().wait(0.3)
            work(r0, r1)
        return real(total, share, min_rows)

    monkeypatch.setattr(gemm, "parallel_rows", slow_share)
    t = threading.Thread(target=lambda: pw.conv1x1(x, w, b, activation="relu"))
    t.start()
    assert started.wait(60)
    children.append(answer_from_forked_child(lambda: blas.openblas().get_threads(),
                                             timeout=60))
    t.join(60)
    assert not t.is_alive()
    assert children == [before]
    assert two_blas_threads.get_threads() == before
