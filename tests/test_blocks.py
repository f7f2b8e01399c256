"""pw.depthwise_separable and pw.inverted_residual against float64 torch modules
(nn.Conv2d + activation + add), on both paths, with the fused kernel's band edges.

The fused kernel (csrc/blocks.c) runs bands of B output rows (at least 96 pixels, within a
512 KiB budget, at least one band per thread), keeps the input rows two bands share, and
splits the bands among the parts; the sizes below straddle those edges.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pointwise as pw
from pointwise.kernels import native as _native

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

ACT = {None: nn.Identity, "relu": nn.ReLU, "relu6": nn.ReLU6, "silu": nn.SiLU}


def weights(rng, c, e, f, expand=True, dtype=np.float32):
    """NHWC (HWIO) weights and biases of a block."""
    def r(*shape, scale=1.0):
        return (rng.standard_normal(shape) * scale).astype(dtype)
    we = r(1, 1, c, e, scale=1 / np.sqrt(c)) if expand else None
    be = r(e) if expand else None
    return we, be, r(3, 3, e, 1, scale=0.3), r(e), r(1, 1, e, f, scale=1 / np.sqrt(e)), r(f)


def reference(x, we, be, wd, bd, wp, bp, stride, act, residual, inverted):
    """float64 torch modules from the NHWC weights; x NHWC; returns NHWC."""
    layers = []
    e = wd.shape[2]

    def conv(w4, b, **kw):
        m = nn.Conv2d(w4.shape[1] * kw.get("groups", 1), w4.shape[0], w4.shape[2:], **kw).double()
        m.weight.data = torch.from_numpy(np.ascontiguousarray(w4, np.float64))
        m.bias.data = torch.zeros(w4.shape[0], dtype=torch.float64) if b is None else \
            torch.from_numpy(np.asarray(b, np.float64))
        return m

    if we is not None:
        layers += [conv(we.transpose(3, 2, 0, 1), be), ACT[act]()]
    layers += [conv(wd.transpose(2, 3, 0, 1), bd, stride=stride, padding=1, groups=e),
               ACT[act]()]
    layers += [conv(wp.transpose(3, 2, 0, 1), bp)]
    if not inverted:
        layers.append(ACT[act]())
    xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2), np.float64))
    with torch.no_grad():
        y = nn.Sequential(*layers)(xt)
        if residual:
            y = y + xt
    return y.numpy().transpose(0, 2, 3, 1)


def check(y, ref, tol):
    assert y.shape == ref.shape, (y.shape, ref.shape)
    scale = max(1.0, float(np.abs(ref).max(initial=0)))
    np.testing.assert_allclose(y.astype(np.float64), ref, rtol=tol, atol=tol * scale)


def run_inverted(rng, n, h, w, c, t, f, stride, act="relu6", residual=None, layout="NHWC",
                 dtype=np.float32, two_d=False):
    e = c * t
    x = rng.standard_normal((n, h, w, c)).astype(dtype)
    we, be, wd, bd, wp, bp = weights(rng, c, e, f, expand=t != 1, dtype=dtype)
    res = stride == 1 and c == f if residual is None else residual
    ref = reference(x, we, be, wd, bd, wp, bp, stride, act, res, True)
    args = [we, be, wd, bd, wp, bp]
    if two_d:
        args[0] = None if we is None else we[0, 0]
        args[4] = wp[0, 0]
    xin = x
    if layout == "NCHW":
        xin = x.transpose(0, 3, 1, 2)
        args = [None if we is None else (we[0, 0].T if two_d else we.transpose(3, 2, 0, 1)),
                be, wd.transpose(2, 3, 0, 1), bd,
                wp[0, 0].T if two_d else wp.transpose(3, 2, 0, 1), bp]
    y = pw.inverted_residual(xin, *args, stride=stride, activation=act, residual=residual,
                             layout=layout)
    if layout == "NCHW":
        y = y.transpose(0, 2, 3, 1)
    check(y, ref, 1e-10 if dtype == np.float64 else 1e-4)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("t", [1, 4, 6])
@pytest.mark.parametrize("n, h, c, f", [(1, 7, 24, 24), (3, 15, 40, 24), (1, 15, 3, 3),
                                        (0, 7, 24, 40)])
def test_inverted_residual_matches_torch(both_paths, stride, t, n, h, c, f):
    run_inverted(np.random.default_rng(h * t + c), n, h, h, c, t, f, stride)


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
@pytest.mark.parametrize("residual", [None, False])
def test_inverted_residual_layouts_and_residual(both_paths, layout, residual):
    run_inverted(np.random.default_rng(7), 2, 15, 13, 24, 6, 24, 1, residual=residual,
                 layout=layout, two_d=layout == "NCHW")


def test_inverted_residual_large_odd_image(both_paths):
    run_inverted(np.random.default_rng(8), 1, 113, 113, 16, 6, 24, 2, act="relu")
    run_inverted(np.random.default_rng(9), 1, 113, 57, 24, 4, 24, 1)


@pytest.mark.parametrize("dtype", [np.float64, np.int64])
def test_other_dtypes_run_the_layers(dtype):
    if dtype == np.int64:
        rng = np.random.default_rng(10)
        x = rng.integers(-3, 4, (2, 5, 5, 4))
        we, wd, wp = (rng.integers(-2, 3, s) for s in ((1, 1, 4, 8), (3, 3, 8, 1), (1, 1, 8, 4)))
        y = pw.inverted_residual(x, we, None, wd, None, wp, None, activation="relu")
        ref = reference(x, we, None, wd, None, wp, None, 1, "relu", True, True)
        assert y.dtype == np.int64
        np.testing.assert_array_equal(y, ref.astype(np.int64))
    else:
        run_inverted(np.random.default_rng(11), 2, 9, 9, 8, 6, 8, 1, dtype=dtype)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("act", ["relu", "relu6", "silu"])
@pytest.mark.parametrize("n, h, c, f", [(1, 7, 24, 40), (3, 15, 3, 24), (0, 7, 8, 8),
                                        (1, 113, 40, 24)])
def test_depthwise_separable_matches_torch(both_paths, stride, act, n, h, c, f):
    rng = np.random.default_rng(h + c + f)
    x = rng.standard_normal((n, h, h, c)).astype(np.float32)
    _, _, wd, bd, wp, bp = weights(rng, c, c, f, expand=False)
    y = pw.depthwise_separable(x, wd, bd, wp[0, 0], bp, stride=stride, activation=act)
    check(y, reference(x, None, None, wd, bd, wp, bp, stride, act, False, False), 1e-4)
    yc = pw.depthwise_separable(x.transpose(0, 3, 1, 2), wd.transpose(2, 3, 0, 1), bd,
                                wp.transpose(3, 2, 0, 1), bp, stride=stride, activation=act,
                                layout="NCHW")
    check(yc.transpose(0, 2, 3, 1), reference(x, None, None, wd, bd, wp, bp, stride, act,
                                              False, False), 1e-4)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 3), h=st.integers(1, 20), w=st.integers(1, 20),
       c=st.sampled_from([3, 8, 17]), t=st.sampled_from([1, 6]), f=st.sampled_from([5, 16, 33]),
       stride=st.sampled_from([1, 2]))
def test_band_edges(n, h, w, c, t, f, stride):
    """Any image size around the bands' rows and the parts' split, on the kernels."""
    run_inverted(np.random.default_rng(h * 31 + w), n, h, w, c, t, f, stride)


def test_the_fused_kernel_runs_float32(monkeypatch):
    if not _native.ENABLED:
        pytest.skip("compiled kernels not built or not used on this CPU")
    seen = []
    real = _native.block
    monkeypatch.setattr(_native, "block", lambda *a, **k: seen.append(a[-2:]) or real(*a, **k))
    run_inverted(np.random.default_rng(12), 1, 9, 9, 8, 6, 8, 1)
    run_inverted(np.random.default_rng(12), 1, 9, 9, 8, 6, 16, 2, act="silu")  # not fused
    assert seen == [(1, True)]


@pytest.mark.parametrize("call, match", [
    (lambda x, w: pw.inverted_residual(x, w["we"][:, :, :3], None, w["wd"], None, w["wp"], None),
     r"expand_weight of shape \(1, 1, C, F\) or \(C, F\) with C = 4"),
    (lambda x, w: pw.inverted_residual(x, w["we"], None, w["wd"][:, :, :2], None, w["wp"], None),
     r"dw_weight of shape \(3, 3, 8, 1\)"),
    (lambda x, w: pw.inverted_residual(x, w["we"], None, w["wd"], None, w["wp"], None,
                                       stride=2, residual=True),
     "pass residual=False"),
    (lambda x, w: pw.inverted_residual(x, None, np.ones(4), w["wd"][:, :, :4], None,
                                       w["wp"][:, :, :4], None), "expand_bias=None"),
    (lambda x, w: pw.depthwise_separable(x, w["wd"][:, :, :4], np.ones(3), w["wp"][:, :, :4],
                                         None), r"dw_bias of shape \(4,\)"),
    (lambda x, w: pw.depthwise_separable(x, w["wd"][:, :, :4], None, w["wp"][:, :, :4], None,
                                         stride=3), "stride 1 or 2"),
    (lambda x, w: pw.depthwise_separable(x[0], w["wd"][:, :, :4], None, w["wp"][:, :, :4],
                                         None), "expected x of 4 dimensions"),
])
def test_bad_arguments_get_one_message(call, match):
    x = np.ones((1, 5, 5, 4), np.float32)
    w = {"we": np.ones((1, 1, 4, 8), np.float32), "wd": np.ones((3, 3, 8, 1), np.float32),
         "wp": np.ones((1, 1, 8, 4), np.float32)}
    with pytest.raises(ValueError, match=match):
        call(x, w)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("n, h, f", [(1, 14, 200), (3, 7, 130), (8, 7, 200), (2, 9, 96)])
def test_small_images_split_filters_and_bands_span_images(isa, stride, n, h, f):
    """Few pixels (N·Ho·Wo under two bands' worth a part): the parts split the projection's
    filters, each filtering the same rows; bands run on across images (7x7, N=8)."""
    rng = np.random.default_rng(n * h + f)
    x = rng.standard_normal((n, h, h, 96)).astype(np.float32)
    _, _, wd, bd, wp, bp = weights(rng, 96, 96, f, expand=False)
    y = pw.depthwise_separable(x, wd, bd, wp[0, 0], bp, stride=stride)
    check(y, reference(x, None, None, wd, bd, wp, bp, stride, "relu", False, False), 1e-4)


@pytest.mark.parametrize("n, h, c, t", [(8, 7, 16, 6), (5, 4, 24, 4), (3, 14, 16, 1)])
def test_residual_bands_span_images(isa, n, h, c, t):
    """The residual's rows, read across an image's end within one band."""
    run_inverted(np.random.default_rng(n + h + c), n, h, h, c, t, c, 1)


@pytest.mark.parametrize("n, h, c, t, f, stride", [
    (1, 7, 160, 6, 160, 1), (1, 14, 96, 6, 160, 2), (1, 15, 40, 4, 24, 2), (2, 6, 64, 6, 64, 1),
    (3, 9, 24, 6, 24, 1), (1, 9, 8, 6, 40, 1)])
def test_small_images_split_the_expanded_channels(isa, n, h, c, t, f, stride):
    """Few pixels with an expansion (MobileNetV2's 7x7 blocks at N=1): the parts split the
    expanded channels, each expanding, filtering and projecting whole panels of its own, and
    the partial products are summed with the bias and the residual afterwards; E = 48 is one
    panel, which is not split."""
    run_inverted(np.random.default_rng(n * h + c + t), n, h, h, c, t, f, stride)


@pytest.mark.parametrize("act", ["relu", "relu6"])
def test_split_channels_sum_before_the_projections_activation(isa, act):
    """An activation after the projection (none in MobileNetV2, which the kernel allows) is
    applied to the summed partial products, not to each part's."""
    rng = np.random.default_rng(3)
    n, h, c, e, f = 1, 7, 64, 384, 64
    x = rng.standard_normal((n, h, h, c)).astype(np.float32)
    we, be, wd, bd, wp, bp = weights(rng, c, e, f)
    y = np.empty((n * h * h, f), np.float32)
    assert _native.block(x, we[0, 0], be, wd[:, :, :, 0], bd, wp[0, 0], bp, y,
                         ("relu6", "relu6", act), 1, True)
    z = reference(x, we, be, wd, bd, wp, bp, 1, "relu6", True, True)  # (N, H, W, F)
    z = np.maximum(z, 0) if act == "relu" else np.clip(z, 0, 6)
    check(y.reshape(z.shape), z, 1e-4)
