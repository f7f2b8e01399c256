"""explain(): each written-out sum is the operator's output, and every count is cost.py's."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pointwise as pw
from pointwise.cost import conv_cost
from pointwise.explain import PixelLine, random_filter, random_input, tutorial_example
from pointwise.explain.trace import _agrees

TUTORIAL_Y = [[[5], [11], [17]], [[23], [29], [35]], [[41], [47], [53]]]


def written_sum(line: PixelLine) -> float:
    """The sum a pixel line writes out, recomputed here from its own terms."""
    return sum(a * b for a, b in line.terms) + (line.bias or 0)


def test_default_is_the_tutorial_example():
    t = pw.explain()
    assert t.output.tolist() == TUTORIAL_Y
    assert t.output.dtype.kind == "i"  # integers stay integers
    texts = [line.text() for line in t.lines]
    assert len(texts) == t.total_lines == 9
    assert texts[0] == "pixel (0,0): 1·1 + 2·2 = 5"
    assert texts[1] == "pixel (0,1): 3·1 + 4·2 = 11"
    assert texts[-1] == "pixel (2,2): 17·1 + 18·2 = 53"
    assert (t.input.shape, t.weight.shape, t.output.shape) == ((3, 3, 2), (1, 1, 2, 1), (3, 3, 1))


def test_costs_come_from_conv_cost():
    t = pw.explain()
    assert t.cost == conv_cost(2, 1, 1, input_size=3, bias=False)
    assert t.cost3x3 == conv_cost(2, 1, 3, input_size=3, padding=1, bias=False)
    # By hand: 2 weights; 9 pixels × 2 channels = 18 MACs; the 3×3 has 9× both.
    assert (t.cost.params, t.cost.macs) == (2, 18)
    assert (t.cost3x3.params, t.cost3x3.macs) == (18, 162)
    assert t.ratios() == {"params": 9.0, "macs": 9.0}


def test_text_shows_shapes_pixels_output_and_costs():
    text = pw.explain().to_text()
    lines = text.splitlines()
    assert "  input  x (3, 3, 2)  (H, W, C)" in lines
    assert "  filter w (1, 1, 2, 1)  HWIO (kh, kw, C, F)" in lines
    assert "  output y (3, 3, 1)  (H, W, F)" in lines
    assert sum(line.startswith("pixel (") for line in lines) == 9
    assert "pixel (1,1): 9·1 + 10·2 = 29" in lines
    assert "y = [[[5], [11], [17]], [[23], [29], [35]], [[41], [47], [53]]]" in lines
    assert "  this 1×1 conv:                      2 params, 18 MACs" in lines
    assert "  a 3×3 conv, same channels, pad 1:   18 params, 162 MACs" in lines
    assert "the 3×3 needs 9× the params and 9× the MACs" in text
    assert "more pixel lines" not in text


def test_bias_and_several_filters_are_named():
    x = [[[1, 2], [3, 4]]]  # (1, 2, 2) HWC
    w = [[1, -1], [2, 0]]  # (C, F) = (2, 2)
    t = pw.explain(x, w, bias=[10, -3])
    texts = [line.text() for line in t.lines]
    assert texts == [
        "pixel (0,0) f=0: 1·1 + 2·2 + 10 = 15",
        "pixel (0,0) f=1: 1·(-1) + 2·0 + (-3) = -4",
        "pixel (0,1) f=0: 3·1 + 4·2 + 10 = 21",
        "pixel (0,1) f=1: 3·(-1) + 4·0 + (-3) = -6",
    ]
    assert "+ b[f]" in t.formula
    assert t.cost == conv_cost(2, 2, 1, input_size=(1, 2), bias=True)
    assert t.cost.params == 6 and t.cost3x3.params == 2 * 2 * 9 + 2


@pytest.mark.parametrize("layout", ["HWC", "NHWC", "CHW", "NCHW"])
def test_every_layout_explains_the_same_numbers(layout):
    t = pw.explain(layout=layout)
    x, w = tutorial_example(layout)
    np.testing.assert_array_equal(t.output, pw.conv1x1(x, w, layout=layout))
    assert [line.value for line in t.lines] == [5, 11, 17, 23, 29, 35, 41, 47, 53]
    prefix = "image 0 " if layout.startswith("N") else ""
    assert t.lines[0].text() == prefix + "pixel (0,0): 1·1 + 2·2 = 5"
    assert t.weight_format.startswith("HWIO" if layout.endswith("C") else "OIHW")


def test_batches_are_explained_image_by_image():
    x = random_input((2, 2, 3, 4), layout="NCHW", seed=3)
    w = random_filter(x, 2, layout="NCHW", seed=3)
    t = pw.explain(x, w, layout="NCHW", max_pixels=100)
    assert t.total_lines == len(t.lines) == 2 * 2 * 3 * 2
    assert [line.image for line in t.lines[:12]] == [0] * 12
    assert t.lines[12].text().startswith("image 1 pixel (0,0) f=0:")
    for line in t.lines:
        assert written_sum(line) == line.value == t.output[line.image, line.filter, line.row,
                                                            line.col]


def test_max_pixels_truncates_lines_and_says_how_many_are_left():
    x = random_input((10, 10, 3))
    t = pw.explain(x, random_filter(x, 2), max_pixels=5)
    assert len(t.lines) == 5 and t.total_lines == 200
    assert "… 195 more pixel lines (200 in all)" in t.to_text()


def test_many_channels_truncate_the_terms_of_a_line():
    x = np.ones((1, 1, 20), np.int64)
    t = pw.explain(x, np.ones((20, 1), np.int64))
    assert t.lines[0].text(max_terms=3) == "pixel (0,0): 1·1 + 1·1 + 1·1 + … 17 more terms = 20"


def test_large_arrays_are_summarized_in_text():
    x = random_input((64, 64, 8))
    text = pw.explain(x, random_filter(x, 1)).to_text()
    assert len(text.splitlines()) < 60
    assert "32768 values, summarized" in text and "..." in text


def test_narrow_integers_are_explained_exactly():
    # int8 would wrap at 127: explain widens to int64 so the sums stay exact.
    x = np.full((1, 1, 2), 100, np.int8)
    t = pw.explain(x, np.full((1, 1, 2, 1), 100, np.int8))
    assert t.output.item() == 20000 and t.lines[0].value == 20000


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_floats_agree_with_the_operator(dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4, 37)).astype(dtype)
    w = rng.standard_normal((37, 3)).astype(dtype)
    b = rng.standard_normal(3).astype(dtype)
    t = pw.explain(x, w, b, max_pixels=1000)
    assert len(t.lines) == 36 and t.output.dtype == dtype
    np.testing.assert_array_equal(t.output, pw.conv1x1(x, w, b, layout="HWC"))
    tol = 1e-2 if dtype == np.float16 else 1e-5
    for line in t.lines:
        assert written_sum(line) == pytest.approx(line.value, rel=tol, abs=tol)


def test_the_invariant_check_can_fail():
    good = pw.explain().lines[0]
    assert _agrees(good, np.dtype(np.int64))
    bad = PixelLine(None, 0, 0, 0, good.terms, None, good.value + 1)
    assert not _agrees(bad, np.dtype(np.int64))
    off = PixelLine(None, 0, 0, 0, ((0.1, 3.0),), None, 0.31)
    assert not _agrees(off, np.dtype(np.float32))


@settings(max_examples=40, deadline=None)
@given(
    layout=st.sampled_from(["HWC", "NHWC", "CHW", "NCHW"]),
    h=st.integers(1, 3), w=st.integers(1, 3), c=st.integers(1, 5), f=st.integers(1, 3),
    seed=st.integers(0, 2**16), with_bias=st.booleans(),
)
def test_written_sums_rebuild_the_whole_output(layout, h, w, c, f, seed, with_bias):
    batched = layout.startswith("N")
    x = random_input((2, h, w, c) if batched else (h, w, c), layout=layout, seed=seed)
    wt = random_filter(x, f, layout=layout, seed=seed)
    bias = np.arange(f) - 1 if with_bias else None
    t = pw.explain(x, wt, bias, layout=layout, max_pixels=10**6)
    assert len(t.lines) == t.total_lines == t.output.size
    rebuilt = np.zeros(t.output.shape, np.int64)
    for line in t.lines:
        at = (line.row, line.col, line.filter) if layout.endswith("C") else (
            line.filter, line.row, line.col)
        rebuilt[(line.image, *at) if batched else at] = written_sum(line)
    np.testing.assert_array_equal(rebuilt, pw.conv1x1(x, wt, bias, layout=layout))


def test_to_dict_round_trips_through_json():
    x = random_input((2, 3, 4), seed=1)
    t = pw.explain(x, random_filter(x, 2, seed=1), [1, 2], max_pixels=4)
    d = json.loads(json.dumps(t.to_dict()))
    assert d == t.to_dict()
    np.testing.assert_array_equal(np.array(d["output"]), t.output)
    assert d["shapes"] == {"input": [2, 3, 4], "weight": [1, 1, 4, 2], "bias": [2],
                           "output": [2, 3, 2]}
    assert d["cost"]["conv1x1"]["macs"] == t.cost.macs == 2 * 3 * 4 * 2
    assert d["cost"]["conv3x3"]["params"] == t.cost3x3.params
    assert len(d["pixels"]) == 4 and d["pixels_total"] == 12
    assert d["pixels"][0]["value"] == t.output[0, 0, 0]


def test_random_helpers_are_deterministic_and_readable():
    a, b = random_input((4, 5, 3), seed=7), random_input((4, 5, 3), seed=7)
    np.testing.assert_array_equal(a, b)
    assert a.min() >= 0 and a.max() <= 9 and a.dtype.kind == "i"
    assert not np.array_equal(a, random_input((4, 5, 3), seed=8))
    wt = random_filter(a, 2, seed=7)
    assert wt.shape == (1, 1, 3, 2) and wt.min() >= -3 and wt.max() <= 3
    assert random_input((4, 5, 3), layout="NCHW").shape == (1, 3, 4, 5)
    assert random_filter(np.zeros((3, 4, 5)), 2, layout="CHW").shape == (2, 3, 1, 1)
    with pytest.raises(ValueError, match=r"HxWxC shape for layout 'HWC', but got 2x4x5x3"):
        random_input((2, 4, 5, 3))


def test_bad_filters_get_the_operators_message():
    with pytest.raises(ValueError, match=r"did you mean shape \(1, 1, 2, 1\)"):
        pw.explain(weight=[[[[1, 2]]]])  # the tutorial's TensorFlow filter


def test_png_is_written_atomically(tmp_path):
    path = pw.explain().to_png(tmp_path / "trace.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["trace.png"]
    with pytest.raises(FileNotFoundError, match="existing folder"):
        pw.explain().to_png(tmp_path / "missing" / "trace.png")


def test_explaining_loads_neither_torch_nor_matplotlib():
    code = ("import sys, pointwise as pw; pw.explain().to_text(); "
            "print([m for m in ('torch', 'matplotlib') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
