"""`pointwise compress`: a trained checkpoint's 1×1 convs replaced, scored, and written so
that `predict` and `export` take it."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("onnxruntime")

from pointwise.cli import main
from pointwise.training import checkpoint as ckpt_io
from pointwise.training.compress import compress_checkpoint
from pointwise.training.data import load as load_data
from pointwise.training.export import load_model, predict
from pointwise.training.train import TrainConfig, evaluate, train

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    train(TrainConfig(epochs=3), out, threads=1, log=lambda s: None, progress=False)
    return out / "checkpoint.pt"


def test_compress_writes_a_checkpoint_predict_and_export_take(checkpoint, tmp_path, capsys):
    out = tmp_path / "small"
    assert main(["compress", str(checkpoint), "--energy", "0.9", "--out", str(out),
                 "--threads", "1", "--json", str(tmp_path / "r.json")]) == 0
    text = capsys.readouterr().out
    state = ckpt_io.load(out / "checkpoint.pt")
    ranks = state["compressed"]["ranks"]
    assert ranks and state["compressed"]["energy"] == 0.9
    assert "optimizer" not in state and state["split"] == ckpt_io.load(checkpoint)["split"]
    # the accuracy it prints is the held-out split's, as predict and a fresh evaluate say
    model, _ = load_model(out / "checkpoint.pt")
    assert sum(isinstance(m, torch.nn.Module) and type(m).__name__ == "LowRankConv1x1"
               for m in model.modules()) == len(ranks)
    accuracy, correct, total = predict(out / "checkpoint.pt")
    data = load_data("digits", seed=0, split=state["split"])
    _, again = evaluate(model, torch.from_numpy(data.x_test), torch.from_numpy(data.y_test))
    assert again == pytest.approx(accuracy) and total == 450
    before = predict(checkpoint)[1]
    assert f"({before}/450 -> {correct}/450)" in text
    assert f"wrote {out / 'checkpoint.pt'}" in text
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["correct"] == [before, correct] and report["test_images"] == 450
    assert {la["name"]: la["rank"] for la in report["layers"] if la["replaced"]} == ranks
    for la in report["layers"]:  # the bound: a layer is replaced only at k ≤ its break-even
        assert len(la["spectrum"]) == la["out_channels"]
        assert la["replaced"] == (la["rank"] <= la["break_even"])
    assert report["macs"][0] - report["macs"][1] == report["macs_1x1"][0] - report["macs_1x1"][1]
    onnx_path = tmp_path / "small.onnx"
    assert main(["export", str(out / "checkpoint.pt"), "--onnx", str(onnx_path),
                 "--optimize"]) == 0
    capsys.readouterr()
    assert predict(onnx_path)[1] == correct


def test_report_counts_and_refusals(checkpoint, tmp_path, capsys):
    result = compress_checkpoint(checkpoint, energy=0.5)
    r = result.report
    assert result.path is None and r.macs_after < r.macs_before
    assert result.macs[0] - result.macs[1] == r.macs_before - r.macs_after  # only 1×1s change
    asymmetric = compress_checkpoint(checkpoint, energy=0.5, asymmetric=True)
    assert asymmetric.report.ranks == r.ranks and asymmetric.macs == result.macs
    assert asymmetric.to_dict()["asymmetric"] and not result.to_dict()["asymmetric"]
    model, _ = load_model(checkpoint)
    assert result.params[0] == sum(p.numel() for p in model.parameters())
    out = tmp_path / "c"
    compress_checkpoint(checkpoint, out, rank=4, layers=["features.mlpconv2.*"])
    state = ckpt_io.load(out / "checkpoint.pt")
    assert set(state["compressed"]["ranks"]) <= {"features.mlpconv2.cccp1",
                                                 "features.mlpconv2.cccp2"}
    for argv, message in (
        ([str(out / "checkpoint.pt")], "was written by `pointwise compress`"),
        ([str(checkpoint), "--energy", "1.5"], "expected a share of variance 0 < E <= 1"),
        ([str(checkpoint), "--rank", "0"], "expected an integer K >= 1"),
        ([str(checkpoint), "--layers", "nope"], "match none"),
    ):
        assert main(["compress", *argv]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err
    assert main(["compress", str(checkpoint), "--energy", "0.9", "--rank", "3"]) == 2
    assert "not allowed with argument" in capsys.readouterr().err
    assert main(["train", "nin_digits", "--out", str(out), "--resume", "--epochs", "1",
                 "--quiet"]) == 2
    assert "holds no optimizer state" in capsys.readouterr().err
