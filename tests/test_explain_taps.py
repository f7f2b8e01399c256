"""explain_taps and `pointwise explain --kernel K`: a k×k conv as k² shifted 1×1 convs."""

from __future__ import annotations

import json

import numpy as np
import pytest

import pointwise as pw
from pointwise.cli import main
from pointwise.explain import explain_taps, random_filter, random_input


@pytest.mark.parametrize("layout", ["HWC", "NHWC", "CHW", "NCHW"])
@pytest.mark.parametrize("kernel, stride, dilation, padding", [
    (3, 1, 1, "same"), (2, 1, 1, "same"), (3, 2, 1, 1), (3, 1, 2, 2), (1, 1, 1, 0)])
def test_the_taps_add_up_to_conv2d(layout, kernel, stride, dilation, padding):
    x = random_input((2, 5, 6, 3) if layout.startswith("N") else (5, 6, 3), layout=layout,
                     seed=1)
    w = random_filter(x, 2, layout=layout, kernel=kernel, seed=2)
    t = explain_taps(x, w, [1, -1], layout=layout, stride=stride, dilation=dilation,
                     padding=padding)
    y = pw.conv2d(x, w, [1, -1], layout=layout, stride=stride, dilation=dilation,
                  padding=padding)
    np.testing.assert_array_equal(t.output, y)
    assert len(t.taps) == kernel * kernel
    np.testing.assert_array_equal(t.taps[-1].running + np.array([1, -1]).reshape(
        (-1, 1, 1) if layout in ("CHW", "NCHW") else (-1,)), y)
    for tap in t.taps:  # each partial is the 1×1 conv of its view
        cl = layout in ("HWC", "NHWC")
        w_ij = tap.weight if cl else tap.weight.T  # (C, F)
        np.testing.assert_array_equal(tap.partial, pw.conv1x1(tap.view, w_ij if cl else
                                                              w_ij.T, layout=layout))
    assert t.cost.macs == kernel * kernel * t.cost1x1.macs


def test_the_centre_tap_reads_x_itself_and_the_corners_read_zeros():
    t = explain_taps()
    centre, corner = t.taps[4], t.taps[0]
    assert centre.shift == (0, 0) and corner.shift == (-1, -1)
    np.testing.assert_array_equal(centre.view, t.input)
    assert (corner.view[0] == 0).all() and (corner.view[:, 0] == 0).all()


def test_cli_kernel_3_writes_nine_taps(capsys):
    assert main(["explain", "--kernel", "3"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("3×3 convolution as 9 1×1 convolutions on shifted views")
    assert out.count("\ntap (") == 9 and "sum so far" in out
    x = np.arange(1, 19).reshape(3, 3, 2)  # the tutorial's input
    y = pw.conv2d(x, random_filter(x, 1, kernel=3), padding=1, layout="HWC")
    assert f"y = {y.tolist()}".replace(" ", "") in out.replace(" ", "")
    assert main(["explain", "--kernel", "3", "--json", "-", "--random", "2x4x4", "--filters",
                 "2"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["kernel"] == [3, 3] and len(d["taps"]) == 9
    assert np.array(d["output"]).shape == (4, 4, 2)


def test_cli_kernel_errors(capsys, tmp_path):
    f = tmp_path / "w.npy"
    np.save(f, np.ones((1, 1, 2, 1), int))
    assert main(["explain", "--kernel", "3", "--filter", str(f)]) != 0
    assert "expected a 3×3 filter for --kernel 3, but got a 1×1 one" in capsys.readouterr().err
    assert main(["explain", "--kernel", "3", "--max-pixels", "2"]) != 0
    assert "expected --max-pixels without --kernel" in capsys.readouterr().err
