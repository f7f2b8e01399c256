"""The compiled float32 kernels (pointwise/kernels/csrc/), against float64 references.

The kernels cut the work into tiles of 3–24 rows, panels of 8–64 columns and K blocks of
256 (channels-last, AVX-512) or 512 (channels-last with AVX2, and channels-first), so the
sizes below straddle every one of those edges: tails of 1–2 rows, narrow last panels, K
just over a block, images narrower than a panel (which then share one). Every test runs once
per instruction set this CPU has (AVX-512, AVX2), skipped for one it lacks; where the kernels
were not built, all are skipped and the rest of the suite covers the NumPy path alone.
"""

from __future__ import annotations

import sys
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pointwise as pw
from forked import answer_from_forked_child
from pointwise.kernels import native as _native

try:
    from pointwise.kernels import _kernel as KERNEL
except ImportError:  # not built: no C compiler when the package was installed
    KERNEL = None

pytestmark = [pytest.mark.skipif(KERNEL is None, reason="compiled kernels not built"),
              pytest.mark.usefixtures("isa")]  # every test on each instruction set

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


@settings(max_examples=80, deadline=None)
@given(m=st.integers(1, 80), c=st.integers(1, 600), f=st.integers(1, 140),
       bias=st.booleans(), act=st.sampled_from(ACTS), pad=st.integers(0, 3),
       residual=st.booleans(), threads=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_rows_match_float64(m, c, f, bias, act, pad, residual, threads, seed):
    rng = np.random.default_rng(seed)
    # row strides wider than the rows (pad), as views of a channels-last slice give
    x = data(rng, m, c + pad)[:, :c]
    w = data(rng, c, f + pad)[:, :f]
    y = np.full((m, f + pad), 7.0, np.float32)
    b = data(rng, f) if bias else None
    r = data(rng, m, f + 2 * pad)[:, :f] if residual else None  # added on the last K block
    kernel = _native._kernel
    assert kernel is not None
    assert kernel.rows(threads, x, w, y[:, :f], b, _native.ACTIVATIONS[act], r)
    a64 = x.astype(np.float64) @ w.astype(np.float64)
    ref = reference(a64 if r is None else a64 + r, b, act)
    close(y[:, :f], ref, c)
    assert (y[:, f:] == 7.0).all(), "wrote past the last column"


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 3), h=st.integers(1, 9), w_=st.integers(1, 9),
       s=st.tuples(st.integers(1, 3), st.integers(1, 3)), c=st.integers(1, 300),
       f=st.integers(1, 70), bias=st.booleans(), act=st.sampled_from(ACTS),
       threads=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_rows_gather_a_strided_nhwc_view(n, h, w_, s, c, f, bias, act, threads, seed):
    # a stride-s conv's input: every s-th pixel of an image whose channels are a slice
    rng = np.random.default_rng(seed)
    x = data(rng, n, h, w_, c + 3)[:, :: s[0], :: s[1], :c]  # (N, Ho, Wo, C) view
    w = data(rng, c, f)
    b = data(rng, f) if bias else None
    y = np.full((x.shape[0] * x.shape[1] * x.shape[2], f), 7.0, np.float32)
    kernel = _native._kernel
    assert kernel is not None
    assert kernel.rows(threads, x, w, y, b, _native.ACTIVATIONS[act])
    ref = reference(x.reshape(-1, c).astype(np.float64) @ w.astype(np.float64), b, act)
    close(y, ref, c)


@settings(max_examples=80, deadline=None)
@given(n=st.integers(1, 4), c=st.integers(1, 700),
       # images narrower than a panel, of a few panels (shared), and of 8+ panels (cut)
       p=st.one_of(st.integers(1, 150), st.integers(380, 560)),
       f=st.one_of(st.integers(1, 40), st.integers(120, 150)), bias=st.booleans(),
       act=st.sampled_from(ACTS), threads=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_cols_match_float64(n, c, p, f, bias, act, threads, seed):
    rng = np.random.default_rng(seed)
    x = data(rng, n, c, p + 2)[:, :, :p]  # each channel's pixels a strided run
    w = data(rng, f, c)
    y = np.full((n, f, p + 1), 7.0, np.float32)
    b = data(rng, f) if bias else None
    kernel = _native._kernel
    assert kernel is not None
    assert kernel.cols(threads, w, x, y[:, :, :p], b, _native.ACTIVATIONS[act])
    ref = reference(np.matmul(w.astype(np.float64), x.astype(np.float64)),
                    None if b is None else b[:, None], act)
    close(y[:, :, :p], ref, c)
    assert (y[:, :, p:] == 7.0).all(), "wrote past the last pixel"


def count_calls(monkeypatch) -> list[str]:
    """Record each call that the compiled kernels computed."""
    calls: list[str] = []
    real = _native._kernel

    class Counting:
        PARALLEL_MIN_MACS = real.PARALLEL_MIN_MACS

        def __getattr__(self, name):  # share_blas, openmp, ...: the real ones
            return getattr(real, name)

        def rows(self, *args):
            took = real.rows(*args)
            if took:
                calls.append("rows")
            return took

        def cols(self, *args):
            took = real.cols(*args)
            if took:
                calls.append("cols")
            return took

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


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_strided_convs_run_on_the_kernels(monkeypatch, layout):
    # channels-last: the kernels gather the strided pixels; channels-first: after the gather
    calls = count_calls(monkeypatch)
    rng = np.random.default_rng(6)
    shape = (2, 15, 14, 40) if layout == "NHWC" else (2, 40, 15, 14)
    x, b = data(rng, *shape), data(rng, 24)
    w = data(rng, 1, 1, 40, 24) if layout == "NHWC" else data(rng, 24, 40, 1, 1)
    y = pw.conv1x1(x, w, b, layout=layout, stride=(2, 3), activation="relu")
    assert calls == ["rows" if layout == "NHWC" else "cols"]
    monkeypatch.setattr(_native, "_kernel", None)
    expected = pw.conv1x1(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64),
                          layout=layout, stride=(2, 3), activation="relu")
    close(y, expected, 40)


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
    # byte-swapped input is put in native order once at the boundary (the same values), and
    # then the kernels address it
    assert calls == ["rows"] if case == "byteswapped" else (calls == [] or case == "padding")
    monkeypatch.setattr(_native, "_kernel", None)
    np.testing.assert_allclose(y, pw.conv1x1(x, w, b, **kw), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize(("m", "c", "f"), [(101, 1024, 77), (37, 2048, 200), (20, 1024, 530)])
def test_rows_4_kib_apart_and_fewer_rows_than_columns_match(m, c, f, threads):
    # X's rows a multiple of 4 KiB apart (AVX2 copies each slab to rows padded apart, after
    # its first panel), K over several blocks, and (f > m) jobs the threads share by columns
    rng = np.random.default_rng(m)
    x, w, b = data(rng, m, c), data(rng, c, f), data(rng, f)
    r = data(rng, m, f)
    y = np.full((m, f + 5), 7.0, np.float32)
    kernel = _native._kernel
    assert kernel is not None
    assert kernel.rows(threads, x, w, y[:, :f], b, 2, r)
    close(y[:, :f], reference(x.astype(np.float64) @ w.astype(np.float64) + r, b, "relu6"), c)
    assert (y[:, f:] == 7.0).all(), "wrote past the last column"
    wt = np.ascontiguousarray(w.T).T  # column-major, torch's (F, C) weight: packed by columns
    assert kernel.rows(threads, x, wt, y[:, :f], None, 0)
    close(y[:, :f], x.astype(np.float64) @ w.astype(np.float64), c)


@pytest.mark.parametrize("threads", [2, 3, 5])
@pytest.mark.parametrize("driver", ["rows", "cols"])
def test_work_shared_among_threads_matches(driver, threads):
    # large enough for the pool (2^20 multiply-adds), sizes that no thread count divides
    rng = np.random.default_rng(threads)
    kernel = _native._kernel
    assert kernel is not None
    if driver == "rows":
        x, w, b = data(rng, 1003, 301), data(rng, 301, 77), data(rng, 77)
        y = np.empty((1003, 77), np.float32)
        assert kernel.rows(threads, x, w, y, b, 1)
        ref = reference(x.astype(np.float64) @ w.astype(np.float64), b, "relu")
    else:
        f = 77 if threads != 3 else 131  # both tile heights of the cols driver
        x, w, b = data(rng, 5, 301, 141), data(rng, f, 301), data(rng, f)
        y = np.empty((5, f, 141), np.float32)
        assert kernel.cols(threads, w, x, y, b, 1)
        ref = reference(np.matmul(w.astype(np.float64), x.astype(np.float64)), b[:, None],
                        "relu")
    close(y, ref, 301)


def operands(driver: str):
    rng = np.random.default_rng(5)
    if driver == "rows":
        return [data(rng, 40, 30), data(rng, 30, 20), np.zeros((40, 20), np.float32)]
    return [data(rng, 20, 30), data(rng, 2, 30, 40), np.zeros((2, 20, 40), np.float32)]


def misaligned(a: np.ndarray) -> np.ndarray:
    raw = np.zeros(a.nbytes + 1, np.uint8)
    out = np.ndarray(a.shape, np.float32, raw.data, offset=1)  # one byte off a float
    assert out.ctypes.data % 4 != 0
    out[...] = a
    return out


@pytest.mark.parametrize("driver", ["rows", "cols"])
@pytest.mark.parametrize("change", ["float64", "byteswapped", "misaligned", "reversed",
                                    "strided last axis", "shape mismatch", "zero size",
                                    "read-only output", "not an array"])
def test_the_kernels_decline_what_they_cannot_address(driver, change):
    # They return False and leave the output untouched, whichever operand is odd.
    kernel = _native._kernel
    assert kernel is not None
    for i in range(3):
        ops = operands(driver)
        a = ops[i]
        if change == "float64":
            ops[i] = a.astype(np.float64)
        elif change == "byteswapped":
            ops[i] = a.astype(">f4")
        elif change == "misaligned":
            ops[i] = misaligned(a)
        elif change == "reversed":
            ops[i] = a[::-1]
        elif change == "strided last axis":
            ops[i] = np.repeat(a, 2, axis=-1)[..., ::2]
        elif change == "shape mismatch":
            ops[i] = a[..., :-1] if i < 2 else a[:-1]
        elif change == "zero size":
            ops[i] = a[:0]
        elif change == "read-only output":
            if i != 2:
                continue
            a.flags.writeable = False
        else:
            ops[i] = a.tolist()
        before = ops[2].copy() if isinstance(ops[2], np.ndarray) else None
        assert getattr(kernel, driver)(2, *ops, None, 0) is False, (change, i)
        if before is not None and before.size:
            np.testing.assert_array_equal(ops[2], before)


def test_a_residual_that_does_not_fit_is_declined():
    kernel = _native._kernel
    assert kernel is not None
    rng = np.random.default_rng(5)
    x, w = data(rng, 20, 8), data(rng, 8, 12)
    y = np.zeros((20, 12), np.float32)
    for bad in (data(rng, 20, 11), data(rng, 19, 12), data(rng, 20, 12).astype(np.float64),
                y):  # wrong shape, wrong dtype, the output itself
        assert kernel.rows(1, x, w, y, None, 0, bad) is False
    assert not y.any()


def test_calls_on_the_host_openmp_team_match():
    """With torch loaded, the kernels can run on its libgomp team (openmp=True)."""
    pytest.importorskip("torch")
    if not _native.host_openmp():
        pytest.skip("no libgomp loaded")
    kernel = _native._kernel
    assert kernel is not None
    rng = np.random.default_rng(6)
    x, w, b, r = data(rng, 3000, 96), data(rng, 96, 40), data(rng, 40), data(rng, 3000, 40)
    for threads in (1, 2, 3):
        y = np.zeros((3000, 40), np.float32)
        assert kernel.rows(threads, x, w, y, b, 1, r, True)
        close(y, reference(x.astype(np.float64) @ w.astype(np.float64) + r, b, "relu"), 96)
        y3 = np.zeros((2, 40, 1500), np.float32)
        x3 = np.ascontiguousarray(x.reshape(2, 1500, 96).transpose(0, 2, 1))  # (N, C, P)
        assert kernel.cols(threads, np.ascontiguousarray(w.T), x3, y3, b, 2, True)
        ref3 = reference(np.einsum("fc,ncp->nfp", w.T.astype(np.float64), x3), None, None)
        close(y3, reference(ref3 + b[:, None], None, "relu6"), 96)


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


def test_the_pool_works_in_a_forked_child():
    # The pool's threads do not survive fork(); the child must start its own, not hang.
    rng = np.random.default_rng(4)
    x, w = data(rng, 8, 32, 32, 64), data(rng, 64, 64)
    expected = pw.conv1x1(x, w)  # the parent's pool exists now

    def child():
        return bool(np.allclose(pw.conv1x1(x, w), expected, rtol=1e-4, atol=1e-3))

    assert answer_from_forked_child(child), "the forked child hung or computed a wrong result"


def test_with_no_instruction_set_selected_the_kernels_decline_everything(isa):
    assert KERNEL is not None
    x, w, y = operands("rows")
    try:
        assert KERNEL.select("none") and KERNEL.isa() is None
        assert KERNEL.rows(1, x, w, y, None, 0) is False
        assert not y.any()
    finally:
        KERNEL.select(isa)
    assert KERNEL.rows(1, x, w, y, None, 0) is True and y.any()


def _rss_mib() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * 4096 / 2**20


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm")
def test_threads_that_end_leave_no_work_buffers_behind():
    # Each calling thread keeps ~0.6 MiB of buffers here; they must go when the thread does.
    x, w = np.ones((1, 8, 8, 256), np.float32), np.ones((256, 512), np.float32)
    pw.conv1x1(x, w)
    before = _rss_mib()
    for _ in range(150):
        t = threading.Thread(target=pw.conv1x1, args=(x, w))
        t.start()
        t.join()
    assert _rss_mib() - before < 30  # 150 threads' buffers kept would be ~85 MiB
