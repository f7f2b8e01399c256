"""The compiled taps kernels (csrc/taps.c) against a float64 reference, at their edges.

The driver covers a part's output pixels with tiles of MR and MR − 1 rows (MR = 6, 9 or 12
by the filter count; 12 and 6 with AVX2), cuts the filters into panels of 16–64, groups the
taps so that a group's weights fit 512 KiB (and splits the channels when one tap does not),
merges a kernel row's taps into one run below 32 channels, and splits the work by pixels or
by panels. The sizes below straddle each of those edges. Every test runs once per
instruction set this CPU has.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pointwise as pw
from pointwise.kernels import native as _native

try:
    from pointwise.kernels import _kernel as KERNEL
except ImportError:  # not built: no C compiler when the package was installed
    KERNEL = None

pytestmark = [pytest.mark.skipif(KERNEL is None, reason="compiled kernels not built"),
              pytest.mark.usefixtures("isa")]  # every test on each instruction set
ACTS = [None, "relu", "relu6"]
#: memory orders of the (kh, kw, C, F) weight the kernels pack from: HWIO itself, torch's
#: OIHW and channels_last (OHWI) storage read through that view, and every other filter of
#: a wider HWIO array (no unit stride for channels or filters)
ORDERS = ["HWIO", "OIHW", "OHWI", "strided"]


def weight_in(order, wt):
    """``wt`` (kh, kw, C, F), the same values as a view of storage in ``order``."""
    if order == "OIHW":
        return np.ascontiguousarray(wt.transpose(3, 2, 0, 1)).transpose(2, 3, 1, 0)
    if order == "OHWI":
        return np.ascontiguousarray(wt.transpose(3, 0, 1, 2)).transpose(1, 2, 3, 0)
    if order == "strided":
        wide = np.zeros((*wt.shape[:3], 2 * wt.shape[3]), np.float32)  # (kh, kw, C, 2F)
        wide[..., ::2] = wt
        return wide[..., ::2]  # (kh, kw, C, F), filters 2 floats apart
    return wt



def reference(x, w, b, r, act, stride, pad, dil, out_hw):
    """float64, from the definition: a sum over taps of shifted 1×1 products, each tap's
    pixels a strided slice of the zero-padded input."""
    n, h, wd, c = x.shape
    kh, kw, _, f = w.shape
    ho, wo = out_hw
    xp = np.zeros((n, h + 2 * pad[0] + stride[0] * ho + kh * dil[0],
                   wd + 2 * pad[1] + stride[1] * wo + kw * dil[1], c))  # room for every tap
    xp[:, pad[0]:pad[0] + h, pad[1]:pad[1] + wd] = x
    y = np.zeros((n, ho, wo, f))
    for i in range(kh):
        for j in range(kw):
            iy, ix = i * dil[0], j * dil[1]
            xs = xp[:, iy:iy + stride[0] * ho:stride[0], ix:ix + stride[1] * wo:stride[1]]
            y += xs @ w[i, j].astype(np.float64)  # (N, Ho, Wo, C) @ (C, F)
    y = y.reshape(n * ho * wo, f)
    y = y + (0 if b is None else b) + (0 if r is None else r)
    if act is not None:
        y = np.maximum(y, 0)
    return np.minimum(y, 6) if act == "relu6" else y


def run(rng, n, h, w, c, f, k, stride=(1, 1), pad=(0, 0), dil=(1, 1), act=None, bias=True,
        residual=False, packed=False, threads=2, channels_view=False, order="HWIO"):
    x = rng.standard_normal((n, h, w, c + 3 * channels_view)).astype(np.float32)[..., :c]
    wt = (rng.standard_normal((*k, c, f)) / np.sqrt(k[0] * k[1] * c)).astype(np.float32)
    ho = (h + 2 * pad[0] - dil[0] * (k[0] - 1) - 1) // stride[0] + 1
    wo = (w + 2 * pad[1] - dil[1] * (k[1] - 1) - 1) // stride[1] + 1
    b = rng.standard_normal(f).astype(np.float32) if bias else None
    r = rng.standard_normal((n * ho * wo, f)).astype(np.float32) if residual else None
    y = np.full((n * ho * wo, f + 1), 7.0, np.float32)  # one column past the output
    geometry = (*k, *stride, *pad, *dil, ho, wo)
    wk = _native.pack_taps(wt) if packed else weight_in(order, wt)
    assert KERNEL.taps(threads, x, wk, y[:, :f], b, _native.ACTIVATIONS[act], r, geometry,
                       packed)
    np.testing.assert_allclose(y[:, :f], reference(x, wt, b, r, act, stride, pad, dil, (ho, wo)),
                               rtol=2e-5, atol=2e-5)
    assert (y[:, f] == 7.0).all(), "wrote past the last filter"


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 3), h=st.integers(1, 9), w=st.integers(1, 9),
       c=st.sampled_from([1, 3, 16, 31, 32, 45]), f=st.sampled_from([1, 15, 17, 48, 64, 65, 130]),
       k=st.tuples(st.integers(1, 5), st.integers(1, 5)),
       stride=st.tuples(st.integers(1, 3), st.integers(1, 3)),
       dil=st.tuples(st.integers(1, 2), st.integers(1, 2)),
       pad=st.tuples(st.integers(0, 3), st.integers(0, 3)), act=st.sampled_from(ACTS),
       bias=st.booleans(), residual=st.booleans(), packed=st.booleans(),
       threads=st.integers(1, 3), view=st.booleans(), order=st.sampled_from(ORDERS),
       seed=st.integers(0, 2**16))
def test_taps_match_float64(n, h, w, c, f, k, stride, dil, pad, act, bias, residual, packed,
                            threads, view, order, seed):
    if (h + 2 * pad[0] - dil[0] * (k[0] - 1) < 1) or (w + 2 * pad[1] - dil[1] * (k[1] - 1) < 1):
        return  # the kernel does not fit: check_conv2d refuses such calls
    run(np.random.default_rng(seed), n, h, w, c, f, k, stride, pad, dil, act, bias, residual,
        packed, threads, view, order)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 3), h=st.integers(1, 9), w=st.sampled_from([7, 15, 31, 113, 225]),
       c=st.integers(1, 4), f=st.sampled_from([8, 32, 64]), k=st.sampled_from([1, 3, 5, 7]),
       stride=st.sampled_from([1, 2]), pad=st.integers(0, 3), dy=st.integers(1, 2),
       act=st.sampled_from(ACTS), bias=st.booleans(), residual=st.booleans(),
       threads=st.integers(1, 3), order=st.sampled_from(ORDERS), seed=st.integers(0, 2**16))
def test_stems_rows_of_pixels_match_float64(n, h, w, c, f, k, stride, pad, dy, act, bias,
                                            residual, threads, order, seed):
    # the stems' case (few channels, runs of a kernel row): images wide enough for whole
    # tiles inside an output row, whose pointers are one run apart, and tiles at the edges
    if h + 2 * pad - dy * (k - 1) < 1 or w + 2 * pad - (k - 1) < 1:
        return
    run(np.random.default_rng(seed), n, h, w, c, f, (k, k), (stride, stride), (pad, pad),
        (dy, 1), act, bias, residual, threads=threads, order=order)


@pytest.mark.parametrize("n, h, f", [
    (1, 7, 512),   # 49 pixels: 4 tiles of 6 and 5 of 5; 8 panels, split by panels
    (1, 2, 64),    # 4 pixels: one cut tile
    (2, 5, 40),    # 50 pixels of 9-row tiles (3 vectors)
    (3, 3, 20),    # 12-row tiles, a 4-wide last vector
    (1, 1, 8),     # one pixel, one short vector
])
def test_tile_rows_and_panels(n, h, f):
    run(np.random.default_rng(1), n, h, h, 24, f, (3, 3), pad=(1, 1), act="relu",
        residual=True)


def test_taps_grouped_and_channels_blocked():
    # 512 channels: 3×3 taps in groups of 3 (a panel's 9 taps exceed 512 KiB)
    run(np.random.default_rng(2), 1, 4, 4, 512, 64, (3, 3), pad=(1, 1), packed=True)
    # 2100 channels: one tap's panel exceeds 512 KiB, so the channels are split too
    run(np.random.default_rng(3), 1, 3, 3, 2100, 70, (2, 2), pad=(1, 0))


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("n, h, c, f, k, pad, stride", [
    (2, 5, 16, 40, (3, 3), (1, 1), (1, 1)),    # small weights: packed at once, in slabs
    (1, 4, 512, 64, (3, 3), (1, 1), (1, 1)),   # packed K block by K block: groups of 3 taps
    (1, 3, 2100, 70, (2, 2), (1, 0), (1, 1)),  # ... and blocks of channels
    (1, 7, 128, 130, (3, 3), (1, 1), (1, 1)),  # split by panels, the last 2 filters wide
    (1, 3, 600, 520, (1, 1), (0, 0), (1, 1)),  # a 1x1 weight of 1.2 MB
    (2, 20, 3, 64, (7, 7), (3, 3), (2, 2)),    # the stem's runs of a kernel row
])
def test_each_thread_packs_its_panels_from_any_weight_order(n, h, c, f, k, pad, stride, order):
    run(np.random.default_rng(5), n, h, h + 1, c, f, k, stride=stride, pad=pad, act="relu",
        residual=True, order=order)
    run(np.random.default_rng(6), n, h, h + 1, c, f, k, stride=stride, pad=pad, threads=1,
        order=order)


def test_the_stem_merges_runs_and_pads_them_at_the_edges():
    # ResNet's stem: 3 channels, 7×7/2, padding 3: runs of 21 floats, cut at both edges
    run(np.random.default_rng(4), 2, 20, 23, 3, 64, (7, 7), stride=(2, 2), pad=(3, 3),
        act="relu")


def test_conv2d_float32_runs_on_the_taps_kernels(monkeypatch):
    if not _native.ENABLED:
        pytest.skip("compiled kernels not built or not used on this CPU")
    calls = []
    real = _native.taps
    monkeypatch.setattr(_native, "taps", lambda *a, **k: calls.append(1) or real(*a, **k))
    x = np.ones((1, 6, 6, 4), np.float32)
    pw.conv2d(x, np.ones((3, 3, 4, 8), np.float32), padding=1)
    assert calls == [1]
    pw.conv2d(x, np.ones((3, 3, 2, 8), np.float32), padding=1, groups=2)  # NumPy path
    assert calls == [1]


@pytest.mark.parametrize("change", ["float64 x", "zero size", "overlapping y", "wrong M",
                                    "packed size", "strided channels"])
def test_the_kernels_decline_what_they_cannot_address(change):
    x = np.ones((1, 5, 5, 4), np.float32)
    w = np.ones((3, 3, 4, 8), np.float32)
    y = np.zeros((25, 8), np.float32)
    geometry, packed = (3, 3, 1, 1, 1, 1, 1, 1, 5, 5), False
    if change == "float64 x":
        x = x.astype(np.float64)
    elif change == "zero size":
        x, y = x[:0], y[:0]
    elif change == "overlapping y":
        y = x.reshape(100)[:96].reshape(12, 8)
        geometry = (3, 3, 1, 1, 1, 1, 1, 1, 3, 4)
    elif change == "wrong M":
        y = y[:24]
    elif change == "packed size":
        w, packed = np.ones(100, np.float32), True
    elif change == "strided channels":
        x = np.ones((1, 5, 5, 8), np.float32)[..., ::2]
    before = y.copy()
    assert not KERNEL.taps(2, x, w, y, None, 0, None, geometry, packed)
    np.testing.assert_array_equal(y, before)


def test_bad_geometry_is_an_error():
    x, w, y = np.ones((1, 5, 5, 4), np.float32), np.ones((3, 3, 4, 8), np.float32), None
    with pytest.raises(ValueError, match="geometry"):
        KERNEL.taps(1, x, w, y, None, 0, None, (3, 3, 0, 1, 1, 1, 1, 1, 5, 5))
