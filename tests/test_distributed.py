"""DDP on gloo: 2 processes on loopback take the same steps as 1 process with the same
global batch.

The model is nin_digits without BatchNorm: with BN each rank would normalise by the
statistics of its own half batch, which is a different computation from one process
normalising the whole batch (SyncBatchNorm would fix that, but torch has it for GPUs only).
SGD, not AdamW: Adam divides by sqrt(v), so a gradient entry that is ~0 turns float
rounding into a full-size step, and the two runs would drift apart for no real reason.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
import torch

from pointwise.training import checkpoint as ck
from pointwise.training.distributed import Context, all_mean, setup
from pointwise.training.train import TrainConfig, build_model, train

FACTORY = '''
from pointwise.models import create

def nin_no_bn(num_classes=10, in_channels=1):
    return create("nin_digits", num_classes=num_classes, in_channels=in_channels,
                  norm_layer=None)
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_ranks_equal_one_process_with_the_same_global_batch(tmp_path, monkeypatch):
    (tmp_path / "ddp_factory.py").write_text(FACTORY)
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = TrainConfig(model="ddp_factory:nin_no_bn", epochs=2, batch_size=32, lr=0.05,
                      optimizer="sgd", limit_batches=3, seed=3)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
           "--master_addr=127.0.0.1", f"--master_port={_free_port()}",
           "-m", "pointwise.cli.train", "train", cfg.model, "--data", "digits",
           "--epochs", "2", "--batch-size", "32", "--lr", "0.05", "--optimizer", "sgd",
           "--limit-batches", "3", "--seed", "3", "--threads", "1", "--quiet",
           "--out", str(tmp_path / "ddp"), "--distributed"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("done:") == 1  # rank 0 alone logs
    assert "2 process(es)" in proc.stdout

    train(cfg, tmp_path / "one", threads=1, log=lambda s: None, progress=False)
    ddp, one = (ck.load(tmp_path / d / "checkpoint.pt") for d in ("ddp", "one"))
    assert (ddp["world_size"], one["world_size"]) == (2, 1)
    torch.manual_seed(3)
    init = build_model(cfg.model, 1, 10).state_dict()  # the seeded start both runs share
    moved = gap = 0.0
    for k, w in one["model"].items():
        torch.testing.assert_close(ddp["model"][k], w, atol=1e-6, rtol=1e-5)
        moved = max(moved, float((w - init[k]).abs().max()))
        gap = max(gap, float((ddp["model"][k] - w).abs().max()))
    print(f"6 steps moved the weights by up to {moved:.2e}; DDP vs 1 process: {gap:.2e}")
    assert moved > 1e-3  # so the tolerance above is small next to what training did


def test_setup_outside_torchrun_says_how_to_start(monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(k, raising=False)
    with pytest.raises(ValueError, match="expected torchrun's environment.*torchrun"):
        setup()
    assert all_mean(Context(), 1.5, 2.0) == [1.5, 2.0]  # one process: nothing to reduce
