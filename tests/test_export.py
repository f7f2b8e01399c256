"""pointwise.training.export: ONNX round trip through onnxruntime, and predict."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
import onnxruntime as ort

from pointwise.cli.train import main
from pointwise.training.export import export_onnx, load_model, predict
from pointwise.training.train import TrainConfig, train


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    train(TrainConfig(epochs=3), out, threads=1, log=lambda s: None, progress=False)
    return out / "checkpoint.pt"


@pytest.mark.parametrize("optimize", [False, True])
def test_onnx_matches_torch_on_any_batch_size(checkpoint, tmp_path, optimize):
    path = tmp_path / "m.onnx"
    report = export_onnx(checkpoint, path, optimize=optimize)
    assert report.inputs == [("input", ["batch", 1, 8, 8])]
    assert report.outputs == [("logits", ["batch", 10])]
    assert set(report.max_abs_diff) == {"random", "test images"}
    assert ("BatchNorm folded" in report.optimized) == optimize
    model, _ = load_model(checkpoint)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for n in (1, 7):  # the batch axis is dynamic
        x = torch.randn(n, 1, 8, 8)
        got = session.run(None, {"input": x.numpy()})[0]
        with torch.no_grad():
            want = model(x).numpy()
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
        assert (got.argmax(1) == want.argmax(1)).all()


def test_predict_gives_the_same_accuracy_for_checkpoint_and_onnx(checkpoint, tmp_path, capsys):
    onnx_path = tmp_path / "m.onnx"
    assert main(["export", str(checkpoint), "--onnx", str(onnx_path), "--optimize"]) == 0
    out = capsys.readouterr().out
    assert "input  input: ['batch', 1, 8, 8]" in out and "output logits: ['batch', 10]" in out
    acc_ckpt, correct, total = predict(checkpoint)
    assert (acc_ckpt, total) == (predict(onnx_path)[0], 450) and acc_ckpt > 0.8
    history = torch.load(checkpoint, weights_only=True)["history"]
    assert acc_ckpt == pytest.approx(history[-1]["test_accuracy"])  # the trainer's figure
    assert main(["predict", str(onnx_path), "--data", "digits"]) == 0
    assert f"({correct}/450)" in capsys.readouterr().out


def test_export_of_a_foreign_file_fails_cleanly(tmp_path, capsys):
    bad = tmp_path / "x.pt"
    torch.save({"weights": torch.zeros(2)}, bad)
    assert main(["export", str(bad), "--onnx", str(tmp_path / "m.onnx")]) == 2
    assert "expected a pointwise checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists()
