"""Counts from formulas: params and MACs of conv layers."""

import pytest

import pointwise as pw
from pointwise.cost import (
    CONVENTION,
    MAC_SCOPE,
    Cost,
    conv_cost,
    conv_cost_for_output,
    linear_cost,
    norm_cost,
    param_cost,
    reduction_cost,
    total_cost,
)


def test_inception_5x5_reduction_example():
    # 28×28×192 input, 32 filters of 5×5: direct, and behind a 1×1 reduction to 16 channels.
    direct = conv_cost(192, 32, 5, input_size=28, padding=2, bias=False)
    reduce = conv_cost(192, 16, 1, input_size=28, bias=False)
    after = conv_cost(16, 32, 5, input_size=28, padding=2, bias=False)
    assert direct.macs == 120_422_400
    assert reduce.macs + after.macs == 12_443_648
    assert round(direct.macs / (reduce.macs + after.macs), 2) == 9.68


def test_tutorial_layer():
    c = pw.cost(2, 1, input_size=3)
    assert (c.weights, c.biases, c.params, c.macs, c.flops) == (2, 1, 3, 18, 36)
    assert c.output_elems == 9 and c.input_elems == 18
    assert c.bytes(4) == 4 * (18 + 3 + 9)


def test_groups_stride_padding_and_batch():
    c = conv_cost(64, 128, 1, input_size=(56, 56), stride=2, groups=4, batch=8)
    assert c.weights == 128 * 16 and c.macs == 8 * 28 * 28 * 128 * 16
    dw = conv_cost(32, 32, 3, input_size=112, padding=1, groups=32, bias=False)
    assert dw.params == 288 and dw.macs == 112 * 112 * 32 * 9
    assert conv_cost(2, 1, input_size=3, padding=1).output_elems == 25


def test_bad_arguments():
    with pytest.raises(ValueError, match="groups"):
        conv_cost(6, 4, groups=4)
    with pytest.raises(ValueError, match="fit"):
        conv_cost(3, 3, 5, input_size=2)
    with pytest.raises(ValueError, match="fit"):
        conv_cost(2, 1, 3, input_size=2)  # output size would be 0, not a 0-MAC layer
    with pytest.raises(ValueError, match="in_channels >= 0"):
        conv_cost(-1, 3)


def test_convention_is_stated():
    assert "multiply-add" in CONVENTION and "2 x MACs" in CONVENTION


# ------------------------------------------------------- layers beyond conv, and sums
def test_linear_is_a_1x1_conv_on_one_pixel():
    c = linear_cost(2048, 1000, batch=4)
    assert (c.weights, c.biases, c.macs) == (2048 * 1000, 1000, 4 * 2048 * 1000)
    assert linear_cost(8, 3, bias=False).params == 24
    assert c == conv_cost(2048, 1000, 1, batch=4)


def test_norm_and_parameter_only_layers_have_no_macs():
    assert norm_cost(64, elements=10).as_dict() == {
        "weights": 64, "biases": 64, "macs": 0, "input_elems": 10, "output_elems": 10,
        "params": 128, "flops": 0}
    assert norm_cost(64, affine=False).params == 0 and norm_cost(64, bias=False).params == 64
    assert param_cost([3, 4], input_elems=5, output_elems=6) == Cost(7, 0, 0, 5, 6)
    with pytest.raises(ValueError, match="num_features >= 0"):
        norm_cost(-1)
    assert "0 MACs" in MAC_SCOPE


@pytest.mark.parametrize("c, f, k, size, stride, pad, groups", [
    (3, 64, 7, 224, 2, 3, 1), (32, 32, 3, 112, 1, 1, 32), (256, 64, 1, 56, 2, 0, 1),
    (16, 8, (3, 5), (9, 11), 1, (1, 2), 4),
])
def test_cost_for_a_known_output_size_equals_conv_cost(c, f, k, size, stride, pad, groups):
    ref = conv_cost(c, f, k, input_size=size, stride=stride, padding=pad, groups=groups)
    out = (ref.output_elems // f) if isinstance(size, int) else None
    hw = (int(out**0.5),) * 2 if out is not None else (9, 11)
    assert conv_cost_for_output(c, f, k, input_size=size, output_size=hw, groups=groups) == ref


def test_total_and_reduction():
    a, b = conv_cost(4, 2, input_size=3), linear_cost(2, 5)
    t = total_cost([a, b])
    assert (t.weights, t.biases, t.macs) == (a.weights + b.weights, 7, a.macs + b.macs)
    assert total_cost([]) == Cost(0, 0, 0, 0, 0)
    r = reduction_cost(64, 64, 3, 64, input_size=56)  # a "reduction" that keeps 64 channels
    assert r.saved_macs == -56 * 56 * 64 * 64 and r.ratio < 1
    r = reduction_cost(256, 64, 3, 64, input_size=56, stride=2, bias=True)
    assert r.direct.macs == 28 * 28 * 64 * 256 * 9 and r.reduce.macs == 56 * 56 * 64 * 256
    assert r.conv.biases == 64 and r.weights_ratio == pytest.approx(
        (64 * 256 * 9) / (64 * 256 + 64 * 64 * 9))
    with pytest.raises(ValueError, match="reduce_channels"):
        reduction_cost(8, 8, 3, 0, input_size=4)
