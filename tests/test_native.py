"""The compiled float32 kernels (pointwise/_kernel.c), against float64 references.

The kernels cut the work into tiles of 3–24 rows, panels of 16–64 columns and K blocks of
256 (channels-last) or 512 (channels-first), so the sizes below straddle every one of those
edges: tails of 1–2 rows, narrow last panels, K just over a block, images narrower than a
panel (which then share one). Where the CPU lacks AVX-512 the kernels are not used at all;
these tests are then skipped, and the rest of the suite covers the NumPy path alone.
"""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pointwise as pw
from pointwise import _native

pytestmark = pytest.mark.skipif(
    not _native.ENABLED, reason="compiled kernels not built or this CPU lacks AVX-512"
)

ACTS = [None, "relu", "relu6"]


def reference(a64: np.ndarray, b: np.ndarray | None, act: str | None) -> np.ndarray:
    y = a64 if b is None else a64 + b
    if act is not None:
        y = np.maximum(y, 0)
    if act == "relu6":
        y = np.minimum(y, 6)
    return y


def close(y: np.ndarray, ref: np.ndarray, k: int) -> None:
    # float32 accumulation over k terms of unit-variance products
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5 * np.sqrt(k) * 4)


def data(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


@settings(max_examples=60, deadline=None)
@given(m=st.integers(1, 80), c=st.integers(1, 600), f=st.integers(1, 140),
       bias=st.booleans(), act=st.sampled_from(ACTS), pad=st.integers(0, 3),
       threads=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_rows_match_float64(m, c, f, bias, act, pad, threads, seed):
    rng = np.random.default_rng(seed)
    # row strides wider than the rows (pad), as views of a channels-last slice give
    x = data(rng, m, c + pad)[:, :c]
    w = data(rng, c, f + pad)[:, :f]
    y = np.full((m, f + pad), 7.0, np.float32)
    b = data(rng, f) if bias else None
    kernel = _native._kernel
    assert kernel is not None
    kernel.rows(threads, m, c, f, x.ctypes.data, x.strides[0] // 4, w.ctypes.data,
                w.strides[0] // 4, y.ctypes.data, y.strides[0] // 4,
                0 if b is None else b.ctypes.data, _native._ACT[act])
    ref = reference(x.astype(np.float64) @ w.astype(np.float64), b, act)
    close(y[:, :f], ref, c)
    assert (y[:, f:] == 7.0).all(), "wrote past the last column"


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 4), c=st.integers(1, 700), p=st.integers(1, 150),
       f=st.integers(1, 40), bias=st.booleans(), act=st.sampled_from(ACTS),
       threads=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_cols_match_float64(n, c, p, f, bias, act, threads, seed):
    rng = np.random.default_rng(seed)
    x = data(rng, n, c, p + 2)[:, :, :p]  # each channel's pixels a strided run
    w = data(rng, f, c)
    y = np.full((n, f, p + 1), 7.0, np.float32)
    b = data(rng, f) if bias else None
    kernel = _native._kernel
    assert kernel is not None
    kernel.cols(threads, n, p, c, f, w.ctypes.data, w.strides[0] // 4, x.ctypes.data,
                x.strides[0] // 4, x.strides[1] // 4, y.ctypes.data, y.strides[0] // 4,
                y.strides[1] // 4, 0 if b is None else b.ctypes.data, _native._ACT[act])
    ref = reference(np.matmul(w.astype(np.float64), x.astype(np.float64)),
                    None if b is None else b[:, None], act)
    close(y[:, :, :p], ref, c)
    assert (y[:, :, p:] == 7.0).all(), "wrote past the last pixel"


def count_calls(monkeypatch) -> list[str]:
    """Record each call that reaches the compiled kernels."""
    calls: list[str] = []
    real = _native._kernel

    class Counting:
        def rows(self, *args):
            calls.append("rows")
            return real.rows(*args)

        def cols(self, *args):
            calls.append("cols")
            return real.cols(*args)

    monkeypatch.setattr(_native, "_kernel", Counting())
    return calls


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
@pytest.mark.parametrize("act", ACTS)
def test_conv1x1_float32_runs_on_the_kernels(monkeypatch, layout, act):
    calls = count_calls(monkeypatch)
    rng = np.random.default_rng(1)
    if layout == "NHWC":
        x, w = data(rng, 4, 30, 30, 70), data(rng, 1, 1, 70, 90)
    else:
        x, w = data(rng, 4, 70, 30, 30), data(rng, 90, 70, 1, 1)
    b = data(rng, 90)
    y = pw.conv1x1(x, w, b, layout=layout, activation=act)
    assert calls == ["rows" if layout == "NHWC" else "cols"]
    monkeypatch.setattr(_native, "_kernel", None)  # the NumPy path, for comparison
    expected = pw.conv1x1(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64),
                          layout=layout, activation=act)
    close(y, expected, 70)


@pytest.mark.parametrize("case", ["float64", "silu", "groups", "padding", "byteswapped"])
def test_calls_the_kernels_cannot_address_take_the_numpy_path(monkeypatch, case):
    calls = count_calls(monkeypatch)
    rng = np.random.default_rng(2)
    x, w, b = data(rng, 2, 20, 20, 64), data(rng, 1, 1, 64, 64), data(rng, 64)
    kw: dict = {}
    if case == "float64":
        x, w, b = x.astype(np.float64), w.astype(np.float64), b.astype(np.float64)
    elif case == "silu":
        kw["activation"] = "silu"
    elif case == "groups":
        w = w[:, :, :32]
        kw["groups"] = 2
    elif case == "padding":
        kw["padding"] = 1
    else:
        x = x.astype(">f4")
        x, w, b = x, w.astype(">f4"), b.astype(">f4")
    y = pw.conv1x1(x, w, b, **kw)
    assert calls == [] or case == "padding"
    monkeypatch.setattr(_native, "_kernel", None)
    np.testing.assert_allclose(y, pw.conv1x1(x, w, b, **kw), rtol=1e-5, atol=1e-4)


def test_nan_and_inf_propagate_through_relu():
    # max(0, NaN) must stay NaN, as in PyTorch; the kernel orders its operands for that
    x = np.ones((1, 40, 40, 32), np.float32)
    x[0, 0, 0, 0] = np.nan
    x[0, 0, 1, 0] = np.inf
    w = np.ones((32, 48), np.float32)
    w[0, 1] = 0.0  # inf · 0 is NaN
    y = pw.conv1x1(x, w, activation="relu")
    assert np.isnan(y[0, 0, 0]).all()
    assert np.isposinf(y[0, 0, 1, 0]) and np.isnan(y[0, 0, 1, 1])
    assert (y[0, 1:, :, 0] == 32).all() and (y[0, 1:, :, 1] == 31).all()
    y6 = pw.conv1x1(x, w, activation="relu6")
    assert np.isnan(y6[0, 0, 0]).all() and y6[0, 0, 1, 0] == 6 and (y6[0, 1:] == 6).all()


def test_python_threads_calling_at_once_all_get_their_own_result():
    # One job owns the pool at a time; the others run single-threaded, never wait or mix.
    rng = np.random.default_rng(3)
    problems = [(data(rng, 2, 24, 24, 96), data(rng, 96, 80), data(rng, 80)) for _ in range(6)]
    expected = [reference(x.astype(np.float64).reshape(-1, 96) @ w.astype(np.float64), b,
                          "relu").reshape(2, 24, 24, 80) for x, w, b in problems]
    errors: list[str] = []

    def work(i: int) -> None:
        x, w, b = problems[i]
        for _ in range(20):
            y = pw.conv1x1(x, w, b, activation="relu")
            if not np.allclose(y, expected[i], rtol=1e-4, atol=1e-3):
                errors.append(f"thread {i} got a wrong result")
                return

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(problems))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and not any(t.is_alive() for t in threads)


def _child(conn, x, w, expected):
    y = pw.conv1x1(x, w)
    conn.send(bool(np.allclose(y, expected, rtol=1e-4, atol=1e-3)))


def test_the_pool_works_in_a_forked_child():
    # The pool's threads do not survive fork(); the child must start its own, not hang.
    rng = np.random.default_rng(4)
    x, w = data(rng, 8, 32, 32, 64), data(rng, 64, 64)
    expected = pw.conv1x1(x, w)  # the parent's pool exists now
    ctx = multiprocessing.get_context("fork")
    parent_end, child_end = ctx.Pipe()
    proc = ctx.Process(target=_child, args=(child_end, x, w, expected))
    proc.start()
    ok = parent_end.poll(30) and parent_end.recv()
    proc.join(5)
    if proc.is_alive():
        proc.kill()
    assert ok, "the forked child hung or computed a wrong result"


def test_environment_switch_turns_the_kernels_off():
    code = "from pointwise import _native; print(_native.ENABLED)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={"POINTWISE_NATIVE": "0", "PATH": ""}, check=True)
    assert out.stdout.strip() == "False"
