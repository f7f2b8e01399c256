"""pointwise.training.train: learns digits, resumes bitwise, and its train subcommand."""

from __future__ import annotations

import argparse
import sys

import pytest
import torch

from pointwise.cli.train import add_parsers, main
from pointwise.training import checkpoint as ck
from pointwise.training.train import TrainConfig, build_model, train


def test_a_short_run_is_well_above_chance(tmp_path):
    r = train(TrainConfig(epochs=4), tmp_path, threads=1, log=lambda s: None, progress=False)
    assert r.test_accuracy > 0.8  # chance is 0.1; 20 default epochs reach ≥ 0.97
    state = ck.load(tmp_path / "checkpoint.pt")
    assert state["epoch"] == 4 and len(state["history"]) == 4
    assert state["config"]["model"] == "nin_digits" and len(state["split"]["test_index"]) == 450


def _weights(path):
    state = ck.load(path)
    return state["model"], state["optimizer"]["state"]


def test_interrupted_and_resumed_equals_uninterrupted_bitwise(tmp_path):
    cfg = TrainConfig(epochs=3, limit_batches=6, seed=7, optimizer="adamw")
    quiet = {"threads": 1, "log": lambda s: None, "progress": False}
    train(cfg, tmp_path / "a", **quiet)
    train(cfg, tmp_path / "b", stop_after_epochs=1, **quiet)  # "interrupted" after epoch 1
    assert ck.load(tmp_path / "b" / "checkpoint.pt")["epoch"] == 1
    torch.manual_seed(123)  # the resumed run must not depend on the process's RNG
    train(cfg, tmp_path / "b", resume=True, **quiet)
    (wa, oa), (wb, ob) = _weights(tmp_path / "a/checkpoint.pt"), _weights(
        tmp_path / "b/checkpoint.pt")
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k  # bitwise, BatchNorm running stats included
    for i in oa:
        assert all(torch.equal(oa[i][k], ob[i][k]) for k in oa[i])


def test_resume_refuses_changed_settings(tmp_path):
    cfg = TrainConfig(epochs=1, limit_batches=1)
    train(cfg, tmp_path, threads=1, log=lambda s: None, progress=False)
    with pytest.raises(ValueError, match=r"lr None \(checkpoint\) vs 0.5"):
        train(TrainConfig(epochs=1, limit_batches=1, lr=0.5), tmp_path, resume=True)


def test_model_factories_and_their_errors():
    m = build_model("pointwise.models.digits:resnet_digits", 1, 10)
    assert m(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
    with pytest.raises(ImportError, match="importable module"):
        build_model("no_such_module:f", 1, 10)
    with pytest.raises(ValueError, match="to define 'nope'"):
        build_model("pointwise.models.digits:nope", 1, 10)
    with pytest.raises(ValueError, match="unknown model 'nin_digit'"):
        build_model("nin_digit", 1, 10)


def test_config_is_checked():
    with pytest.raises(ValueError, match="--optimizer one of"):
        TrainConfig(optimizer="adam").validate()
    with pytest.raises(ValueError, match="--epochs ≥ 1, but got 0"):
        TrainConfig(epochs=0).validate()


def test_train_command_prints_progress_epochs_and_summary(tmp_path, capsys):
    argv = ["train", "nin_digits", "--epochs", "2", "--limit-batches", "3", "--threads", "1",
            "--out", str(tmp_path)]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert err == ""  # piped: no bar (its carriage returns are noise in a file)
    epochs = [line for line in out.splitlines() if line.startswith("epoch")]
    assert len(epochs) == 2 and all("test acc" in line for line in epochs)
    assert "done: nin_digits on digits, epoch 2/2" in out
    # --resume with the options left out takes them from the checkpoint; nothing left to do
    assert main(["train", "nin_digits", "--out", str(tmp_path), "--resume", "--quiet"]) == 0
    assert "resumed from" in capsys.readouterr().out
    assert main(["train", "nin_digits", "--out", str(tmp_path), "--resume", "--lr", "1"]) == 2
    assert "error: expected the checkpoint's settings" in capsys.readouterr().err


def test_progress_is_a_bar_on_a_terminal_and_nothing_with_quiet(tmp_path, capsys,
                                                                 monkeypatch):
    argv = ["train", "nin_digits", "--epochs", "1", "--limit-batches", "2", "--threads", "1"]
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert "epoch 1/1" in err and "loss=" in err and "img_s=" in err  # tqdm's live bar
    assert main([*argv, "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert err == "" and not any(line.startswith("epoch") for line in out.splitlines())
    assert "done: nin_digits" in out


def test_resume_with_more_epochs_extends_a_finished_run(tmp_path, capsys):
    argv = ["train", "nin_digits", "--limit-batches", "2", "--threads", "1", "--quiet",
            "--out", str(tmp_path)]
    assert main([*argv, "--epochs", "2"]) == 0
    first = ck.load(tmp_path / "checkpoint.pt")
    assert main([*argv, "--epochs", "3", "--resume"]) == 0
    out = capsys.readouterr().out
    assert "resumed from" in out and "extended to 3 epochs" in out and "epoch 3/3" in out
    state = ck.load(tmp_path / "checkpoint.pt")
    assert state["epoch"] == 3 and state["config"]["epochs"] == 3
    assert [h["epoch"] for h in state["history"]] == [1, 2, 3]
    assert state["history"][:2] == first["history"]
    # the one-cycle schedule spans the 3 epochs: 6 steps taken of 6, so it ends where a run
    # that was 3 epochs long from the start ends
    assert state["scheduler"]["total_steps"] == 6 and state["scheduler"]["last_epoch"] == 6
    # fewer epochs than done is refused; a changed setting other than epochs still is
    assert main([*argv, "--epochs", "2", "--resume"]) == 2
    assert "expected --epochs ≥ 3" in capsys.readouterr().err
    assert main([*argv, "--epochs", "4", "--resume", "--seed", "5"]) == 2
    assert "seed" in capsys.readouterr().err


def test_add_parsers_registers_the_three_commands():
    parser = argparse.ArgumentParser()
    add_parsers(parser.add_subparsers())
    args = parser.parse_args(["train", "m:f", "--optimizer", "sgd", "--distributed"])
    assert args.model == "m:f" and args.optimizer == "sgd" and args.distributed
    assert parser.parse_args(["export", "c.pt", "--onnx", "m.onnx"]).optimize is False
    assert parser.parse_args(["predict", "m.onnx"]).data is None


@pytest.mark.parametrize("name", ["mobilenet_digits", "resnet_digits"])
def test_small_mobilenet_and_resnet_variants_learn(name):
    cfg = TrainConfig(model=name, epochs=3)
    r = train(cfg, None, log=lambda s: None, progress=False)
    assert r.test_accuracy > 0.5  # 3 epochs; the default 20 give 96.7% and 98.7%


def test_resume_without_a_checkpoint_starts_afresh(tmp_path, capsys):
    argv = ["train", "nin_digits", "--epochs", "1", "--limit-batches", "2", "--quiet",
            "--out", str(tmp_path), "--resume"]
    assert main(argv) == 0
    assert "starting from epoch 0" in capsys.readouterr().out
    assert ck.load(tmp_path / "checkpoint.pt")["epoch"] == 1


def test_building_the_parser_does_not_import_torch():
    import subprocess
    import sys

    code = ("import argparse, sys; from pointwise.cli.train import add_parsers; "
            "add_parsers(argparse.ArgumentParser().add_subparsers()); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr
