"""The compiled mean and scatter of pixel vectors (csrc/moments.c), against float64 NumPy.

The kernel packs blocks of rows into panels of 8 channels and tiles the lower triangle 8
channels by 8·NP (NP = 1..3 on AVX-512), so the sizes below straddle those edges: C = 1, 3,
17, 128, 129 (a partial last panel, one tile narrower than three panels), odd row counts,
blocks and segments of a few rows (last blocks and segments short). Every path runs: the
portable C one on any x86-64, AVX2 and AVX-512 where the CPU has them.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pointwise.kernels import native as _native

try:
    from pointwise.kernels import _kernel as KERNEL
except ImportError:  # not built: no C compiler when the package was installed
    KERNEL = None

pytestmark = pytest.mark.skipif(KERNEL is None, reason="compiled kernels not built")

PATHS = {"portable": 0, "avx2": 1, "avx512": 2}


@pytest.fixture(params=list(PATHS))
def path(request):
    """Each micro-kernel this CPU runs (the portable one everywhere the module works)."""
    code = PATHS[request.param]
    probe = np.ones((2, 2), np.float32)
    if not KERNEL.moments(1, probe, np.empty(2), np.empty((2, 2)), 2, 2, code):
        pytest.skip(f"this CPU lacks {request.param}")
    return code


def reference(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and scatter of the (M, C) rows, in float64, about the exact mean."""
    d = np.asarray(x, np.float64)  # (M, C)
    mean = d.mean(axis=0)
    d = d - mean
    return mean, d.T @ d  # (C, M) @ (M, C)


def run(x, segment=1 << 20, block=512, path=-1, threads=2):
    c = x.shape[2 if x.ndim == 4 else 1]  # (M, C), (N, C, P) or (N, H, C, P)
    mean, scatter = np.full(c, np.nan), np.full((c, c), np.nan)
    assert KERNEL.moments(threads, x, mean, scatter, segment, block, path)
    return mean, scatter


def check(x, mean, scatter, rtol=1e-12):
    ref_mean, ref = reference(x)
    scale = max(np.abs(ref).max(), 1e-300)
    np.testing.assert_allclose(mean, ref_mean, rtol=rtol, atol=rtol * np.abs(ref_mean).max())
    np.testing.assert_allclose(scatter, ref, rtol=0, atol=rtol * scale)
    np.testing.assert_array_equal(scatter, scatter.T)  # mirrored, not recomputed


@pytest.mark.parametrize("c", [1, 3, 17, 128, 129])
@pytest.mark.parametrize("m", [1, 7, 333, 4099])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matches_float64_over_odd_sizes(path, c, m, dtype):
    rng = np.random.default_rng(c * 1000 + m)
    x = (rng.standard_normal((m, c)) * rng.uniform(0.1, 5, c) + 3.0).astype(dtype)
    for segment, block in ((1 << 20, 512), (101, 13), (5, 5)):
        check(x, *run(x, segment, block, path))


@pytest.mark.parametrize("c", [3, 17, 129])
def test_strided_and_channels_first_views(path, c):
    """Any non-negative strides: every other row and channel, and the (H·W, C) transposed
    view of a channels-first image (rows contiguous, channels H·W apart)."""
    rng = np.random.default_rng(c)
    base = rng.standard_normal((2 * 211, 2 * c)).astype(np.float32) - 2.0
    strided = base[::2, ::2]  # (211, C), strides (2·2C, 2) elements
    check(strided, *run(strided, 64, 16, path))
    image = rng.standard_normal((c, 15, 13)).astype(np.float32)  # (C, H, W)
    view = image.reshape(c, -1).T  # (H·W, C), a transposed view
    assert not view.flags.c_contiguous
    check(view, *run(view, 50, 9, path))
    check(view.astype(np.float64), *run(view.astype(np.float64), 50, 9, path))


@pytest.mark.parametrize("c", [1, 3, 17, 129])
@pytest.mark.parametrize("p", [1, 7, 37, 64])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_channels_first_images_in_one_call(path, c, p, dtype):
    """(N, C, P) images: their N·P pixels, blocks and segments straddling images; P = 7 and
    37 leave the rows past a multiple of 8 to the portable pack."""
    rng = np.random.default_rng(c * 100 + p)
    x = (rng.standard_normal((5, c, p)) * 2 - 1).astype(dtype)  # (N, C, P)
    rows = x.transpose(0, 2, 1).reshape(-1, c)  # (N·P, C), the reference's pixel vectors
    for segment, block in ((1 << 20, 512), (23, 10), (3, 2)):
        mean, scatter = run(x, segment, block, path)
        check(rows, mean, scatter)
    strided = (rng.standard_normal((4, 2 * c, 2 * p + 3))).astype(dtype)[:, ::2, 1:2 * p + 1:2]
    check(strided.transpose(0, 2, 1).reshape(-1, c), *run(strided, 19, 6, path))


@pytest.mark.parametrize("c", [1, 3, 17, 129])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_runs_of_a_channels_last_crop_in_one_call(path, c, dtype):
    """(N, H, C, W) views of a cropped (N, H, W, C) batch: its N·H·W pixels, with blocks
    and segments straddling rows of pixels and images; channels 1 apart, then 2."""
    rng = np.random.default_rng(c + 7)
    full = rng.standard_normal((3, 7, 13, 2 * c + 2)).astype(dtype)  # (N, H', W', C')
    for crop in (full[:, 1:6, 2:11:2, 1:c + 1], full[:, :5, 3:12, 1:2 * c + 1:2]):
        x = crop.transpose(0, 1, 3, 2)  # (N, H, C, W), a view
        rows = crop.reshape(-1, c)  # (N·H·W, C), a copy: the reference's pixel vectors
        for segment, block in ((1 << 20, 512), (23, 10), (3, 2)):
            check(rows, *run(x, segment, block, path))


def test_paths_agree_and_threads_do_not_change_the_answer_beyond_rounding(path):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((10_001, 40)).astype(np.float32)
    one = run(x, 1000, 64, path, threads=1)
    for threads in (2, 3):
        many = run(x, 1000, 64, path, threads=threads)
        np.testing.assert_allclose(many[1], one[1], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(run(x, 1000, 64, 0)[1], one[1], rtol=1e-12, atol=1e-9)


def test_far_from_zero_rows_keep_their_digits(path):
    """A mean 10⁶ times the spread that drifts along the rows: each segment's shift keeps
    the scatter's digits (Σxxᵀ − nμμᵀ would keep about 4 of them)."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3000, 9)) + 1e6 + np.linspace(0, 50, 3000)[:, None]
    mean, scatter = run(x, 200, 32, path)
    check(x, mean, scatter, rtol=1e-10)


def test_nan_and_inf_propagate(path):
    x = np.ones((100, 5), np.float32)
    x[57, 2] = np.nan
    mean, scatter = run(x, 16, 8, path)
    assert np.isnan(mean[2]) and np.isnan(scatter[2, 2])
    x[57, 2] = np.inf
    with np.errstate(invalid="ignore"):
        mean, _ = run(x, 16, 8, path)
    assert not np.isfinite(mean[2])


def test_declines_what_it_does_not_address():
    """False, having written nothing, for integer or half data, negative strides, mismatched
    outputs and an output that overlaps the input; bad sizes are a ValueError."""
    x = np.ones((10, 4), np.float32)
    mean, scatter = np.zeros(4), np.zeros((4, 4))
    for bad in (x.astype(np.int32), x.astype(np.float16), x[::-1]):
        assert not KERNEL.moments(2, bad, mean, scatter, 8, 8)
    assert not KERNEL.moments(2, x, np.zeros(3), scatter, 8, 8)
    assert not KERNEL.moments(2, x, mean, np.zeros((4, 5)), 8, 8)
    assert not KERNEL.moments(2, x, mean.astype(np.float32), scatter, 8, 8)
    buf = np.zeros((4, 4))
    assert not KERNEL.moments(2, buf, mean, buf, 8, 8)
    assert (mean == 0).all() and (scatter == 0).all()
    for segment, block, path in ((0, 8, -1), (8, 0, -1), (8, 8, 3)):
        with pytest.raises(ValueError, match="expected segment >= 1"):
            KERNEL.moments(2, x, mean, scatter, segment, block, path)


def test_native_wrapper_declines_without_the_kernels(monkeypatch):
    x = np.ones((10, 4), np.float32)
    monkeypatch.setattr(_native, "_kernel", None)
    assert not _native.moments(x, np.zeros(4), np.zeros((4, 4)), 8, 8)


@settings(max_examples=60, deadline=None)
@given(m=st.integers(1, 300), c=st.integers(1, 40), segment=st.integers(1, 120),
       block=st.integers(1, 50), threads=st.integers(1, 3), f64=st.booleans(),
       step=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_property_any_shape_matches_float64(m, c, segment, block, threads, f64, step, seed):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((m * step, c + 2)) * 2 + 1).astype(np.float64 if f64 else np.float32)
    view = x[::step, 1:c + 1]  # (M, C), rows step·(C + 2) and channels 1 element apart
    check(view, *run(view, segment, block, -1, threads))
