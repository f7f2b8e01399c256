"""Counts from formulas: params and MACs of conv layers."""

import pytest

import pointwise as pw
from pointwise.cost import CONVENTION, conv_cost


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
