"""pointwise.conv2d against float64 torch.nn.functional.conv2d (tests/oracle.py).

Each property runs on the NumPy path and on the compiled taps kernels (``both_paths``); the
kernels take float32 channels-last with one group, so those draws exercise them and the rest
exercise the NumPy path twice.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pointwise as pw
from oracle import check_conv2d_against_torch, from_nhwc

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.usefixtures("one_torch_thread")

LAYOUTS = ["NHWC", "HWC", "NCHW", "CHW"]
ACTS = [None, "relu", "relu6", "silu", "hardswish"]


def make(rng, layout, n, h, w, c, f, kh, kw, groups, dtype, bias=True, residual_hw=None):
    """x, weight (in the layout's format), bias and residual, from the rng."""
    def arr(*shape):
        if np.dtype(dtype).kind in "iu":
            return rng.integers(-4, 5, shape).astype(dtype)
        return rng.standard_normal(shape).astype(dtype)

    x = arr(n, h, w, c)  # (N, H, W, C)
    hwio = arr(kh, kw, c // groups, f)
    weight = hwio if layout in ("NHWC", "HWC") else hwio.transpose(3, 2, 0, 1)
    b = arr(f) if bias else None
    r = None if residual_hw is None else from_nhwc(arr(n, *residual_hw, f), layout)
    return from_nhwc(x, layout), weight, b, r


def out_hw(h, w, k, s, p, d):
    if p == "same":
        return -(-h // s[0]), -(-w // s[1])
    return ((h + 2 * p - d[0] * (k[0] - 1) - 1) // s[0] + 1,
            (w + 2 * p - d[1] * (k[1] - 1) - 1) // s[1] + 1)


@st.composite
def problems(draw):
    layout = draw(st.sampled_from(LAYOUTS))
    kh, kw = draw(st.integers(1, 7)), draw(st.integers(1, 7))
    s = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    d = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = draw(st.sampled_from(["same", 0, 1, 2, 3]))
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    cg, fg = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    if draw(st.booleans()) and groups > 1:  # depthwise, with a channel multiplier
        cg = 1
    pad = 0 if padding == "same" else padding  # "same" fits any size
    lo_h = 1 if padding == "same" else max(1, d[0] * (kh - 1) + 1 - 2 * pad)
    lo_w = 1 if padding == "same" else max(1, d[1] * (kw - 1) + 1 - 2 * pad)
    h, w = draw(st.integers(lo_h, lo_h + 6)), draw(st.integers(lo_w, lo_w + 6))
    n = 1 if layout in ("HWC", "CHW") else draw(st.integers(0, 2))
    return dict(layout=layout, n=n, h=h, w=w, c=groups * cg, f=groups * fg, kh=kh, kw=kw,
                s=s, d=d, padding=padding, groups=groups, act=draw(st.sampled_from(ACTS)),
                bias=draw(st.booleans()), residual=draw(st.booleans()),
                seed=draw(st.integers(0, 99)))


@settings(max_examples=120, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # the path is per test
@given(pr=problems(), dtype=st.sampled_from([np.float64, np.float32]))
def test_matches_torch(pr, dtype, both_paths):
    rng = np.random.default_rng(pr["seed"])
    hw = out_hw(pr["h"], pr["w"], (pr["kh"], pr["kw"]), pr["s"], pr["padding"], pr["d"])
    x, w, b, r = make(rng, pr["layout"], pr["n"], pr["h"], pr["w"], pr["c"], pr["f"], pr["kh"],
                      pr["kw"], pr["groups"], dtype, pr["bias"], hw if pr["residual"] else None)
    y = check_conv2d_against_torch(x, w, b, layout=pr["layout"], stride=pr["s"],
                                   padding=pr["padding"], dilation=pr["d"], groups=pr["groups"],
                                   activation=pr["act"], residual=r)
    assert y.dtype == dtype


@pytest.mark.parametrize("k, f, act", [(3, 32, "relu6"), (7, 64, "relu")])
@pytest.mark.parametrize("n, h", [(0, 15), (1, 7), (3, 15), (1, 113), (1, 225)])
def test_the_stems_match_torch(k, f, act, n, h, both_paths):
    # the networks' first convs, 3 channels at stride 2: odd sizes leave a last output
    # column whose kernel row crosses the right edge, or none
    rng = np.random.default_rng(h)
    x, w, b, _ = make(rng, "NHWC", n, h, h, 3, f, k, k, 1, np.float32)
    y = check_conv2d_against_torch(x, w, b, stride=2, padding=k // 2, activation=act)
    assert y.shape == (n, (h - 1) // 2 + 1, (h - 1) // 2 + 1, f)


@pytest.mark.usefixtures("isa")
@pytest.mark.parametrize("f", [40, 128, 200, 520])
@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_many_filters_fill_every_panel(f, layout):
    # the filters' panels differ in width (AVX2 k x k: 128 as 3+3+3+3+2+2 vectors, 200 as
    # 7 x 3 + 2 x 2), packed from HWIO and from OIHW weights
    rng = np.random.default_rng(f)
    x, w, b, r = make(rng, layout, 2, 6, 5, 7, f, 3, 3, 1, np.float32, residual_hw=(3, 3))
    check_conv2d_against_torch(x, w, b, layout=layout, stride=2, padding=1, residual=r,
                               activation="relu")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_integers_are_exact(layout):
    rng = np.random.default_rng(1)
    x, w, b, r = make(rng, layout, 1, 6, 5, 4, 6, 3, 2, 2, np.int32, residual_hw=(6, 5))
    check_conv2d_against_torch(x, w, b, layout=layout, padding="same", groups=2, residual=r,
                               activation="relu")


def test_half_types_accumulate_in_float32():
    rng = np.random.default_rng(2)
    x, w, b, _ = make(rng, "NHWC", 2, 7, 7, 8, 5, 3, 3, 1, np.float16)
    y = check_conv2d_against_torch(x, w, b, padding=1, activation="relu6")
    assert y.dtype == np.float16


@pytest.mark.parametrize("case", ["channels sliced", "pixels strided", "batch reversed"])
def test_non_contiguous_inputs(case, both_paths):
    rng = np.random.default_rng(3)
    big = rng.standard_normal((4, 12, 14, 10)).astype(np.float32)  # (N, H, W, C)
    x = {"channels sliced": big[:, :9, :11, 2:8], "pixels strided": big[:, ::2, ::3, :6],
         "batch reversed": big[::-1, :7, :7, :6]}[case]
    w = rng.standard_normal((3, 3, 6, 20)).astype(np.float32)
    check_conv2d_against_torch(x, w, np.ones(20, np.float32), padding=1, activation="relu")


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_empty_batch_and_zero_channels(layout, both_paths):
    rng = np.random.default_rng(4)
    x, w, b, _ = make(rng, layout, 0, 5, 5, 3, 4, 3, 3, 1, np.float32)
    y = pw.conv2d(x, w, b, layout=layout, padding=1)
    assert y.shape == ((0, 5, 5, 4) if layout == "NHWC" else (0, 4, 5, 5))
    x, w, b, _ = make(rng, layout, 2, 5, 5, 0, 4, 3, 3, 1, np.float32)
    y = pw.conv2d(x, w, b, layout=layout, padding=1, activation="relu")
    expect = np.maximum(b, 0)  # no channels: every pixel is act(bias)
    y_last = y if layout == "NHWC" else y.transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(y_last, np.broadcast_to(expect, y_last.shape))


def test_a_1x1_weight_is_conv1x1():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 6, 6, 8)).astype(np.float32)
    w = rng.standard_normal((8, 5)).astype(np.float32)
    np.testing.assert_array_equal(pw.conv2d(x, w, stride=2, padding=1),
                                  pw.conv1x1(x, w, stride=2, padding=1))
    np.testing.assert_array_equal(pw.conv2d(x, w[None, None], padding="same"),
                                  pw.conv1x1(x, w))
    r = rng.standard_normal((2, 6, 6, 5)).astype(np.float32)
    check_conv2d_against_torch(x, w[None, None], residual=r, activation="relu")


@pytest.mark.parametrize("stride, padding, act", [(1, 0, "relu"), (2, 0, None),
                                                  (3, 1, "relu6"), (1, 2, "silu")])
def test_a_1x1_with_residual_is_one_fused_call(stride, padding, act, both_paths, monkeypatch):
    """On the kernels an unpadded 1×1 conv with a residual is one rows call (bias, residual
    and ReLU in its epilogue), a padded one a taps call; both match torch, with the input's
    pixels strided and the residual a non-contiguous view."""
    from pointwise.kernels import native

    calls = []
    for name in ("rows", "taps"):
        real = getattr(native, name)
        monkeypatch.setattr(native, name, lambda *a, _f=real, _n=name, **k: (
            calls.append((_n, (a[5:6] or [k.get("residual")])[0] is not None)),
            _f(*a, **k))[1])
    rng = np.random.default_rng(stride * 10 + padding)
    x = rng.standard_normal((2, 9, 14, 12)).astype(np.float32)[:, :, ::2]  # (2, 9, 7, 12)
    w = rng.standard_normal((1, 1, 12, 20)).astype(np.float32)
    b = rng.standard_normal(20).astype(np.float32)
    hw = out_hw(9, 7, (1, 1), (stride, stride), padding, (1, 1))
    r = rng.standard_normal((2, 20, *hw)).astype(np.float32).transpose(0, 2, 3, 1)
    check_conv2d_against_torch(x, w, b, stride=stride, padding=padding, activation=act,
                               residual=r)
    if both_paths == "kernels":
        assert calls == [("rows" if padding == 0 else "taps", True)]  # the residual fused


def test_out_is_filled_and_returned(both_paths):
    rng = np.random.default_rng(6)
    x, w, b, _ = make(rng, "NHWC", 2, 8, 8, 16, 32, 3, 3, 1, np.float32)
    out = np.full((2, 8, 8, 32), np.nan, np.float32)
    y = pw.conv2d(x, w, b, padding=1, out=out)
    assert y is out
    np.testing.assert_allclose(out, pw.conv2d(x, w, b, padding=1), rtol=1e-6, atol=1e-6)
    strided = np.full((2, 8, 8, 64), np.nan, np.float32)[..., ::2]  # F not contiguous
    pw.conv2d(x, w, b, padding=1, out=strided)
    np.testing.assert_allclose(strided, out, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kwargs, match", [
    (dict(w=np.ones((3, 3, 4, 2))), r"expected weight of shape \(kh, kw, 3, F\)"),
    (dict(w=np.ones((2, 3, 5, 5))), r"looks like OIHW; use weight.transpose\(2, 3, 1, 0\)"),
    (dict(w=np.ones((3, 3, 3))), r"expected a 4-D HWIO"),
    (dict(padding="full"), r"'same' or 'valid'"),
    (dict(w=np.ones((9, 9, 3, 2))), r"to fit in the padded input"),
    (dict(dilation=0), r"dilation >= 1"),
    (dict(residual=np.ones((1, 5, 5, 3))), r"expected residual of shape \(1, 5, 5, 2\)"),
    (dict(groups=2), r"divisible by groups=2"),
])
def test_bad_arguments_say_what_was_expected(kwargs, match):
    opts = dict(w=np.ones((3, 3, 3, 2)), padding=1)
    opts.update(kwargs)
    w = opts.pop("w")
    with pytest.raises(ValueError, match=match):
        pw.conv2d(np.ones((1, 5, 5, 3)), w, **opts)


def test_mixed_float_dtypes_are_a_type_error():
    with pytest.raises(TypeError, match="share one floating dtype"):
        pw.conv2d(np.ones((1, 4, 4, 2), np.float32), np.ones((3, 3, 2, 1)))
    with pytest.raises(TypeError, match="expected residual of dtype float32"):
        pw.conv2d(np.ones((1, 4, 4, 2), np.float32), np.ones((3, 3, 2, 1), np.float32),
                  padding=1, residual=np.ones((1, 4, 4, 1)))


def test_torch_tensors_go_to_torch_with_autograd():
    torch.manual_seed(0)
    x = torch.randn(2, 6, 6, 3, dtype=torch.float64, requires_grad=True)  # NHWC
    w = torch.randn(3, 3, 3, 4, dtype=torch.float64, requires_grad=True)  # HWIO
    r = torch.randn(2, 6, 6, 4, dtype=torch.float64, requires_grad=True)
    y = pw.conv2d(x, w, padding="same", activation="silu", residual=r)
    assert isinstance(y, torch.Tensor) and y.shape == (2, 6, 6, 4)
    ref = check_conv2d_against_torch(x.detach().numpy(), w.detach().numpy(), padding="same",
                                     activation="silu", residual=r.detach().numpy())
    np.testing.assert_allclose(y.detach().numpy(), ref, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(
        lambda a, b, c: pw.conv2d(a, b, padding=1, stride=2, residual=c[:, ::2, ::2]),
        (x, w, r))


def test_torch_integers_and_nchw():
    x = torch.arange(2 * 3 * 5 * 5).reshape(2, 3, 5, 5)  # NCHW int64
    w = torch.ones(4, 3, 3, 3, dtype=torch.int64)
    y = pw.conv2d(x, w, layout="NCHW", padding=1)
    assert y.dtype == torch.int64
    ref = check_conv2d_against_torch(x.numpy(), w.numpy(), layout="NCHW", padding=1)
    np.testing.assert_array_equal(y.numpy(), ref)


def test_jax_arrays_are_refused_with_the_fix(monkeypatch):
    import pointwise.backends as backends

    fake = type("Array", (), {"__module__": "jax.numpy"})()  # routed as JAX, never imported
    monkeypatch.setattr(backends, "_BACKENDS", {**backends._BACKENDS, "jax": "pointwise.layout"})
    with pytest.raises(TypeError, match="got jax arrays; convert them with np.asarray"):
        pw.conv2d(fake, np.ones((3, 3, 1, 1)))
