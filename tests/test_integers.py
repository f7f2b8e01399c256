"""Integers compute exactly in every integer dtype, or the call is refused: never a wrapped
result. The reference sums Python ints, which never overflow."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import pointwise as pw
from oracle import reference_conv, weight_cf
from pointwise.limits import INT64_MAX

INTS = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64]


def _bound(*arrays):
    return [max((abs(int(v)) for v in a.ravel()), default=0) for a in arrays]


def _values(dtype, shape):
    info = np.iinfo(dtype)
    edges = st.sampled_from([info.min, info.max, info.max - 1, 0, 1, -1 if info.min else 2,
                             2**31, 2**32 + 1, 2**62, 2**63 - 1, 2**63 + 5])
    values = st.one_of(st.integers(info.min, info.max),
                       edges.filter(lambda v: info.min <= v <= info.max),
                       st.integers(-3, 3).filter(lambda v: info.min <= v <= info.max))
    return hnp.arrays(dtype, shape, elements=values)


@st.composite
def int_calls(draw):
    layout = draw(st.sampled_from(["NHWC", "NCHW", "HWC", "CHW"]))
    groups = draw(st.integers(1, 2))
    c, f = groups * draw(st.integers(0, 3)), groups * draw(st.integers(1, 3))
    h, w = draw(st.integers(0, 3)), draw(st.integers(1, 3))
    n = draw(st.integers(1, 2))
    shape = {"NHWC": (n, h, w, c), "NCHW": (n, c, h, w), "HWC": (h, w, c), "CHW": (c, h, w)}
    wshape = (c // groups, f) if layout in ("NHWC", "HWC") else (f, c // groups)
    x = draw(_values(draw(st.sampled_from(INTS)), shape[layout]))
    wt = draw(_values(draw(st.sampled_from(INTS)), wshape))
    b = draw(st.none() | _values(draw(st.sampled_from(INTS)), (f,)))
    opts = {"layout": layout, "groups": groups, "stride": draw(st.integers(1, 2)),
            "padding": draw(st.integers(0, 1)),
            "activation": draw(st.sampled_from([None, "relu", "relu6"]))}
    return x, wt, b, opts


@settings(max_examples=300, deadline=None)
@given(int_calls())
def test_every_integer_dtype_is_exact_or_refused(call):
    x, w, b, opts = call
    want = reference_conv(x, w, b, python_ints=True, **opts)
    mx, mw, mb = _bound(x, w, np.zeros(0) if b is None else b)
    cg = weight_cf(w, opts["layout"]).shape[0]
    fits = mx * mw * cg + mb <= INT64_MAX
    try:
        got = pw.conv1x1(x, w, b, **opts)
    except ValueError as e:
        assert not fits and "fit in int64" in str(e), str(e)
        return
    assert got.dtype == np.int64
    assert [int(v) for v in got.ravel()] == [int(v) for v in want.ravel()]


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_integer_gradients_are_exact_or_refused(data):
    """Stride 1, no padding, one group: grad_x = g·Wᵀ, grad_w = Xᵀ·g, grad_b = Σ g on
    Python ints."""
    n, c, f = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3)), data.draw(
        st.integers(1, 3))
    x = data.draw(_values(data.draw(st.sampled_from(INTS)), (n, 1, 2, c)))
    w = data.draw(_values(data.draw(st.sampled_from(INTS)), (c, f)))
    g = data.draw(_values(data.draw(st.sampled_from(INTS)), (n, 1, 2, f)))
    xo, wo, go = (a.astype(object).reshape(-1, a.shape[-1]) for a in (x, w, g))
    want = (go @ wo.T, xo.T @ go, go.sum(axis=0))  # (M, C), (C, F), (F,) on Python ints
    try:
        got = pw.conv1x1_backward(g, x, w, has_bias=True)
    except ValueError as e:
        assert "fit in int64" in str(e), str(e)
        mx, mw, mg = _bound(x, w, g)
        # the gradients' sums, or the forward's that they differentiate
        assert max(mg * mw * f, mg * mx * 2 * n, mg * 2 * n, mx * mw * c) > INT64_MAX
        return
    for a, b in zip(got, want, strict=True):
        assert a.dtype == np.int64
        assert [int(v) for v in a.ravel()] == [int(v) for v in np.ravel(b)]


def test_the_reported_uint64_and_int64_wraps_are_refused():
    with pytest.raises(ValueError, match=r"fit in int64.*9223372036854775813"):
        pw.conv1x1(np.full((1, 1, 1, 1), 2**63 + 5, np.uint64), np.ones((1, 1), np.uint64))
    with pytest.raises(ValueError, match="fit in int64"):
        pw.conv1x1(np.full((1, 1, 1, 1), 2**62, np.int64), np.full((1, 1), 4, np.int64))
    with pytest.raises(ValueError, match="fit in int64"):
        pw.explain(np.full((1, 1, 1), 2**63 + 5, np.uint64), np.ones((1, 1), np.uint64))
    top = pw.conv1x1(np.full((1, 1, 1, 1), 2**63 - 1, np.uint64), np.ones((1, 1), np.uint64))
    assert int(top[0, 0, 0, 0]) == 2**63 - 1  # the largest value that fits is computed
    with pytest.raises(TypeError, match="integer grad_out for integer x"):
        pw.conv1x1_backward(np.full((1, 1, 1, 1), 0.5), np.ones((1, 1, 1, 1), np.int64),
                            np.ones((1, 1), np.int64), has_bias=False)


def test_torch_integer_tensors_are_exact_or_refused():
    torch = pytest.importorskip("torch")
    for dt in (torch.uint16, torch.uint32):
        x = torch.full((1, 1, 1, 2), 2**15, dtype=dt)
        y = pw.conv1x1(x, torch.full((2, 1), 3, dtype=dt))
        assert y.dtype == torch.int64 and int(y) == 2 * 3 * 2**15
    with pytest.raises(TypeError, match=r"torch.uint64.*\.to\(torch.int64\)"):
        pw.conv1x1(torch.ones(1, 1, 1, 2, dtype=torch.uint64),
                   torch.ones(2, 1, dtype=torch.uint64))
    with pytest.raises(ValueError, match="fit in int64"):
        pw.conv1x1(torch.full((1, 1, 1, 1), 2**62), torch.full((1, 1), 4))
    for dt in (torch.float8_e4m3fn, torch.float8_e5m2):  # refused, never upcast silently
        for n in (2, 64):  # a tiny tensor and one the checks see only as a shape
            with pytest.raises(TypeError, match=rf"got {dt}; cast with \.to\(torch.float32"):
                pw.conv1x1(torch.ones(1, 1, 1, n).to(dt), torch.ones(n, 1).to(dt))
