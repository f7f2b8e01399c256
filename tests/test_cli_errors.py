"""Every mistake a newcomer makes on the command line ends in one `error:` line (and maybe a
`hint:` line) on stderr with a documented exit status: never a traceback, never advice to
turn a safety check off. One test per mistake; their table is in the issue's note."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pointwise.cli import main
from pointwise.cli.errors import EXIT

torch = pytest.importorskip("torch")


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_error(result: tuple[int, str, str], code: int, *fragments: str) -> str:
    """Exit ``code``, nothing on stdout, one error line and at most one hint line."""
    got, out, err = result
    lines = err.splitlines()
    assert got == code, (got, err)
    assert out == "", out
    assert lines and lines[0].startswith("error: "), err
    assert len(lines) == 1 or (len(lines) == 2 and lines[1].startswith("hint: ")), err
    for bad in ("Traceback", "weights_only=False", "allow_pickle=True"):
        assert bad not in err, err
    for fragment in fragments:
        assert fragment in err, err
    return err


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A finished two-epoch run and its ONNX export."""
    out = tmp_path_factory.mktemp("runs") / "nin"
    assert main(["train", "nin_digits", "--epochs", "1", "--limit-batches", "2",
                 "--threads", "1", "--quiet", "--out", str(out)]) == 0
    assert main(["export", str(out / "checkpoint.pt"), "--onnx", str(out / "nin.onnx")]) == 0
    return out


# ------------------------------------------------------------------- the mistakes
def test_predict_of_a_missing_onnx(capsys):
    assert_error(run(capsys, "predict", "nosuch.onnx"), 2, "'nosuch.onnx' does not exist")


@pytest.mark.parametrize("damage", ["truncated", "empty", "bit-flipped", "text"])
def test_predict_of_a_damaged_onnx(capsys, run_dir, tmp_path, damage):
    blob = (run_dir / "nin.onnx").read_bytes()
    bad = {"truncated": blob[: len(blob) // 3], "empty": b"",
           "bit-flipped": bytes(b ^ 0xFF for b in blob[:64]) + blob[64:],
           "text": b"not a model\n"}[damage]
    path = tmp_path / "bad.onnx"
    path.write_bytes(bad)
    assert_error(run(capsys, "predict", path), 2, "onnxruntime could not load it")


def test_predict_of_an_onnx_for_other_images(capsys, tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 32, 32])])
    path = tmp_path / "other.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    assert_error(run(capsys, "predict", path), 2, "onnxruntime refused them")


def test_predict_of_a_run_folder_names_the_checkpoint(capsys, run_dir):
    err = assert_error(run(capsys, "predict", run_dir), 2, "is a folder")
    assert f"hint: did you mean '{run_dir / 'checkpoint.pt'}'?" in err


def test_export_of_an_onnx_file_as_the_checkpoint(capsys, run_dir, tmp_path):
    assert_error(run(capsys, "export", run_dir / "nin.onnx", "--onnx", tmp_path / "y.onnx"),
                 2, "is an ONNX model", "predict MODEL.onnx")
    renamed = tmp_path / "nin.pt"  # the same bytes under a checkpoint's name
    renamed.write_bytes((run_dir / "nin.onnx").read_bytes())
    assert_error(run(capsys, "export", renamed, "--onnx", tmp_path / "y.onnx"), 2,
                 "is an ONNX model")
    assert not (tmp_path / "y.onnx").exists()


def test_a_checkpoint_of_other_objects_is_refused_without_torchs_advice(capsys, tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": "pointwise.training.checkpoint", "version": 1,
                "x": np.dtype("float32")}, path)  # an object weights_only refuses
    assert_error(run(capsys, "predict", path), 2, "never loads")


def test_train_on_a_device_this_machine_lacks(capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the mistake cannot be made here")
    assert_error(run(capsys, "train", "nin_digits", "--device", "cuda"), EXIT["missing"],
                 "CUDA device", "--device cpu")
    assert_error(run(capsys, "train", "nin_digits", "--device", "gpu"), 2,
                 "expected --device like cpu")


def test_ctrl_c_during_train_exits_130_naming_the_last_checkpoint(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        # epochs enough that the run is still going when the signal comes, however fast
        # the machine
        [sys.executable, "-m", "pointwise", "train", "nin_digits", "--epochs", "1000000",
         "--limit-batches", "2", "--out", str(out), "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        # Ctrl-C as a terminal delivers it: a suite started in the background by a shell
        # without job control inherits SIGINT ignored, and so would the run (exit 0, or
        # no exit at all, instead of 130)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while not (out / "checkpoint.pt").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    lines = err.splitlines()
    assert lines[0].startswith(f"error: interrupted; the last checkpoint is {out}"), err
    assert "after epoch" in lines[0] and lines[1].startswith("hint: run the same command")
    assert len(lines) == 2 and "Traceback" not in err


@pytest.mark.parametrize("size", ["3x100000x100000", "100000x100000x100000"])
def test_explain_refuses_a_huge_random_input_before_allocating(capsys, size):
    assert_error(run(capsys, "explain", "--random", size), 2, "at most 16,777,216 values")


def test_explain_refuses_an_npy_whose_header_claims_a_huge_array(capsys, tmp_path):
    path = tmp_path / "bomb.npy"
    header = {"descr": "<f4", "fortran_order": False, "shape": (100000, 100000, 100000)}
    with open(path, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, header)
        fh.write(b"\0" * 64)
    assert_error(run(capsys, "explain", "--input", path, "--filters", "1"), 2,
                 "truncated or corrupted")


def test_explain_refuses_deep_json(capsys, tmp_path):
    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    assert_error(run(capsys, "explain", "--input", path, "--filters", "1"), 2,
                 "nested too deeply")


def test_explain_json_with_nan_and_inf_is_strict_json(capsys, tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, np.array([[[np.nan, 1.0], [np.inf, -np.inf]]], np.float32))
    code, out, _ = run(capsys, "explain", "--input", path, "--filters", "1", "--json", "-")
    assert code == 0

    def refuse(constant: str) -> None:
        raise AssertionError(f"non-strict JSON constant {constant}")

    d = json.loads(out, parse_constant=refuse)
    assert d["input"][0][0][0] == "NaN" and d["input"][0][1] == ["Infinity", "-Infinity"]


def test_conv1x1_names_the_input_channels():
    from pointwise.nn import Conv1x1

    with pytest.raises(ValueError, match=r"expected input \(1, 32, 8, 8\) to have 64 channels "
                                         r"for weight \(256, 64, 1, 1\), but got 32 "):
        Conv1x1(64, 256)(torch.randn(1, 32, 8, 8))


def test_a_missing_extra_names_what_to_install():
    code = ("import sys; sys.modules['torch'] = None; from pointwise.cli import main; "
            "sys.exit(main(['analyze', 'resnet50']))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == EXIT["missing"], proc.stderr
    lines = proc.stderr.splitlines()
    assert lines == ["error: this command needs torch, which is not installed",
                     "hint: install the 'torch' extra: pip install -e '.[torch]' in a clone "
                     "(make install EXTRAS=torch), or pip install 'pointwise-conv[torch]'"]


@pytest.mark.parametrize("argv, fragments", [
    (["analyze", "resnet50", "--input", "224x224x3"], ["--input-size 3x224x224"]),
    (["analyze", "resnet50", "--input-size", "224x224x3"], ["--input-size 3x224x224"]),
    (["analyze", "resnet50", "--format", "json"], ["--json PATH"]),
    (["cost", "--input", "28x28x192", "--conv", "5x5:32"], ["--input-size 192x28x28"]),
    (["cost", "--input-size", "192x28x28", "--conv", "5x5:32", "--bias"], ["--count-bias"]),
    (["train", "nin_digits", "--no-progress"], ["--quiet"]),
    (["analyze", "googlenet", "--group-dept", "1"], ["unrecognized arguments: --group-dept",
                                                      "did you mean --group-depth?"]),
    (["explain", "--layout", "nchw"], ["upper case", "use 'NCHW'"]),
    (["explain", "--max-pix", "3"], ["unrecognized arguments: --max-pix"]),
])
def test_one_name_one_meaning_and_no_abbreviations(capsys, argv, fragments):
    assert_error(run(capsys, *argv), 2, *fragments)


# ------------------------------------------------------------------------- ten more
def test_an_input_that_is_a_fifo_is_refused_without_blocking(capsys, tmp_path):
    path = tmp_path / "x.npy"
    os.mkfifo(path)
    assert_error(run(capsys, "explain", "--input", path, "--filters", "1"), 2,
                 "not one (a device, FIFO or socket)")


def test_an_npz_under_an_npy_name(capsys, tmp_path):
    np.savez(tmp_path / "x.npz", a=np.ones(3))
    (tmp_path / "x.npz").rename(tmp_path / "x.npy")
    assert_error(run(capsys, "explain", "--input", tmp_path / "x.npy", "--filters", "1"), 2,
                 "zip archive")


def test_explain_refuses_an_output_too_large_to_write_out(capsys):
    assert_error(run(capsys, "explain", "--random", "3x1000x1000", "--filters", "100"), 2,
                 "y (pixels x filters)")


@pytest.mark.parametrize("argv, fragment", [
    (["bench", "--threads", "0"], "positive integer"),
    (["train", "nin_digits", "--threads", "-1"], "positive integer"),
    (["train", "nin_digits", "--epochs", "0"], "--epochs ≥ 1"),
    (["train", "nin_digits", "--resume"], "--out DIR with --resume"),
    (["models", "xyz*"], "matches none"),
    (["bench", "--suite", "nope"], "invalid choice"),
])
def test_bad_values(capsys, argv, fragment):
    assert_error(run(capsys, *argv), 2, fragment)


def test_an_output_whose_folder_cannot_be_made(capsys, tmp_path):
    (tmp_path / "file").write_text("")
    assert_error(run(capsys, "cost", "--input-size", "192x28x28", "--conv", "5x5:32", "--json",
                     tmp_path / "file" / "x.json"), 2, "is a file")


def test_an_output_that_is_a_folder(capsys, run_dir, tmp_path):
    assert_error(run(capsys, "export", run_dir / "checkpoint.pt", "--onnx", tmp_path), 2,
                 "is a folder")


def test_predict_on_data_that_does_not_exist(capsys, run_dir):
    assert_error(run(capsys, "predict", run_dir / "checkpoint.pt", "--data", "nope.npz"), 2,
                 "'nope.npz' does not exist")


def test_a_truncated_checkpoint(capsys, run_dir, tmp_path):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes((run_dir / "checkpoint.pt").read_bytes()[:5000])
    assert_error(run(capsys, "export", path, "--onnx", tmp_path / "m.onnx"), 2,
                 "truncated or corrupted")


def test_a_closed_pipe_is_quiet():
    proc = subprocess.run(f"{sys.executable} -m pointwise explain --random 3x40x40 "
                          f"--max-pixels 5000 | head -c 10", shell=True, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr and proc.stderr == ""
