"""The `pointwise` program: main(argv) -> int, one clean error line, and python -m pointwise."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

import pointwise as pw
from pointwise.cli import main
from pointwise.cost import conv_cost
from pointwise.explain import random_filter, random_input

TUTORIAL_X = [[[1, 2], [3, 4], [5, 6]], [[7, 8], [9, 10], [11, 12]], [[13, 14], [15, 16], [17, 18]]]
TUTORIAL_Y = [[[5], [11], [17]], [[23], [29], [35]], [[41], [47], [53]]]


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_error(err: str, start: str = "expected ") -> None:
    """One `error:` line, maybe one `hint:` line, nothing else."""
    lines = err.splitlines()
    assert lines and lines[0].startswith(f"error: {start}"), err
    assert len(lines) == 1 or (len(lines) == 2 and lines[1].startswith("hint: ")), err
    assert "Traceback" not in err


def run_json(capsys, *argv: str) -> dict:
    code, out, err = run(capsys, "explain", "--json", "-", *argv)
    assert code == 0, err
    return json.loads(out)


def test_default_explain_prints_the_tutorial(capsys):
    code, out, err = run(capsys, "explain")
    assert code == 0 and err == ""
    lines = out.splitlines()
    pixels = [line for line in lines if line.startswith("pixel (")]
    assert len(pixels) == 9
    assert pixels[0] == "pixel (0,0): 1·1 + 2·2 = 5"
    assert pixels[1] == "pixel (0,1): 3·1 + 4·2 = 11"
    assert pixels[-1].endswith("= 53")
    assert "y = [[[5], [11], [17]], [[23], [29], [35]], [[41], [47], [53]]]" in lines
    # 2 weights, 9 pixels × 2 channels = 18 MACs; the 3×3 numbers come from conv_cost.
    c1 = conv_cost(2, 1, 1, input_size=3, bias=False)
    c3 = conv_cost(2, 1, 3, input_size=3, padding=1, bias=False)
    assert (c1.params, c1.macs) == (2, 18)
    assert f"{c1.params} params, {c1.macs} MACs" in out and "2 params, 18 MACs" in out
    assert f"{c3.params} params, {c3.macs} MACs" in out and "18 params, 162 MACs" in out


def test_json_round_trips_and_matches_the_operator(capsys):
    d = run_json(capsys)
    assert d["output"] == TUTORIAL_Y
    assert d["output"] == pw.conv1x1(d["input"], d["weight"], layout="HWC").tolist()
    assert d["cost"]["conv1x1"]["params"] == 2 and d["cost"]["conv1x1"]["macs"] == 18
    assert d["cost"]["conv3x3"] == conv_cost(2, 1, 3, input_size=3, padding=1,
                                             bias=False).as_dict()
    assert d["pixels"][0]["terms"] == [[1, 1], [2, 2]]


@pytest.mark.parametrize("fmt", ["npy", "json"])
def test_input_and_filter_from_files(capsys, tmp_path, fmt):
    x = np.arange(2 * 3 * 4).reshape(2, 3, 4) - 5
    w = np.array([[[[1, 0], [2, -1], [0, 3], [-2, 1]]]])  # (1, 1, 4, 2) HWIO
    for name, a in (("x", x), ("w", w)):
        if fmt == "npy":
            np.save(tmp_path / "x.npy" if name == "x" else tmp_path / "w.npy", a)
        else:
            (tmp_path / f"{name}.json").write_text(json.dumps(a.tolist()))
    d = run_json(capsys, "--input", str(tmp_path / f"x.{fmt}"),
                 "--filter", str(tmp_path / f"w.{fmt}"), "--bias", "1,-1")
    assert d["output"] == pw.conv1x1(x, w, [1, -1], layout="HWC").tolist()
    assert d["pixels_total"] == 2 * 3 * 2


def test_float_input_with_a_typed_bias(capsys, tmp_path):
    x = np.random.default_rng(0).standard_normal((2, 2, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "w.npy", np.ones((3, 2), np.float32))
    d = run_json(capsys, "--input", str(tmp_path / "x.npy"), "--filter",
                 str(tmp_path / "w.npy"), "--bias", "0.5,-1")
    assert d["dtype"] == "float32"
    expected = pw.conv1x1(x, np.ones((3, 2), np.float32), np.float32([0.5, -1]), layout="HWC")
    np.testing.assert_array_equal(np.array(d["output"], np.float32), expected)


def test_random_is_deterministic_and_equals_the_operator(capsys):
    argv = ("--random", "3x4x5", "--filters", "2", "--seed", "0")  # CxHxW; HWC in memory
    first, second = run_json(capsys, *argv), run_json(capsys, *argv)
    assert first == second
    x, w = np.array(first["input"]), np.array(first["weight"])
    assert x.shape == (4, 5, 3) and w.shape == (1, 1, 3, 2)
    np.testing.assert_array_equal(x, random_input((4, 5, 3), seed=0))
    np.testing.assert_array_equal(w, random_filter(x, 2, seed=0))
    assert first["output"] == pw.conv1x1(x, w, layout="HWC").tolist()
    assert run_json(capsys, "--random", "3x4x5", "--filters", "2", "--seed", "1") != first


@pytest.mark.parametrize("layout", ["CHW", "NHWC", "NCHW"])
def test_layouts_explain_the_same_example(capsys, layout):
    code, out, _ = run(capsys, "explain", "--layout", layout)
    assert code == 0
    assert "pixel (0,0): 1·1 + 2·2 = 5" in out  # with an "image 0 " prefix when batched
    assert ("OIHW" in out) == layout.upper().endswith("HW")


def test_large_input_is_truncated(capsys):
    code, out, _ = run(capsys, "explain", "--random", "8x64x64")
    assert code == 0
    assert len(out.splitlines()) < 60
    assert "… 4080 more pixel lines (4096 in all)" in out


def test_png_is_written_and_no_temp_files_remain(capsys, tmp_path):
    target = tmp_path / "explain.png"
    code, out, err = run(capsys, "explain", "--png", str(target))
    assert code == 0 and "pixel (0,0)" in out and str(target) in err
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert os.listdir(tmp_path) == ["explain.png"]


def write_bad_file(tmp_path, kind: str) -> list[str]:
    """Files that must each give one error line; returns the argv after `explain`."""
    if kind == "missing":
        return ["--input", str(tmp_path / "nope.npy"), "--filters", "1"]
    if kind == "corrupt npy":
        (tmp_path / "x.npy").write_bytes(b"\x93NUMPY not really")
        return ["--input", str(tmp_path / "x.npy"), "--filters", "1"]
    if kind == "pickled npy":
        np.save(tmp_path / "x.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
        return ["--input", str(tmp_path / "x.npy"), "--filters", "1"]
    if kind == "pickle as npy":
        (tmp_path / "x.npy").write_bytes(pickle.dumps([1, 2, 3]))
        return ["--input", str(tmp_path / "x.npy"), "--filters", "1"]
    if kind == "ragged json":
        (tmp_path / "x.json").write_text("[[[1, 2], [3]]]")
        return ["--input", str(tmp_path / "x.json"), "--filters", "1"]
    if kind == "broken json":
        (tmp_path / "w.json").write_text("[[[[1, 2]]]")
        return ["--filter", str(tmp_path / "w.json")]
    if kind == "strings json":
        (tmp_path / "x.json").write_text('[[["a", "b"]]]')
        return ["--input", str(tmp_path / "x.json"), "--filters", "1"]
    if kind == "wrong extension":
        (tmp_path / "x.txt").write_text("1 2 3")
        return ["--input", str(tmp_path / "x.txt"), "--filters", "1"]
    if kind == "tensorflow filter":
        (tmp_path / "w.json").write_text("[[[[1, 2]]]]")
        return ["--filter", str(tmp_path / "w.json")]
    if kind == "input without filter":
        (tmp_path / "x.json").write_text(json.dumps(TUTORIAL_X))
        return ["--input", str(tmp_path / "x.json")]
    if kind == "wrong bias count":
        return ["--bias", "1,2"]
    if kind == "bias not numbers":
        return ["--bias", "one"]
    if kind == "png folder is a file":
        (tmp_path / "x.txt").write_text("")
        return ["--png", str(tmp_path / "x.txt" / "dir.png")]
    if kind == "batch shape in HWC":
        return ["--random", "2x2x3x3"]
    raise AssertionError(kind)


BAD = ["missing", "corrupt npy", "pickled npy", "pickle as npy", "ragged json", "broken json",
       "strings json", "wrong extension", "tensorflow filter", "input without filter",
       "wrong bias count", "bias not numbers", "png folder is a file", "batch shape in HWC"]


@pytest.mark.parametrize("kind", BAD)
def test_bad_input_gives_one_error_line(capsys, tmp_path, kind):
    code, _, err = run(capsys, "explain", *write_bad_file(tmp_path, kind))
    assert code == 2
    assert_error(err)


def test_tensorflow_filter_message_suggests_the_fix(capsys, tmp_path):
    _, _, err = run(capsys, "explain", *write_bad_file(tmp_path, "tensorflow filter"))
    assert "(1, 1, 1, 2)" in err and "did you mean shape (1, 1, 2, 1)" in err


@pytest.mark.parametrize("kind", ["pickled npy", "pickle as npy"])
def test_pickles_are_never_loaded(capsys, tmp_path, kind):
    code, out, err = run(capsys, "explain", *write_bad_file(tmp_path, kind))
    assert code == 2 and out == ""
    assert "pickled Python objects, which pointwise never loads" in err


def test_unwritable_png_fails_before_printing(capsys, tmp_path):
    code, out, err = run(capsys, "explain", *write_bad_file(tmp_path, "png folder is a file"))
    assert code == 2 and out == "" and "is a file" in err


@pytest.mark.parametrize("argv", [["explain", "--random", "3x3"], ["explain", "--filters", "0"],
                                  ["explain", "--layout", "HW"], ["explain", "--layout", "chw"],
                                  ["explain", "--max-pix", "3"], ["nope"]])
def test_usage_errors_exit_2(capsys, argv):
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert_error(err, "")


def test_no_command_prints_help_and_exits_2(capsys):
    code, out, err = run(capsys)
    assert code == 2 and "explain" in err and out == ""


def test_version(capsys):
    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.strip() == f"pointwise {pw.__version__}"


def test_python_dash_m_pointwise_explain():
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    proc = subprocess.run([sys.executable, "-m", "pointwise", "explain"], capture_output=True,
                          text=True, encoding="utf-8", env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "pixel (0,0): 1·1 + 2·2 = 5" in proc.stdout
    assert "y = [[[5], [11], [17]], [[23], [29], [35]], [[41], [47], [53]]]" in proc.stdout
    bad = subprocess.run([sys.executable, "-m", "pointwise", "explain", "--input", "/no/such.npy",
                          "--filters", "1"], capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 2 and bad.stderr.startswith("error: expected a file for x")
    assert "Traceback" not in bad.stderr


def test_png_draws_the_bias(capsys, tmp_path):
    def width(path) -> int:  # the PNG's IHDR width: one more panel is a wider picture
        return int.from_bytes(path.read_bytes()[16:20], "big")

    plain, biased = tmp_path / "plain.png", tmp_path / "biased.png"
    assert main(["explain", "--png", str(plain)]) == 0
    assert main(["explain", "--bias", "7", "--png", str(biased)]) == 0
    capsys.readouterr()
    assert width(biased) == width(plain) + 240  # 2.4 inches at 100 dpi: the bias panel


def test_conv1x1_help_names_torch_tensors_and_jax_arrays():
    doc = " ".join(pw.conv1x1.__doc__.split())
    assert "torch tensors and JAX arrays" in doc and "type passed in" in doc
