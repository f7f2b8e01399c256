"""pointwise.training.export: ONNX round trip through onnxruntime, and predict."""

from __future__ import annotations

import sys

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


# ----------------------------------------------------------- a checkpoint never runs code
EVIL = '''
import pathlib
pathlib.Path("EVIL_RAN").write_text(__name__)

def build(**kwargs):
    pathlib.Path("EVIL_BUILT").write_text("x")
    from pointwise.models import create
    return create("nin_digits", **kwargs)
'''


def _string_fields(obj, path=()):
    """Every place in a checkpoint that holds a str, as a key path."""
    if isinstance(obj, str):
        yield path
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _string_fields(v, (*path, k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _string_fields(v, (*path, i))


def _set(obj, path, value):
    for k in path[:-1]:
        obj = obj[k]
    obj[path[-1]] = value


def test_no_checkpoint_field_can_import_a_module(checkpoint, tmp_path, monkeypatch, capsys):
    """Each str field of a real checkpoint set to "evilmod:build", with ./evilmod.py beside
    it and the folder on sys.path as `python -m` would put it; the model's field also to
    "this:x" (the standard library's module that prints the Zen of Python). Neither
    predict, export nor train --resume imports it."""
    from pointwise.training import checkpoint as ck

    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "evilmod.py").write_text(EVIL)
    fields = list(_string_fields(ck.load(checkpoint)))
    assert ("config", "model") in fields and len(fields) >= 5
    runs = 0
    for field in fields:
        is_model = field == ("config", "model")
        for spec in ("evilmod:build", "this:x") if is_model else ("evilmod:build",):
            crafted = ck.load(checkpoint)
            _set(crafted, field, spec)
            (tmp_path / "run").mkdir(exist_ok=True)
            ck.save(tmp_path / "run" / "checkpoint.pt", crafted)  # a valid checksum: forged
            commands = [["predict", "run/checkpoint.pt"]]
            if is_model:
                commands += [["export", "run/checkpoint.pt", "--onnx", "out.onnx"],
                             ["train", "nin_digits", "--out", "run", "--resume", "--epochs",
                              "1", "--quiet"]]
            for argv in commands:
                code = main(argv)
                out, err = capsys.readouterr()
                if is_model:
                    assert code == 2, (argv, err)
                    assert argv[0] == "train" or "never chooses code to run" in err, err
                assert "Beautiful is better than ugly" not in out + err
                runs += 1
            assert "evilmod" not in sys.modules and "this" not in sys.modules, field
            assert not (tmp_path / "EVIL_RAN").exists(), field
    assert runs == len(fields) + 5


def test_a_factory_model_needs_the_users_own_model_option(checkpoint, tmp_path, monkeypatch,
                                                         capsys):
    """A checkpoint trained from a factory is rebuilt from the factory the user names, which
    is the only way module code runs; the checkpoint's name is ignored."""
    from pointwise.training import checkpoint as ck

    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "factory_for_export_test.py").write_text(EVIL.replace("EVIL_RAN", "IMPORTED"))
    crafted = ck.load(checkpoint)
    crafted["config"]["model"] = "somewhere_else:nothing"
    ck.save(tmp_path / "f.pt", crafted)
    assert main(["predict", "f.pt"]) == 2
    assert "--model PACKAGE.MODULE:FACTORY" in capsys.readouterr().err
    assert main(["predict", "f.pt", "--model", "factory_for_export_test:build"]) == 0
    assert "accuracy" in capsys.readouterr().out
    assert (tmp_path / "IMPORTED").exists() and (tmp_path / "EVIL_BUILT").exists()
    sys.modules.pop("factory_for_export_test", None)


def test_weights_must_fit_the_model_before_anything_is_allocated(checkpoint, tmp_path):
    """A forged class count of 10**12 is refused on the meta device, not allocated."""
    from pointwise.training import checkpoint as ck

    crafted = ck.load(checkpoint)
    crafted["data"]["num_classes"] = 10**12
    ck.save(tmp_path / "big.pt", crafted)
    with pytest.raises(ValueError, match="to fit its model, but got other shapes"):
        load_model(tmp_path / "big.pt")
    crafted["data"]["num_classes"] = "10"
    ck.save(tmp_path / "str.pt", crafted)
    with pytest.raises(ValueError, match=r"data.num_classes as an int >= 1.*'10'"):
        load_model(tmp_path / "str.pt")


def test_an_onnx_whose_split_has_negative_indices_is_refused(checkpoint, tmp_path, capsys):
    import json

    import onnx

    good = tmp_path / "m.onnx"
    export_onnx(checkpoint, good)
    proto = onnx.load(str(good))
    (prop,) = [p for p in proto.metadata_props if p.key == "pointwise.training.data"]
    for edit, match in (
        (lambda m: m["split"].update(test_index=[-1, -2, *m["split"]["test_index"][2:]]),
         "holds -2"),
        (lambda m: m["config"].update(seed="0"), "int seed"),
        (lambda m: m.update(split=[1, 2]), "int seed and a split"),
    ):
        meta = json.loads(prop.value)
        edit(meta)
        prop.value = json.dumps(meta)
        bad = tmp_path / "bad.onnx"
        bad.write_bytes(proto.SerializeToString())
        with pytest.raises(ValueError, match=match):
            predict(bad)
        assert main(["predict", str(bad)]) == 2 and capsys.readouterr().err.count("\n") == 1
    prop.value = "[" * 100_000 + "]" * 100_000  # deeper than the JSON parser recurses
    (tmp_path / "deep.onnx").write_bytes(proto.SerializeToString())
    with pytest.raises(ValueError, match="expected JSON"):
        predict(tmp_path / "deep.onnx")
