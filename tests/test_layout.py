"""Every bad argument gets one clear error: "expected X, but got Y", with shapes and the fix."""

from __future__ import annotations

import re

import numpy as np
import pytest

import pointwise as pw
from pointwise.layout import Geometry, output_size

X = np.ones((1, 3, 3, 2))  # NHWC, 2 channels


def raises(exc, pattern, *args, **kwargs):
    with pytest.raises(exc) as info:
        pw.conv1x1(*args, **kwargs)
    msg = str(info.value)
    assert re.search(pattern, msg), msg
    assert "expected" in msg and "but got" in msg, msg
    return msg


def test_tutorial_tensorflow_filter_suggests_the_intended_shape():
    # The tutorial builds tf.constant([[[[1, 2]]]]): shape (1, 1, 1, 2) for a 2-channel input.
    x = np.ones((1, 3, 3, 2), np.float32)
    msg = raises(ValueError, r"\(1, 1, 2, F\)", x, np.array([[[[1, 2]]]], np.float32))
    assert "(1, 1, 1, 2)" in msg and "(1, 3, 3, 2)" in msg
    assert "did you mean shape (1, 1, 2, 1)" in msg and "[[[[1.0], [2.0]]]]" in msg


def test_pytorch_weight_with_channels_swapped_suggests_fix():
    msg = raises(ValueError, r"\(F, 2, 1, 1\)", np.ones((1, 2, 3, 3)), np.ones((2, 4, 1, 1)),
                 layout="NCHW")
    assert "did you mean shape (4, 2, 1, 1)" in msg


def test_kernel_not_1x1_is_rejected():
    msg = raises(ValueError, r"1×1 kernel.*3×3 kernel", X, np.ones((3, 3, 2, 4)))
    assert "(3, 3, 2, 4)" in msg
    raises(ValueError, r"1×1 kernel.*3×3", np.ones((1, 2, 5, 5)), np.ones((4, 2, 3, 3)),
           layout="NCHW")


def test_oihw_weight_in_nhwc_layout_points_to_transpose():
    msg = raises(ValueError, "looks like OIHW", X, np.ones((4, 2, 1, 1)))
    assert "transpose(2, 3, 1, 0)" in msg and "layout='NCHW'" in msg


def test_hwio_weight_in_nchw_layout_points_to_transpose():
    msg = raises(ValueError, "looks like HWIO", np.ones((2, 3, 3)), np.ones((1, 1, 2, 4)),
                 layout="CHW")
    assert "transpose(3, 2, 0, 1)" in msg and "layout='HWC'" in msg
    w = np.arange(8.0).reshape(1, 1, 2, 4)
    y = pw.conv1x1(np.ones((2, 3, 3)), w.transpose(3, 2, 0, 1), layout="CHW")  # the fix works
    assert y.shape == (4, 3, 3)


def test_unknown_layout_and_activation():
    raises(ValueError, "one of 'NHWC', 'HWC', 'NCHW', 'CHW'.*'NWHC'", X, np.ones((2, 1)),
           layout="NWHC")
    raises(ValueError, "upper case.*'NCHW'", X, np.ones((2, 1)), layout="nchw")
    msg = raises(ValueError, "'gelu'", X, np.ones((2, 1)), activation="gelu")
    assert "relu" in msg
    assert "did you mean 'relu6'" in raises(ValueError, "Relu6", X, np.ones((2, 1)),
                                             activation="Relu6")


def test_rank_mismatch_suggests_layout():
    msg = raises(ValueError, r"4-D x.*\(3, 3, 2\)", np.ones((3, 3, 2)), np.ones((2, 1)))
    assert "layout='HWC'" in msg
    assert "layout='NCHW'" in raises(ValueError, "3-D x", np.ones((1, 2, 3, 3)), np.ones((1, 2)),
                                     layout="CHW")


def test_channel_and_group_mismatches():
    raises(ValueError, r"weight of shape \(3, F\).*3 input channels", np.ones((1, 2, 2, 3)),
           np.ones((2, 4)))
    raises(ValueError, "divisible by groups=2", np.ones((1, 2, 2, 3)), np.ones((1, 4)), groups=2)
    raises(ValueError, "4 output channels.*groups=3", np.ones((1, 2, 2, 6)), np.ones((2, 4)),
           groups=3)
    raises(ValueError, r"\(2, F\).*4 input channels / 2 groups", np.ones((1, 2, 2, 4)),
           np.ones((4, 4)), groups=2)
    raises(ValueError, "groups >= 1", X, np.ones((2, 1)), groups=0)
    with pytest.raises(TypeError, match="groups to be an int"):
        pw.conv1x1(X, np.ones((2, 1)), groups=1.5)


def test_stride_and_padding_checks():
    raises(ValueError, "stride >= 1", X, np.ones((2, 1)), stride=0)
    raises(ValueError, "stride >= 1", X, np.ones((2, 1)), stride=(1, -2))
    raises(ValueError, "padding >= 0", X, np.ones((2, 1)), padding=-1)
    raises(ValueError, r"\(h, w\) pair", X, np.ones((2, 1)), stride=(1, 2, 3))
    with pytest.raises(TypeError, match="stride to hold ints"):
        pw.conv1x1(X, np.ones((2, 1)), stride=True)


def test_bias_length():
    msg = raises(ValueError, r"bias of shape \(4,\).*bias of shape \(3,\)", X, np.ones((2, 4)),
                 np.ones(3))
    assert "(2, 4)" in msg


def test_bad_dtypes():
    with pytest.raises(TypeError, match="bool"):
        pw.conv1x1(X > 0, np.ones((2, 1)))
    with pytest.raises(TypeError, match="complex128"):
        pw.conv1x1(X.astype(complex), np.ones((2, 1)))
    with pytest.raises(TypeError, match="floating inputs for activation='silu'"):
        pw.conv1x1(np.ones((1, 1, 1, 2), int), np.ones((2, 1), int), activation="silu")
    with pytest.raises(ValueError, match="rectangular"):
        pw.conv1x1([[[1, 2], [3]]], [[1], [2]], layout="HWC")


def test_weight_rank():
    msg = raises(ValueError, "3-D weight", X, np.ones((1, 1, 2)))
    assert "reshape(1, 1, 2, 1)" in msg


def test_backward_argument_checks():
    x, w = np.ones((1, 2, 2, 2)), np.ones((2, 3))
    with pytest.raises(ValueError, match=r"expected grad_out of shape \(1, 2, 2, 3\)"):
        pw.conv1x1_backward(np.ones((1, 2, 2, 2)), x, w)
    with pytest.raises(ValueError, match=r"expected y of shape"):
        pw.conv1x1_backward(np.ones((1, 2, 2, 3)), x, w, y=np.ones(3), activation="relu",
                            has_bias=False)
    with pytest.raises(ValueError, match="bias= .*silu"):
        pw.conv1x1_backward(np.ones((1, 2, 2, 3)), x, w, activation="silu")
    with pytest.raises(ValueError, match="has_bias=True"):
        pw.conv1x1_backward(np.ones((1, 2, 2, 3)), x, w, bias=np.ones(3), has_bias=False)


@pytest.mark.parametrize("size", range(0, 9))
@pytest.mark.parametrize("pad", range(0, 3))
@pytest.mark.parametrize("stride", range(1, 5))
def test_geometry_interior_is_exactly_the_pixels_that_read_input(size, pad, stride):
    g = Geometry.of(size, pad, stride)
    assert g.out == output_size(size, pad, stride) == (size + 2 * pad - 1) // stride + 1
    interior = [o for o in range(g.out) if 0 <= o * stride - pad < size]
    assert list(range(g.lo, g.lo + g.count)) == interior
    assert list(range(size)[g.in_slice()]) == [o * stride - pad for o in interior]


@pytest.mark.parametrize("order", [">", "<"])
@pytest.mark.parametrize("kind", ["f4", "f8", "i4", "u2"])
def test_either_byte_order_computes_the_same_values(order, kind):
    """Big-endian x with native weights (an array saved on another machine) is the same
    numbers, not a dtype mix; an out= in the other byte order names the byte order."""
    x = np.arange(24).reshape(1, 2, 3, 4)
    w = np.arange(8).reshape(4, 2)
    want = pw.conv1x1(x.astype(kind), w.astype(kind))
    got = pw.conv1x1(x.astype(order + kind), w.astype(kind), np.ones(2, order + kind))
    assert got.dtype.isnative and got.dtype == want.dtype
    np.testing.assert_array_equal(got, want + 1)
    if kind.startswith("f"):
        other = ">" if np.little_endian else "<"
        raises(ValueError, "byte order", x.astype(kind), w.astype(kind),
               out=np.empty(want.shape, other + kind))
