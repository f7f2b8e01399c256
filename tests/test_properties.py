"""Property tests: random shapes, strides, padding, groups and dtypes against the references."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import pointwise as pw
from oracle import check_against_torch, reference_conv

pytestmark = pytest.mark.usefixtures("both_paths")

LAYOUT_SHAPES = {
    "NHWC": lambda n, h, w, c: (n, h, w, c),
    "HWC": lambda n, h, w, c: (h, w, c),
    "NCHW": lambda n, h, w, c: (n, c, h, w),
    "CHW": lambda n, h, w, c: (c, h, w),
}


@st.composite
def problems(draw, dtypes=(np.float64, np.float32)):
    layout = draw(st.sampled_from(sorted(LAYOUT_SHAPES)))
    n, h, w = draw(st.integers(0, 3)), draw(st.integers(0, 9)), draw(st.integers(1, 9))
    groups = draw(st.integers(1, 4))
    cg, fg = draw(st.integers(0, 6)), draw(st.integers(0, 6))
    c, f = cg * groups, fg * groups
    stride = draw(st.one_of(st.integers(1, 4), st.tuples(st.integers(1, 4), st.integers(1, 4))))
    padding = draw(st.one_of(st.integers(0, 2), st.tuples(st.integers(0, 2), st.integers(0, 2))))
    dtype = draw(st.sampled_from(dtypes))
    act = draw(st.sampled_from([None, "relu", "relu6", "silu", "hardswish"]))
    bias = draw(st.booleans())
    weight_2d = draw(st.booleans())
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = rng.standard_normal(LAYOUT_SHAPES[layout](n, h, w, c)).astype(dtype)
    if layout in ("NHWC", "HWC"):
        wt = rng.standard_normal((cg, f) if weight_2d else (1, 1, cg, f)).astype(dtype)
    else:
        wt = rng.standard_normal((f, cg) if weight_2d else (f, cg, 1, 1)).astype(dtype)
    b = rng.standard_normal(f).astype(dtype) if bias else None
    opts = dict(layout=layout, stride=stride, padding=padding, groups=groups, activation=act)
    return x, wt, b, opts


@settings(max_examples=150, deadline=None)
@given(problems())
def test_forward_matches_einsum_reference(case):
    x, w, b, opts = case
    y = pw.conv1x1(x, w, b, **opts)
    ref = reference_conv(x, w, b, **opts)
    assert y.shape == ref.shape and y.dtype == x.dtype
    tol = 1e-12 if x.dtype == np.float64 else 2e-5
    np.testing.assert_allclose(y, ref, rtol=tol, atol=tol * max(1.0, np.abs(ref).max(initial=0)))


@settings(max_examples=100, deadline=None)
@given(problems())
def test_forward_and_backward_match_torch(case):
    x, w, b, opts = case
    # torch's conv2d refuses zero channels or zero-size images (or returns a wrong shape for
    # C == 0); the einsum property above covers those cases.
    cl = opts["layout"] in ("NHWC", "HWC")
    spatial = x.shape[-3:-1] if cl else x.shape[-2:]
    c = x.shape[-1] if cl else x.shape[-3]
    assume(min(spatial) > 0 and c > 0 and w.size > 0)
    check_against_torch(x, w, b, **opts)


@settings(max_examples=60, deadline=None)
@given(problems(dtypes=(np.int64, np.int32)))
def test_integers_are_exact(case):
    x, w, b, opts = case
    if opts["activation"] in ("silu", "hardswish"):
        opts = {**opts, "activation": "relu"}
    xi, wi = (np.round(a * 100).astype(a.dtype) for a in (x, w))
    bi = None if b is None else np.round(b * 100).astype(np.int64)
    y = pw.conv1x1(xi, wi, bi, **opts)
    assert y.dtype.kind == "i"
    np.testing.assert_array_equal(y, reference_conv(xi, wi, bi, **opts))
