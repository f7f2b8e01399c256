"""The lean path for small plain calls agrees with the full path, and steps aside otherwise."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pointwise as pw
from oracle import reference_conv
from pointwise.kernels import fastpath as _fastpath
from pointwise.layout import check_forward

RNG = np.random.default_rng(7)


def _full(x, w, b, **kw):
    """The full path: the same call with the stride as a pair, which the fast path declines."""
    p = check_forward(x, w, b, **kw)
    y = np.empty(p.out_shape, p.dtype)
    assert _fastpath.try_forward(x, w, b, kw.get("layout", "NHWC"), (1, 1), 0, 1,
                                 kw.get("activation"), y) is None
    return pw.conv1x1(x, w, b, out=y, stride=(1, 1), **kw)


CASES = [
    # layout, x shape, weight shape
    ("NHWC", (2, 3, 5, 4), (4, 6)),
    ("NHWC", (1, 3, 3, 2), (1, 1, 2, 1)),  # the tutorial's shapes, HWIO filter
    ("HWC", (3, 3, 2), (2, 1)),
    ("NCHW", (2, 4, 3, 5), (6, 4)),
    ("NCHW", (3, 4, 2, 2), (6, 4, 1, 1)),  # OIHW
    ("CHW", (4, 7, 1), (3, 4)),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("activation", [None, "relu", "relu6"])
@pytest.mark.parametrize(("layout", "xs", "ws"), CASES)
def test_fast_path_matches_full_path_and_reference(layout, xs, ws, activation, bias, dtype):
    x = RNG.standard_normal(xs).astype(dtype)
    w = RNG.standard_normal(ws).astype(dtype)
    b = RNG.standard_normal(ws[1] if layout in ("NHWC", "HWC") else ws[0]).astype(dtype) \
        if bias else None
    fast = _fastpath.try_forward(x, w, b, layout, 1, 0, 1, activation, None)
    assert fast is not None, "this plain small call should take the fast path"
    y = pw.conv1x1(x, w, b, layout=layout, activation=activation)
    full = _full(x, w, b, layout=layout, activation=activation)
    assert y.dtype == full.dtype == dtype and y.shape == full.shape
    assert y.flags.c_contiguous and not np.shares_memory(y, x)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(y, full, rtol=tol, atol=tol)
    ref = reference_conv(x, w, b, layout=layout, activation=activation)
    np.testing.assert_allclose(y, ref, rtol=tol, atol=tol)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"stride": 2}, {"stride": (1, 1)}, {"padding": 1}, {"padding": np.int64(0)},
        {"groups": 2}, {"activation": "silu"}, {"activation": "RELU"},
        {"activation": np.array(["relu"])}, {"layout": ["NHWC"]}, {"layout": "nhwc"},
        {"out": np.empty((1, 2, 2, 5), np.float32)},  # wrong shape: the full path says so
        {"out": np.empty((1, 2, 2, 4), np.float64)},
        {"out": np.empty((1, 2, 4, 2), np.float32).transpose(0, 1, 3, 2)},  # not C-contiguous
        {"out": [0.0] * 16},
    ],
)
def test_fast_path_declines_anything_but_plain_calls(kwargs):
    x = RNG.standard_normal((1, 2, 2, 4)).astype(np.float32)
    w = RNG.standard_normal((4, 4)).astype(np.float32)
    args = {"layout": "NHWC", "stride": 1, "padding": 0, "groups": 1, "activation": None,
            "out": None, **kwargs}
    assert _fastpath.try_forward(x, w, None, args["layout"], args["stride"], args["padding"],
                                 args["groups"], args["activation"], args["out"]) is None


@pytest.mark.parametrize(
    ("x", "w", "b"),
    [
        (np.ones((1, 2, 2, 3), np.float32), np.ones((3, 2), np.float64), None),  # dtypes differ
        (np.ones((1, 2, 2, 3), np.int64), np.ones((3, 2), np.int64), None),  # ints: exact path
        (np.ones((1, 2, 2, 3), np.float16), np.ones((3, 2), np.float16), None),  # half
        (np.ones((1, 2, 2, 3), ">f4"), np.ones((3, 2), ">f4"), None),  # byte-swapped
        (np.ones((1, 2, 2, 3), np.float32), np.ones((4, 2), np.float32), None),  # C mismatch
        (np.ones((1, 2, 2, 3), np.float32), np.ones((3, 2, 1, 1), np.float32), None),  # OIHW
        (np.ones((1, 2, 2, 3), np.float32), np.ones((3, 2), np.float32),
         np.ones(3, np.float32)),  # bias length
        (np.ones((1, 2, 2, 3), np.float32), np.ones((3, 2), np.float32), [1.0, 2.0]),  # list
        (np.ones((2, 2, 3), np.float32), np.ones((3, 2), np.float32), None),  # 3-D for NHWC
        (np.ones((0, 2, 2, 3), np.float32), np.ones((3, 2), np.float32), None),  # empty
        (np.ones((1, 2, 2, 0), np.float32), np.ones((0, 2), np.float32), None),  # C = 0
        (np.ones((1, 2, 2, 3), np.float32), np.ones((3, 0), np.float32), None),  # F = 0
        (np.ones((8, 64, 64, 64)), np.ones((64, 64)), None),  # large float64
        (np.ma.ones((1, 2, 2, 3), np.float32), np.ones((3, 2), np.float32), None),  # subclass
    ],
)
def test_fast_path_leaves_odd_or_large_calls_to_the_full_path(x, w, b):
    assert _fastpath.try_forward(x, w, b, "NHWC", 1, 0, 1, None, None) is None


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_large_float32_calls_take_the_fast_path_only_onto_the_kernels(monkeypatch, layout):
    # Their bias and ReLU are fused in the kernels; without them, the full path's blocks are.
    from pointwise.kernels import native as _native

    x = RNG.standard_normal((8, 64, 64, 64)).astype(np.float32)  # C = 64 in either layout
    w = RNG.standard_normal((64, 48) if layout == "NHWC" else (48, 64)).astype(np.float32)
    b = RNG.standard_normal(48).astype(np.float32)
    fast = _fastpath.try_forward(x, w, b, layout, 1, 0, 1, "relu", None)
    assert (fast is not None) == _native.ENABLED
    if fast is not None:
        np.testing.assert_allclose(fast, _full(x, w, b, layout=layout, activation="relu"),
                                   rtol=1e-4, atol=1e-4)
    monkeypatch.setattr(_native, "_kernel", None)  # as when they are not built
    assert _fastpath.try_forward(x, w, b, layout, 1, 0, 1, "relu", None) is None


def test_bad_calls_get_the_full_paths_errors():
    x = np.ones((1, 3, 3, 2), np.float32)
    with pytest.raises(ValueError, match=r"\(1, 1, 2, 1\)"):  # the tutorial's filter mistake
        pw.conv1x1(x, np.ones((1, 1, 1, 2), np.float32))
    with pytest.raises(TypeError, match="float32"):
        pw.conv1x1(x, np.ones((2, 1), np.float64))


def test_fast_path_keeps_ieee_results_without_warnings():
    x = np.array([[[[np.inf, 1.0], [np.nan, 0.0]]]], np.float32)  # (1, 1, 2, 2)
    w = np.array([[0.0, 1.0], [1.0, -1.0]], np.float32)  # (2, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = pw.conv1x1(x, w, activation="relu")
    full = _full(x, w, None, activation="relu")
    np.testing.assert_array_equal(y, full)  # inf·0 = NaN and NaN stays NaN through relu
    assert np.isnan(y[0, 0, 0, 0]) and np.isnan(y[0, 0, 1]).all()


def test_fast_path_never_writes_its_inputs():
    x = RNG.standard_normal((1, 3, 3, 2)).astype(np.float32)
    w = RNG.standard_normal((2, 3)).astype(np.float32)
    b = RNG.standard_normal(3).astype(np.float32)
    for a in (x, w, b):
        a.flags.writeable = False
    before = (x.copy(), w.copy(), b.copy())
    pw.conv1x1(x, w, b, activation="relu")
    for a, a0 in zip((x, w, b), before, strict=True):
        np.testing.assert_array_equal(a, a0)


def test_fast_path_writes_an_exact_out_and_declines_an_overlapping_one():
    x = RNG.standard_normal((1, 3, 3, 4)).astype(np.float32)
    w = RNG.standard_normal((4, 4)).astype(np.float32)
    b = RNG.standard_normal(4).astype(np.float32)
    out = np.empty((1, 3, 3, 4), np.float32)
    y = _fastpath.try_forward(x, w, b, "NHWC", 1, 0, 1, "relu", out)
    assert y is out
    np.testing.assert_allclose(out, reference_conv(x, w, b, activation="relu"), rtol=1e-5,
                               atol=1e-6)
    assert _fastpath.try_forward(x, w, b, "NHWC", 1, 0, 1, None, x) is None  # out is x
    ro = np.empty_like(out)
    ro.flags.writeable = False
    assert _fastpath.try_forward(x, w, b, "NHWC", 1, 0, 1, None, ro) is None
    with pytest.raises(ValueError, match="overlap"):  # the full path's own error
        pw.conv1x1(x, w, b, out=x)


# ------------------------------------------------ the fast path never changes what a call does
OUTS = ["none", "exact", "offset", "fortran", "strided", "read-only", "overlaps x",
        "other dtype", "other shape"]


def _placed(a, offset, rng_bytes=None):
    """A copy of ``a`` at ``offset`` bytes into a fresh buffer (misaligned unless offset is
    a multiple of the itemsize); ``rng_bytes`` fills the buffer first."""
    buf = np.zeros(a.nbytes + offset + 8, np.uint8) if rng_bytes is None else rng_bytes
    view = buf[offset:offset + a.nbytes].view(a.dtype).reshape(a.shape)
    view[...] = a
    return view


def _operands(spec):
    """x, w, b and out (or None) from ``spec``, afresh each call, so the fast and the full
    path each get their own copies laid out the same way."""
    layout, dt, xs, ws, bias, x_offset, x_order, out_kind, out_offset, seed = spec
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(xs).astype(dt)
    if x_order == "transposed":  # a non-contiguous view holding the same values
        x = np.ascontiguousarray(np.swapaxes(x, -1, -2)).swapaxes(-1, -2)
    elif x_offset:
        x = _placed(x, x_offset)
    w = rng.standard_normal(ws).astype(dt)
    b = rng.standard_normal(ws[-1] if layout in ("NHWC", "HWC") else ws[0]).astype(dt) \
        if bias else None
    shape = pw.conv1x1(x.copy(), w, b, layout=layout, stride=(1, 1)).shape
    fill = np.full(shape, 7.0, dt)  # what out= holds before the call
    out = {
        "none": lambda: None,
        "exact": lambda: fill.copy(),
        "offset": lambda: _placed(fill, out_offset),
        "fortran": lambda: np.asfortranarray(fill),
        "strided": lambda: np.repeat(fill, 2, axis=-1)[..., ::2],
        "read-only": lambda: np.require(fill.copy(), requirements="C"),
        "overlaps x": lambda: x if x.shape == shape and x.dtype == dt else fill.copy(),
        "other dtype": lambda: fill.astype(np.float64 if dt == np.float32 else np.float32),
        "other shape": lambda: np.full((*shape[:-1], shape[-1] + 1), 7.0, dt),
    }[out_kind]()
    if out_kind == "read-only":
        out.flags.writeable = False
    return x, w, b, out


@st.composite
def plain_specs(draw):
    layout = draw(st.sampled_from(["NHWC", "HWC", "NCHW", "CHW"]))
    dt = draw(st.sampled_from([np.float32, np.float64]))
    n, h, w_, c, f = (draw(st.integers(1, 3)), draw(st.integers(1, 4)),
                      draw(st.integers(1, 4)), draw(st.integers(1, 6)), draw(st.integers(1, 6)))
    xs = {"NHWC": (n, h, w_, c), "HWC": (h, w_, c), "NCHW": (n, c, h, w_), "CHW": (c, h, w_)}
    last = layout in ("NHWC", "HWC")
    ws = draw(st.sampled_from([(c, f), (1, 1, c, f)] if last else [(f, c), (f, c, 1, 1)]))
    return (layout, dt, xs[layout], ws, draw(st.booleans()),
            draw(st.sampled_from([0, 0, 1, 2, 4])), draw(st.sampled_from(["c", "transposed"])),
            draw(st.sampled_from(OUTS)), draw(st.integers(1, 7)), draw(st.integers(0, 9)))


def _outcome(spec, activation, full):
    x, w, b, out = _operands(spec)
    kw = {"layout": spec[0], "activation": activation, "out": out,
          "stride": (1, 1) if full else 1}  # a pair: the fast path steps aside
    try:
        y = pw.conv1x1(x, w, b, **kw)
    except (ValueError, TypeError) as e:
        return type(e), str(e), None, out
    assert out is None or y is out
    return None, None, np.array(y), out


@settings(max_examples=400, deadline=None)
@given(plain_specs(), st.sampled_from([None, "relu", "relu6"]))
def test_the_fast_path_does_what_the_full_path_does(spec, activation):
    """Over layouts, dtypes, weight formats, misaligned and non-contiguous x, and out= of
    every kind (exact, misaligned by 1..7 bytes, Fortran-ordered, strided, read-only,
    overlapping x, wrong dtype or shape): the same error, or the same numbers."""
    fast = _outcome(spec, activation, full=False)
    full = _outcome(spec, activation, full=True)
    assert fast[:2] == full[:2]  # the same exception type and message, or none
    if fast[2] is not None:
        tol = 1e-5 if spec[1] == np.float32 else 1e-12
        np.testing.assert_allclose(fast[2], full[2], rtol=tol, atol=tol)
        if fast[3] is not None:
            np.testing.assert_allclose(fast[3], full[3], rtol=tol, atol=tol)


def test_a_misaligned_out_takes_the_full_path_as_reported():
    """The report's case: a small NHWC float32/float64 call with out= 1, 2 or 4 bytes off
    its alignment raised NumPy's "output array is not acceptable"."""
    for dt, offsets in ((np.float32, (1, 2)), (np.float64, (1, 2, 4))):
        x, w = np.ones((1, 3, 3, 2), dt), np.ones((2, 4), dt)
        for offset in offsets:
            out = _placed(np.zeros((1, 3, 3, 4), dt), offset)
            assert not out.flags.aligned
            assert pw.conv1x1(x, w, out=out) is out
            np.testing.assert_array_equal(out, np.full((1, 3, 3, 4), 2.0))
