"""The forward's temporary memory stays within its blocks, measured with tracemalloc.

NumPy reports its array buffers to tracemalloc, so the peak of one call above what was
allocated before it counts every temporary the call made. With ``out=``, the plain conv
makes none; bias and ReLU may add their per-block constants (a bias tile and a zeros tile,
each at most one block of output; they are kept per thread, so a repeated call reuses them);
a stride > 1 adds the one gather of the strided input.

Every test runs twice: on the NumPy path, and on the compiled float32 kernels where they are
built. The kernels' own work buffers are C allocations that tracemalloc does not see (at most
~1.4 MiB per thread, kept between calls), so there the figure is what NumPy allocated: none
of the above but the channels-first stride gather.
"""

from __future__ import annotations

import numpy as np
import pytest

import pointwise as pw
from pointwise.bench.harness import peak_bytes
from pointwise.kernels import gemm as _gemm
from pointwise.kernels import native as _native

RNG = np.random.default_rng(3)
pytestmark = pytest.mark.usefixtures("both_paths")


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
@pytest.mark.parametrize(("h", "c", "f", "stride"),
                         [(56, 64, 256, 1), (28, 512, 128, 1), (112, 32, 16, 1),
                          (56, 256, 512, 2)])
@pytest.mark.parametrize("fused", [False, True])
def test_forward_temporaries_are_bounded_by_one_block_and_the_gather(layout, h, c, f, stride,
                                                                     fused):
    n = 8
    ho = (h - 1) // stride + 1
    cl = layout == "NHWC"
    x = RNG.standard_normal((n, h, h, c) if cl else (n, c, h, h), dtype=np.float32)
    w = RNG.standard_normal((c, f) if cl else (f, c), dtype=np.float32)
    b = RNG.standard_normal(f, dtype=np.float32) if fused else None
    y = np.empty((n, ho, ho, f) if cl else (n, f, ho, ho), np.float32)
    act = "relu" if fused else None
    extra = peak_bytes(lambda: pw.conv1x1(x, w, b, layout=layout, stride=stride,
                                           activation=act, out=y))
    gather = n * ho * ho * c * 4 if stride > 1 else 0
    block = _gemm.BLOCK_BYTES * (1 if cl else 2)
    small = 64 << 10  # views, the task list and other Python bookkeeping
    bound = gather + (2 * block if fused else 0) + small
    assert extra <= bound, (extra, bound)
    assert extra < y.nbytes or stride > 1  # never a full-size temporary


def _check_epilogue(y: np.ndarray, plain: np.ndarray, b: np.ndarray) -> None:
    """``y`` is relu(plain + b): bit for bit on the kernels, which sum every row in one order
    whatever the call; to float32 rounding on NumPy's, whose BLAS may sum the rows of a block
    boundary in another order than one GEMM over all rows (OpenBLAS's Haswell kernels do). A
    stale bias would be off by the bias itself."""
    want = np.maximum(plain + b, 0)
    if _native._kernel is not None:  # both_paths turns it off for the NumPy run
        np.testing.assert_array_equal(y, want)
    else:
        np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)


def test_kept_epilogue_constants_follow_every_change_of_bias():
    """The bias tile is kept between calls; every new bias must refill it."""
    x = RNG.standard_normal((8, 28, 28, 64), dtype=np.float32)
    w = RNG.standard_normal((64, 96), dtype=np.float32)
    y = np.empty((8, 28, 28, 96), np.float32)
    biases = [RNG.standard_normal(96, dtype=np.float32) for _ in range(3)]
    biases += [np.zeros(96, np.float32), np.full(96, -0.0, np.float32)]
    plain = pw.conv1x1(x, w)
    for b in biases + biases[::-1]:
        pw.conv1x1(x, w, b, activation="relu", out=y)
        _check_epilogue(y, plain, b)


def test_kept_epilogue_constants_are_per_thread():
    from concurrent.futures import ThreadPoolExecutor

    x = RNG.standard_normal((8, 32, 32, 48), dtype=np.float32)
    w = RNG.standard_normal((48, 64), dtype=np.float32)
    plain = pw.conv1x1(x, w)
    biases = [RNG.standard_normal(64, dtype=np.float32) for _ in range(8)]

    def run(b):
        return [pw.conv1x1(x, w, b, activation="relu") for _ in range(5)]

    with ThreadPoolExecutor(4) as ex:
        for b, ys in zip(biases, ex.map(run, biases), strict=True):
            for y in ys:
                _check_epilogue(y, plain, b)


@pytest.mark.parametrize("n_cores", [2, 3, 4])
def test_fused_blocks_come_in_equal_numbers_per_core(monkeypatch, n_cores):
    """An odd block count left one core idle for part of each call (3 blocks against 2)."""
    monkeypatch.setattr(_gemm, "cores", lambda: n_cores)
    for total, c, f, units in [(6272, 192, 16, 1), (25088, 64, 256, 1), (392, 512, 2048, 1),
                               (49, 960, 320, 8), (3136, 24, 144, 8), (12544, 32, 16, 1),
                               (3136, 24, 144, 1)]:
        rows = _gemm._blocks(total, c, f, 4, _gemm.BLOCK_BYTES, units)
        count = -(-total // rows) * units
        assert count % n_cores == 0, (total, c, f, units, rows)
        assert rows * (c + f) * 4 <= _gemm.BLOCK_BYTES or rows <= _gemm.MIN_BLOCK_ROWS * 2
    assert _gemm._blocks(6272, 512, 128, 4, None) == -(-6272 // n_cores)  # one share per core
