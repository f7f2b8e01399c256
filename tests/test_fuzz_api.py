"""Fuzzing the public functions with hostile arguments and files.

Each test draws calls a hostile user could make: valid calls with zero to three things
broken (a dtype, a shape, a layout, a stride of 0 or 2**80, a bool for an int, a list for an
array, an out= that is misaligned, read-only or overlaps x, a tensor on the meta device, a
checkpoint with flipped bits or forged fields). The contract under test:

* a ``ValueError`` or ``TypeError`` (the library's "bad input" errors); or
* a result equal to an independent reference: float64 ``np.einsum`` or torch's float64
  conv2d and autograd for floats, within the dtype's rounding bound; Python ints for
  integers, exactly; a formula of its own for the counts;
* never another exception, a hang (each example runs under an alarm) or a crash.

Two profiles: the default runs in CI (a few seconds per test, well under 60 s in all);
``POINTWISE_FUZZ=long`` runs 40× as many cases (about ten minutes here). Counts of the
cases run: ``pytest tests/test_fuzz_api.py --hypothesis-show-statistics``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import pointwise as pw
from oracle import ACTS_NP, from_nhwc, reference_conv, to_nhwc, weight_cf

LONG = os.environ.get("POINTWISE_FUZZ") == "long"
ALARM_S = 30  # one example that runs longer than this is a hang


def fuzz(examples: int):
    """Settings for a fuzz test: ``examples`` in CI, 40× as many in the long profile."""
    return settings(max_examples=examples * (40 if LONG else 1), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])


@contextlib.contextmanager
def no_hang():
    """Fail the example (with TimeoutError, not a bad-input error) if it runs too long."""
    def _timeout(signum, frame):
        raise TimeoutError(f"one call ran over {ALARM_S} s")

    old = signal.signal(signal.SIGALRM, _timeout)
    signal.alarm(ALARM_S)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def call(fn, *args, **kwargs):
    """``fn(*args, **kwargs)``, or None when it refused with a bad-input error, which must
    say what was expected."""
    with no_hang():
        try:
            return fn(*args, **kwargs), None
        except (ValueError, TypeError) as e:
            assert str(e).strip(), f"{type(e).__name__} without a message"
            return None, e


# --------------------------------------------------------------------- hostile values
LAYOUTS = ["NHWC", "HWC", "NCHW", "CHW"]
FLOATS = [np.float16, np.float32, np.float64]
INTS = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64]
ODD_DTYPES = [np.bool_, np.complex64, np.complex128, np.longdouble, "U2", object,
              "datetime64[s]", "timedelta64[s]", ">f4", ">i8", "V4"]
BAD_INTS = [0, -1, -(2**63), 2**31, 2**63, 2**80, True, False, 1.0, 2.5, "1", None, (1,),
            (1, 2, 3), (0, 1), (1, -1), (1.0, 1), [2, 1], np.int64(2), np.uint8(1),
            np.float32(1), float("nan"), 10**6, 2**40]
BAD_LAYOUTS = ["nhwc", "NHW", "", None, 3, ["NHWC"], "NCHW\0", "NHWCN", b"NHWC", "ＮＨＷＣ"]
BAD_ACTS = ["RELU", "relu ", "gelu", 0, "", ["relu"], "silu", "hardswish", "relu6", None]


def values(dtype, extreme=False):
    """Elements for an array of ``dtype``: moderate values, so float64 sums are exact
    enough to judge a float16 result; ``extreme`` adds NaN, ±Inf and near-overflow."""
    dt = np.dtype(dtype)
    if dt.kind in "iu":
        info = np.iinfo(dt)
        return st.integers(max(info.min, -100), min(info.max, 100))
    if extreme:
        big = float(np.finfo(dt).max) if dt.itemsize >= 4 else 6e4
        return st.one_of(st.floats(-10, 10, width=32),
                         st.sampled_from([np.nan, np.inf, -np.inf, big, -big, 0.0, -0.0]))
    return st.floats(-10, 10, width=16 if dt.itemsize == 2 else 32)


def layout_shape(layout, n, c, h, w):
    return {"NHWC": (n, h, w, c), "HWC": (h, w, c), "NCHW": (n, c, h, w),
            "CHW": (c, h, w)}[layout]


def weight_shape(layout, cg, f, four_d):
    if layout in ("NHWC", "HWC"):
        return (1, 1, cg, f) if four_d else (cg, f)
    return (f, cg, 1, 1) if four_d else (f, cg)


@st.composite
def valid_calls(draw, dtypes=FLOATS + INTS, extreme=False):
    """A well-formed call: (x, weight, bias, options)."""
    layout = draw(st.sampled_from(LAYOUTS))
    groups = draw(st.integers(1, 3))
    n, h, w = draw(st.integers(0, 3)), draw(st.integers(0, 4)), draw(st.integers(0, 4))
    cg, fg = draw(st.integers(0, 3)), draw(st.integers(0, 3))
    dt = draw(st.sampled_from(dtypes))
    x = draw(hnp.arrays(dt, layout_shape(layout, n, groups * cg, h, w),
                        elements=values(dt, extreme)))
    wt = draw(hnp.arrays(dt, weight_shape(layout, cg, groups * fg, draw(st.booleans())),
                         elements=values(dt, extreme)))
    b = draw(st.none() | hnp.arrays(dt, (groups * fg,), elements=values(dt, extreme)))
    acts = [None, "relu", "relu6"] + (["silu", "hardswish"] if np.dtype(dt).kind == "f"
                                      else [])
    opts = {"layout": layout, "groups": groups, "stride": draw(st.integers(1, 3)),
            "padding": draw(st.integers(0, 2)), "activation": draw(st.sampled_from(acts))}
    return x, wt, b, opts


def _retype(draw, a):
    dt = draw(st.sampled_from(FLOATS + INTS + ODD_DTYPES))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # complex to real, NaN to int: the cast's own noise
        try:
            return a.astype(dt)
        except (ValueError, TypeError, OverflowError):
            return a


MUTATIONS = ["x dtype", "w dtype", "b dtype", "x ndim", "w shape", "b shape", "layout",
             "stride", "padding", "groups", "activation", "as list", "transposed x",
             "x scalar", "w none"]


@st.composite
def hostile_calls(draw, extreme=False):
    """A valid call with 0..3 mutations: (x, weight, bias, options, what was mutated)."""
    x, w, b, opts = draw(valid_calls(extreme=extreme))
    done = draw(st.lists(st.sampled_from(MUTATIONS), max_size=3))
    for m in done:
        arr = isinstance(x, np.ndarray)
        if m == "x dtype" and arr:
            x = _retype(draw, x)
        elif m == "w dtype" and isinstance(w, np.ndarray):
            w = _retype(draw, w)
        elif m == "b dtype" and b is not None:
            b = _retype(draw, b)
        elif m == "x ndim" and arr:
            x = x[None] if draw(st.booleans()) or x.ndim == 0 or not len(x) else x[0]
        elif m == "w shape" and isinstance(w, np.ndarray):
            w = np.swapaxes(w, 0, -1) if draw(st.booleans()) else w[..., None]
        elif m == "b shape":
            b = np.zeros((draw(st.integers(0, 4)),) * draw(st.integers(0, 2)), np.float32)
        elif m in ("layout", "activation"):
            opts[m] = draw(st.sampled_from(BAD_LAYOUTS if m == "layout" else BAD_ACTS))
        elif m in ("stride", "padding", "groups"):
            opts[m] = draw(st.sampled_from(BAD_INTS))
        elif m == "as list" and arr:
            x = x.tolist()
        elif m == "transposed x" and arr and x.ndim >= 2:  # same values, other memory order
            x = np.ascontiguousarray(np.swapaxes(x, -1, -2)).swapaxes(-1, -2)
        elif m == "x scalar":
            x = draw(st.sampled_from([3, 2.5, None, "x", [[]], [[1], [2, 3]], object()]))
        elif m == "w none":
            w = None
    return x, w, b, opts, done


# --------------------------------------------------------------------- the references
def _pair(v):
    return (int(v), int(v)) if np.ndim(v) == 0 else (int(v[0]), int(v[1]))


def _eps(dtype):
    name = dtype if isinstance(dtype, str) else np.dtype(dtype).name
    return 2.0**-7 if name == "bfloat16" else float(np.finfo(name).eps)


def expect_conv(got, x, w, b, opts, dtype=None):
    """``dtype``: the name of the result's dtype where ``got`` holds it in a wider one (a
    bfloat16 tensor read as float32)."""
    with np.errstate(all="ignore"):  # NaN and Inf are meant to flow through the reference
        _expect_conv(got, x, w, b, opts, np.dtype(got.dtype).name if dtype is None else dtype)


def _expect_conv(got, x, w, b, opts, name):
    """``got`` equals the conv of the (accepted) arguments: exactly for integers, within
    the rounding bound of its dtype for floats, where the exact value is representable."""
    x, w = np.asarray(x), np.asarray(w)
    b = None if b is None else np.asarray(b)
    o = {**opts, "stride": _pair(opts["stride"]), "padding": _pair(opts["padding"]),
         "groups": int(opts["groups"])}
    if got.size == 0:  # the shape says it all; a huge padding would make the reference big
        return
    if max(o["padding"]) > 16:  # the reference would pad x: compute the few outputs directly
        reference = direct_conv
    else:
        reference = reference_conv
    if got.dtype.kind in "iu":
        want = reference(x, w, b, python_ints=True, **o)
        assert got.shape == want.shape
        assert [int(v) for v in got.ravel()] == [int(v) for v in want.ravel()]
        return
    want = reference(x.astype(np.float64), w.astype(np.float64),
                     None if b is None else b.astype(np.float64), **o)
    assert got.shape == want.shape
    mag = reference(np.abs(x.astype(np.float64)), np.abs(w.astype(np.float64)),
                    None if b is None else np.abs(b.astype(np.float64)),
                    **{**o, "activation": None})
    terms = weight_cf(w, o["layout"]).shape[0] + 2
    bf16 = name == "bfloat16"
    tiny = 2.0**-133 if bf16 else float(np.finfo(name).smallest_subnormal)  # below normal
    tol = 1.5 * terms * (_eps(name) * mag + tiny)
    top = 3.3e38 if bf16 else float(np.finfo(name).max)
    judged = np.isfinite(mag) & (mag * terms < top / 4)  # no overflow can have happened
    g64 = got.astype(np.float64)
    bad = judged & ~(np.abs(g64 - want) <= tol)
    assert not bad.any(), (g64[bad][:5], want[bad][:5])


def direct_conv(x, w, b=None, *, layout, stride, padding, groups, activation,
                python_ints=False):
    """The conv output by output, from the formula: output (i, j) reads input
    (i·s − p, j·s − p), or nothing when that is in the padding. For paddings the reference
    would have to materialize (10**6); the outputs themselves are few."""
    exact = python_ints and x.dtype.kind in "iu" and w.dtype.kind in "iu"
    dt = object if exact else np.float64
    x4 = to_nhwc(x, layout).astype(dt)  # (N, H, W, C)
    wm = weight_cf(w, layout).astype(dt)  # (C/G, F)
    n, h, wd, _ = x4.shape
    cg, f = wm.shape
    fg = f // groups
    (sh, sw), (ph, pw_) = stride, padding
    ho, wo = (h + 2 * ph - 1) // sh + 1, (wd + 2 * pw_ - 1) // sw + 1
    y = np.zeros((n, ho, wo, f), dt)
    for i in range(ho):
        for j in range(wo):
            r, q = i * sh - ph, j * sw - pw_
            if 0 <= r < h and 0 <= q < wd:
                for k in range(groups):
                    y[:, i, j, k * fg:(k + 1) * fg] = (
                        x4[:, r, q, k * cg:(k + 1) * cg] @ wm[:, k * fg:(k + 1) * fg])
    if b is not None:
        y = y + np.asarray(b).astype(dt)
    return from_nhwc(ACTS_NP[activation](y), layout)


# ----------------------------------------------------------------------- conv1x1
def _out_for(draw, x, w, b, opts):
    """An out= for the call: right, or wrong in one way."""
    try:
        right = pw.conv1x1(np.asarray(x).copy(), w, b, **opts)
    except (ValueError, TypeError):
        return None
    kind = draw(st.sampled_from(["right", "misaligned", "read-only", "dtype", "shape",
                                 "list", "fortran", "is x"]))
    if kind == "right":
        return np.full_like(right, 7)
    if kind == "misaligned" and right.dtype.kind == "f" and right.itemsize >= 4:
        buf = np.zeros(right.nbytes + 8, np.uint8)
        return buf[1:1 + right.nbytes].view(right.dtype).reshape(right.shape)
    if kind == "read-only":
        out = np.zeros_like(right)
        out.flags.writeable = False
        return out
    if kind == "dtype":
        return np.zeros(right.shape, np.float32 if right.dtype != np.float32 else np.float64)
    if kind == "shape":
        return np.zeros((*right.shape, 1), right.dtype)
    if kind == "list":
        return right.tolist()
    if kind == "fortran":
        return np.asfortranarray(np.zeros_like(right))
    return x if isinstance(x, np.ndarray) else None


@fuzz(250)
@given(hostile_calls(), st.data())
def test_fuzz_conv1x1(call_args, data):
    x, w, b, opts, _ = call_args
    out = _out_for(data.draw, x, w, b, opts) if data.draw(st.booleans()) else None
    got, err = call(pw.conv1x1, x, w, b, out=out, **opts)
    if err is None:
        assert out is None or got is out
        expect_conv(got, x, w, b, opts)


@fuzz(120)
@given(valid_calls(dtypes=FLOATS, extreme=True))
def test_fuzz_conv1x1_extreme_values(call_args):
    """NaN, ±Inf and values near the dtype's largest: never an exception; where no
    overflow can have happened, the right value."""
    x, w, b, opts = call_args
    got, err = call(pw.conv1x1, x, w, b, **opts)
    assert err is None, err
    expect_conv(got, x, w, b, opts)


# --------------------------------------------------------------------- conv1x1_backward
DERIVATIVES = {  # act'(z), as torch's backward kernels define it at the kinks
    None: lambda z: np.ones_like(z),
    "relu": lambda z: (z > 0).astype(z.dtype),
    "relu6": lambda z: ((z > 0) & (z < 6)).astype(z.dtype),
    "silu": lambda z: (s := 1 / (1 + np.exp(-z))) * (1 + z * (1 - s)),
    "hardswish": lambda z: np.where(z < -3, 0.0, np.where(z <= 3, (2 * z + 3) / 6, 1.0)),
}


def numpy_grads(g, x, w, b, opts):
    """Gradients of Σ g·conv1x1(x, w, b) in float64 from the definition: the pre-activation
    from the reference conv, then grad_b = Σ gz, grad_w = Xᵀ·gz and grad_x = gz·Wᵀ
    scattered back to the pixels that were read (torch's conv2d has no 0-channel case)."""
    layout, groups = opts["layout"], int(opts["groups"])
    (sh, sw), (ph, pw_) = _pair(opts["stride"]), _pair(opts["padding"])
    x64, w64 = np.asarray(x, np.float64), np.asarray(w, np.float64)
    o = {**opts, "stride": (sh, sw), "padding": (ph, pw_), "groups": groups,
         "activation": None}
    z = to_nhwc(reference_conv(x64, w64, None if b is None else np.asarray(b, np.float64),
                               **o), layout)  # (N, Ho, Wo, F)
    with np.errstate(all="ignore"):
        gz = to_nhwc(np.asarray(g, np.float64), layout) * DERIVATIVES[opts["activation"]](z)
    x4 = to_nhwc(x64, layout)  # (N, H, W, C)
    n, h, wd, c = x4.shape
    wm = weight_cf(w64, layout)  # (C/G, F)
    cg, f = wm.shape
    fg = f // groups if groups else 0
    ho, wo = gz.shape[1:3]
    xp = np.zeros((n, h + 2 * ph, wd + 2 * pw_, c))
    xp[:, ph:ph + h, pw_:pw_ + wd] = x4
    rows, cols = slice(0, (ho - 1) * sh + 1, sh), slice(0, (wo - 1) * sw + 1, sw)
    xs = xp[:, rows, cols]  # (N, Ho, Wo, C): the pixels each output read
    gw, gxp = np.zeros((cg, f)), np.zeros_like(xp)
    for k in range(groups):
        ci, fi = slice(k * cg, (k + 1) * cg), slice(k * fg, (k + 1) * fg)
        gw[:, fi] = np.einsum("nhwc,nhwf->cf", xs[..., ci], gz[..., fi])
        gxp[:, rows, cols, ci] += np.einsum("nhwf,cf->nhwc", gz[..., fi], wm[:, fi])
    gx = from_nhwc(gxp[:, ph:ph + h, pw_:pw_ + wd], layout)
    if layout in ("NCHW", "CHW"):  # (C/G, F) -> (F, C/G), 4-D when the weight is
        gw = gw.T
    gb = None if b is None else gz.sum(axis=(0, 1, 2))
    return [gx, gw.reshape(np.shape(w)), gb]


@fuzz(150)
@given(hostile_calls(), st.data())
def test_fuzz_conv1x1_backward(call_args, data):
    x, w, b, opts, _ = call_args
    try:
        y = pw.conv1x1(x, w, b, **opts)
    except (ValueError, TypeError):
        y = np.zeros((2, 2))  # the backward must refuse the same call
    g_kind = data.draw(st.sampled_from(["right", "right", "shape", "dtype", "list"]))
    g = data.draw(hnp.arrays(y.dtype if y.dtype.kind in "fiu" else np.float32, y.shape,
                             elements=values(y.dtype if y.dtype.kind in "fiu" else "f4")))
    if g_kind == "shape":
        g = g[..., None]
    elif g_kind == "dtype":
        g = _retype(data.draw, g)
    elif g_kind == "list":
        g = g.tolist()
    pass_y = data.draw(st.sampled_from([None, "right", "wrong shape"]))
    y_arg = None if pass_y is None else y if pass_y == "right" else y[..., None]
    has_bias = data.draw(st.sampled_from([b is not None, b is not None, True, False]))
    got, err = call(pw.conv1x1_backward, g, x, w, bias=b, has_bias=has_bias, y=y_arg, **opts)
    if err is not None:
        return
    gx, gw, gb = got
    assert (gb is None) == (not has_bias)
    f = weight_cf(np.asarray(w), opts["layout"]).shape[1]
    b_ref = np.zeros(f) if b is None and has_bias else b  # the bias the gradient is for
    want = numpy_grads(g, x, w, b_ref, opts)
    mags = numpy_grads(np.abs(np.asarray(g, np.float64)), np.abs(np.asarray(x, np.float64)),
                       np.abs(np.asarray(w, np.float64)), None,
                       {**opts, "activation": None})
    for ours, ref, mag, like in zip((gx, gw, gb), want, (*mags[:2], None), (x, w, b_ref),
                                    strict=True):
        if ours is None:
            continue
        assert ours.shape == np.shape(like)
        if ours.dtype.kind in "iu":  # moderate ints: float64 sums are exact
            assert np.array_equal(ours.astype(np.float64), ref), (ours, ref)
            continue
        if mag is None:  # grad_bias: a sum of |g| over every output pixel
            mag = np.full(ours.shape, float(np.abs(np.asarray(g, np.float64)).sum()))
        terms = max(np.asarray(g).size, 1) + 2
        name = np.dtype(ours.dtype).name
        tiny = 2.0**-133 if name == "bfloat16" else float(np.finfo(name).smallest_subnormal)
        tol = 2.25 * terms * (_eps(ours.dtype) * mag + tiny)
        top = 3.3e38 if name == "bfloat16" else float(np.finfo(name).max)
        judged = mag * terms < top / 4  # no overflow to ±inf can have happened
        bad = judged & ~(np.abs(ours.astype(np.float64) - ref) <= tol)
        assert not bad.any(), (ours[bad][:5], ref[bad][:5])


# --------------------------------------------------------------- output_size and cost
SIZES = st.one_of(st.integers(0, 9), st.sampled_from(BAD_INTS))


def _count(size, kernel, stride, padding):
    """Output positions of one axis, counted: starts 0, s, 2s, ... with the kernel inside
    the padded input."""
    span = size + 2 * padding - kernel + 1  # where a window may start: 0 .. span - 1
    return max(0, -(-span // stride))  # len(range(0, span, stride)), for any size of int


def _plain_int(v, lo):
    return (type(v) is int and v >= lo) or (isinstance(v, np.integer) and v >= lo)


@fuzz(300)
@given(SIZES, SIZES, SIZES)
def test_fuzz_output_size(size, padding, stride):
    got, err = call(pw.output_size, size, padding, stride)
    valid = _plain_int(size, 0) and _plain_int(padding, 0) and _plain_int(stride, 1)
    if err is None:
        assert valid, (size, padding, stride, got)
        assert type(got) is int and got == _count(int(size), 1, int(stride), int(padding))
    else:
        assert not valid, err


def _pair_or_none(v):
    """(h, w) of an int or a pair of ints, or None when it is neither."""
    if _plain_int(v, -(2**100)):
        return int(v), int(v)
    if isinstance(v, (tuple, list)) and len(v) == 2 and all(_plain_int(a, -(2**100))
                                                             for a in v):
        return int(v[0]), int(v[1])
    return None


@fuzz(300)
@given(SIZES, SIZES, SIZES, SIZES, SIZES, SIZES, SIZES, st.sampled_from([True, False, 1, None]),
       SIZES)
def test_fuzz_cost(c, f, k, size, stride, padding, groups, bias, batch):
    got, err = call(pw.cost, c, f, k, input_size=size, stride=stride, padding=padding,
                    groups=groups, bias=bias, batch=batch)
    ks, ss, ps, hw = (_pair_or_none(v) for v in (k, stride, padding, size))
    valid = (_plain_int(c, 0) and _plain_int(f, 0) and _plain_int(groups, 1)
             and _plain_int(batch, 0) and type(bias) is bool and None not in (ks, ss, ps, hw)
             and min(ks) >= 1 and min(ss) >= 1 and min(ps) >= 0 and min(hw) >= 0
             and int(c) % int(groups) == 0 and int(f) % int(groups) == 0
             and all(h + 2 * p >= kk for h, p, kk in zip(hw, ps, ks, strict=True)))
    if err is not None:
        assert not valid, err
        return
    assert valid, (c, f, k, size, stride, padding, groups, bias, batch, got)
    ho, wo = (_count(h, kk, s, p) for h, kk, s, p in zip(hw, ks, ss, ps, strict=True))
    weights = int(f) * (int(c) // int(groups)) * ks[0] * ks[1]
    assert (got.weights, got.biases, got.macs) == (weights, int(f) * bias,
                                                   int(batch) * ho * wo * weights)
    assert (got.input_elems, got.output_elems) == (int(batch) * hw[0] * hw[1] * int(c),
                                                   int(batch) * ho * wo * int(f))
    assert all(type(v) is int for v in got.as_dict().values())


# ------------------------------------------------------------------------------- explain
@fuzz(120)
@given(hostile_calls(), st.sampled_from([16, 0, 3, -1, 10**9, 2.5, "4", None, True]))
def test_fuzz_explain(call_args, max_pixels):
    x, w, b, opts, _ = call_args
    kw = {"layout": opts["layout"], "max_pixels": max_pixels}
    if x is None or w is None:  # None means "the tutorial's"; the mutation meant "bad"
        return
    got, err = call(pw.explain, x, w, b, **kw)
    if err is not None:
        return
    assert type(max_pixels) is int and not isinstance(max_pixels, bool)
    expect_conv(got.output, x, w, b, {**opts, "stride": 1, "padding": 0, "groups": 1,
                                      "activation": None})
    assert len(got.lines) == min(max(max_pixels, 0), got.total_lines)
    assert got.to_text() and json.dumps(got.to_dict())


# ------------------------------------------------------------ the torch functional API
TORCH_DTYPES = ["float16", "bfloat16", "float32", "float64", "int8", "int16", "int32",
                "int64", "uint8", "uint16", "uint32", "uint64", "bool", "complex64",
                "float8_e4m3fn", "float8_e5m2"]


@fuzz(100)
@given(hostile_calls(), st.data())
def test_fuzz_torch_functional(call_args, data):
    """pointwise.nn.functional.conv1x1 on tensors of every dtype, in either memory format,
    on the CPU or the meta device, with grad, out= and residual: refused, or F.conv2d's
    float64 result."""
    torch = pytest.importorskip("torch")
    from pointwise.nn.functional import conv1x1

    x, w, b, opts, _ = call_args
    if not all(isinstance(a, np.ndarray) or a is None for a in (x, w, b)):
        return  # lists are the NumPy core's fuzz; here every argument is a tensor
    dt = getattr(torch, data.draw(st.sampled_from(TORCH_DTYPES)))
    device = data.draw(st.sampled_from(["cpu", "cpu", "cpu", "meta"]))

    def tensor(a):
        if a is None or a.dtype.kind not in "fiub":
            return a
        t = torch.from_numpy(np.ascontiguousarray(a).astype(np.float64)).to(dt)
        if t.dim() == 4 and data.draw(st.booleans()):
            t = t.contiguous(memory_format=torch.channels_last)
        return t.to(device)

    xt, wt, bt = tensor(x), tensor(w), tensor(b)
    grad = dt.is_floating_point and device == "cpu" and data.draw(st.booleans())
    if grad and isinstance(xt, torch.Tensor):
        xt.requires_grad_(True)
    extra = data.draw(st.sampled_from(["none", "out", "residual", "bad residual"]))
    kw = dict(opts)
    try:  # the shape, from the NumPy core on the tensors' values
        shape = pw.conv1x1(*(None if t is None else np.zeros(t.shape) for t in (xt, wt, bt)),
                           **opts).shape
    except (ValueError, TypeError, AttributeError):
        shape = None
    if extra == "out" and shape is not None:
        kw["out"] = torch.zeros(shape, dtype=dt if dt.is_floating_point else torch.int64,
                                device=device)
    elif extra in ("residual", "bad residual") and shape is not None:
        kw["residual"] = torch.zeros(shape if extra == "residual" else (*shape, 1),
                                     dtype=dt if dt.is_floating_point else torch.int64,
                                     device=device)
    with no_hang():
        try:
            got = conv1x1(xt, wt, bt, **kw)
        except (ValueError, TypeError):
            return
        except RuntimeError as e:  # torch's own rule, kept: out= cannot record a gradient
            assert grad and "out" in kw and "automatic differentiation" in str(e), e
            return
    assert shape is not None, "tensors accepted where the NumPy core refuses their shapes"
    assert tuple(got.shape) == shape and got.device.type == device
    if device == "meta" or got.dtype not in (torch.float16, torch.bfloat16, torch.float32,
                                             torch.float64, torch.int64):
        return
    def values_of(t):
        if t is None:
            return None
        t = t.detach()
        return (t.to(torch.float64) if t.dtype.is_floating_point else t.to(torch.int64)).numpy()

    result = values_of(got)
    if got.dtype.is_floating_point:  # judged with the rounding of the tensor's own dtype
        result = result.astype(str(got.dtype).removeprefix("torch.").replace(
            "bfloat16", "float32"))
    expect_conv(result, values_of(xt), values_of(wt), values_of(bt), opts,
                dtype=str(got.dtype).removeprefix("torch."))


# ------------------------------------------------------------------ hostile checkpoints
@pytest.fixture(scope="module")
def real_checkpoint(tmp_path_factory):
    """A checkpoint as the trainer writes it (one step of nin_digits)."""
    pytest.importorskip("torch")
    from pointwise.training.train import TrainConfig, train

    out = tmp_path_factory.mktemp("ckpt")
    data = out / "tiny.npz"  # not digits: skipping scikit-learn's import saves a second
    gen = np.random.default_rng(0)
    np.savez(data, x=gen.random((TINY, 8, 8, 1), dtype=np.float32), y=np.arange(TINY) % 10)
    train(TrainConfig(data=str(data), epochs=1, batch_size=16, limit_batches=1), out,
          threads=1, log=lambda s: None, progress=False)
    return out / "checkpoint.pt"


TINY = 64  # samples in the checkpoint's data


def _same_state(a, b):
    from pointwise.training import checkpoint as ck

    return ck.digest(a) == ck.digest(b)


@fuzz(150)
@given(st.data())
def test_fuzz_checkpoint_bytes(real_checkpoint, tmp_path_factory, data):
    """Flipped bits, truncations, insertions, overwritten ranges, junk: load refuses the
    file with a ValueError, or returns exactly the state that was saved; so does
    load_model, with exactly the saved weights."""
    from pointwise.training import checkpoint as ck
    from pointwise.training.export import load_model

    path = real_checkpoint
    raw = bytearray(path.read_bytes())
    edit = data.draw(st.sampled_from(["flip", "flip", "truncate", "insert", "overwrite",
                                      "junk", "empty"]))
    if edit == "flip":
        for _ in range(data.draw(st.integers(1, 3))):
            bit = data.draw(st.integers(0, 8 * len(raw) - 1))
            raw[bit // 8] ^= 1 << (bit % 8)
    elif edit == "truncate":
        raw = raw[:data.draw(st.integers(0, len(raw) - 1))]
    elif edit == "insert":
        at = data.draw(st.integers(0, len(raw)))
        raw[at:at] = data.draw(st.binary(min_size=1, max_size=64))
    elif edit == "overwrite":
        at = data.draw(st.integers(0, len(raw) - 1))
        chunk = data.draw(st.binary(min_size=1, max_size=256))
        raw[at:at + len(chunk)] = chunk
    elif edit == "junk":
        raw = bytearray(data.draw(st.binary(max_size=4096)))
    else:
        raw = bytearray()
    bad = tmp_path_factory.mktemp("bad") / "c.pt"
    bad.write_bytes(bytes(raw))
    state, err = call(ck.load, bad)
    if err is None:
        assert _same_state(state, ck.load(path)), "a damaged file loaded with other contents"
        model, _ = load_model(bad)
        saved = ck.load(path)["model"]
        assert all(torch_equal(v, saved[k]) for k, v in model.state_dict().items())


def torch_equal(a, b):
    import torch

    return a.dtype == b.dtype and a.shape == b.shape and bool(torch.equal(a, b))


PRIMITIVES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats()
    | st.text(max_size=20) | st.sampled_from(["nin_digits", "resnet18", "evilmod:build",
                                             "digits", "x.npz", "this:x", ""]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=3),
    max_leaves=6)


def _paths(obj, path=()):
    """Every key path of a nested state (dicts and lists), tensors' included."""
    yield path
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, (*path, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, (*path, i))


@fuzz(60)
@given(st.data())
def test_fuzz_checkpoint_fields(real_checkpoint, tmp_path_factory, data):
    """A forged checkpoint (its checksum recomputed, as anyone can) with 1-3 fields set to
    hostile values, removed, or a tensor changed in shape or dtype: load_model and the
    stored split's check refuse it with ValueError/TypeError, or give a model that holds
    exactly the file's weights."""
    import torch

    from pointwise.training import checkpoint as ck
    from pointwise.training.data import stored_split
    from pointwise.training.export import load_model

    path = real_checkpoint
    state = ck.load(path)
    for _ in range(data.draw(st.integers(1, 3))):
        paths = [p for p in _paths(state) if p]
        where = data.draw(st.sampled_from(paths))
        parent = state
        for k in where[:-1]:
            parent = parent[k]
        old = parent[where[-1]]
        how = data.draw(st.sampled_from(["value", "value", "delete", "tensor"]))
        if how == "delete" and isinstance(parent, dict):
            del parent[where[-1]]
        elif how == "tensor" and isinstance(old, torch.Tensor):
            change = data.draw(st.sampled_from([
                lambda t: t.double(), lambda t: t.reshape(-1)[:-1], lambda t: t.reshape(-1, 1),
                lambda t: torch.zeros(3), lambda t: t.to(torch.int64),
                lambda t: t.to(torch.bool), lambda t: torch.zeros(0)]))
            parent[where[-1]] = change(old)
        else:
            parent[where[-1]] = data.draw(PRIMITIVES)
    forged = tmp_path_factory.mktemp("forged") / "c.pt"
    ck.save(forged, state)
    got, err = call(load_model, forged)
    if err is None:
        model, loaded = got
        weights = loaded["model"]
        assert all(torch_equal(v, weights[k].to(v.dtype)) for k, v in
                   model.state_dict().items())
    call(stored_split, state.get("split"), TINY, "tiny.npz")


# ------------------------------------------------- what the fuzzing found, kept fixed
# Each failure the fuzz tests found, as its shrunk example: CI replays fixed examples, so
# these keep a regression from hiding behind a lucky draw.
FOUND = [
    ("conv1x1 padding=10**6: MemoryError after trying to allocate 7 TiB",
     lambda: pw.conv1x1(np.ones((1, 1, 1, 1)), np.ones((1, 1)), padding=10**6),
     ValueError, "fits in memory"),
    ("conv1x1 of an empty x, padding=2**31: NumPy's own 'array is too big'",
     lambda: pw.conv1x1(np.ones((0, 0, 0, 0)), np.ones((0, 0)), padding=2**31, stride=2),
     ValueError, "fits in memory"),
    ("output_size stride 0: ZeroDivisionError",
     lambda: pw.output_size(3, 0, 0), ValueError, "stride >= 1"),
    ("output_size of a float: 3.0 returned",
     lambda: pw.output_size(3.5, 0, 1), TypeError, "size to be an int"),
    ("output_size of a negative size: -5 returned",
     lambda: pw.output_size(-5, 0, 1), ValueError, "size >= 0"),
    ("cost stride 0: ZeroDivisionError",
     lambda: pw.cost(4, 4, input_size=3, stride=0), ValueError, "stride >= 1"),
    ("cost kernel_size '3': IndexError",
     lambda: pw.cost(4, 4, "3", input_size=3), TypeError, "kernel_size to be an int"),
    ("cost input_size (2,): IndexError",
     lambda: pw.cost(4, 4, input_size=(2,)), ValueError, r"int or an \(h, w\) pair"),
    ("cost batch -1: negative MACs",
     lambda: pw.cost(4, 4, input_size=3, batch=-1), ValueError, "batch >= 0"),
    ("cost kernel 0: a 0-weight conv with more outputs than inputs",
     lambda: pw.cost(4, 4, 0, input_size=3), ValueError, "kernel_size >= 1"),
    ("cost groups 1.0: float counts",
     lambda: pw.cost(4, 4, input_size=3, groups=1.0), TypeError, "groups to be an int"),
    ("explain max_pixels=2.5: islice's ValueError",
     lambda: pw.explain(max_pixels=2.5), TypeError, "max_pixels to be an int"),
    ("explain max_pixels=True: taken as 1",
     lambda: pw.explain(max_pixels=True), TypeError, "max_pixels to be an int"),
]


@pytest.mark.parametrize(("what", "run", "error", "match"), FOUND, ids=[f[0] for f in FOUND])
def test_what_fuzzing_found_stays_fixed(what, run, error, match):
    with pytest.raises(error, match=match):
        run()


def test_torch_convs_that_sum_nothing_match_the_numpy_core():
    """Found by fuzzing: with C = 0 torch's conv2d returned 0 output channels (a silent
    wrong shape), with F = 0 or H = 0 it raised RuntimeError, and padding=2**31 on an empty
    input overflowed its stride calculation."""
    torch = pytest.importorskip("torch")
    from pointwise.nn.functional import conv1x1

    b = torch.tensor([1.0, -2.0], requires_grad=True)
    x = torch.zeros(2, 3, 3, 0, requires_grad=True)  # NHWC, C = 0
    y = conv1x1(x, torch.zeros(0, 2), b, padding=1, activation="relu")
    want = pw.conv1x1(np.zeros((2, 3, 3, 0)), np.zeros((0, 2)), [1.0, -2.0], padding=1,
                      activation="relu")
    assert tuple(y.shape) == want.shape == (2, 5, 5, 2)
    np.testing.assert_array_equal(y.detach().numpy(), want)
    y.sum().backward()  # d/db of Σ relu(b) over 50 pixels: 50 where b > 0
    assert b.grad.tolist() == [50.0, 0.0] and x.grad.shape == x.shape
    for xs, ws in (((1, 2, 2, 3), (3, 0)), ((1, 0, 2, 3), (3, 2))):  # F = 0, H = 0
        y = conv1x1(torch.ones(xs), torch.ones(ws), padding=(1, 0))
        assert tuple(y.shape) == pw.conv1x1(np.ones(xs), np.ones(ws), padding=(1, 0)).shape
    with pytest.raises(ValueError, match="fits in memory"):
        conv1x1(torch.zeros(0, 0, 0, 0), torch.zeros(0, 0), padding=2**31)


def test_a_checkpoint_whose_first_bit_is_flipped_is_a_clear_error(real_checkpoint, tmp_path):
    """Found by fuzzing: with the zip's magic damaged torch's reader falls back to its old
    format and raised IndexError from its unpickler."""
    from pointwise.training import checkpoint as ck

    raw = bytearray(real_checkpoint.read_bytes())
    raw[0] ^= 1
    (tmp_path / "c.pt").write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="truncated or corrupted"):
        ck.load(tmp_path / "c.pt")


def test_explain_agrees_with_results_below_the_normal_range():
    """Found by fuzzing: float16 1.25 · 1e-7 = 1.49e-7 is stored as 1.19e-7 (a subnormal),
    and explain's own check of the written-out sum raised AssertionError."""
    t = pw.explain(np.array([[[1.25]]], np.float16), np.array([[1e-7]], np.float16))
    assert t.lines[0].value == float(np.float16(1.25) * np.float16(1e-7))
