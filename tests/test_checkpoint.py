"""pointwise.training.checkpoint: atomic writes, weights_only loads, clear errors, SIGKILL."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from pointwise.training import checkpoint as ck


def test_round_trip_of_tensors_and_primitives(tmp_path):
    state = {"model": {"w": torch.arange(6.0).reshape(2, 3)}, "epoch": 3,
             "config": {"lr": 0.1, "name": "x", "limit": None}, "history": [{"a": 1.5}]}
    ck.save(tmp_path / "c.pt", state)
    back = ck.load(tmp_path / "c.pt")
    assert back["format"] == ck.FORMAT and back["epoch"] == 3 and back["config"] == state["config"]
    assert torch.equal(back["model"]["w"], state["model"]["w"])


def test_rng_states_round_trip():
    gen = torch.Generator().manual_seed(5)
    saved = ck.get_rng_state(gen)
    want = (torch.rand(3), np.random.rand(3), random.random(), torch.rand(3, generator=gen))
    torch.manual_seed(99), np.random.seed(99), random.seed(99), gen.manual_seed(99)
    ck.set_rng_state(saved, gen)
    got = (torch.rand(3), np.random.rand(3), random.random(), torch.rand(3, generator=gen))
    assert torch.equal(want[0], got[0]) and np.array_equal(want[1], got[1])
    assert want[2] == got[2] and torch.equal(want[3], got[3])


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "c.pt"
    ck.save(path, {"w": torch.randn(100)})
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ValueError, match="truncated or corrupted"):
        ck.load(path)


def test_foreign_checkpoint_is_a_clear_error(tmp_path):
    torch.save({"state_dict": {"w": torch.zeros(1)}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match=r"expected a pointwise checkpoint.*state_dict"):
        ck.load(tmp_path / "other.pt")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ck.load(tmp_path / "missing.pt")


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch EVIL_RAN",))


def test_arbitrary_objects_are_never_unpickled(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save({"format": ck.FORMAT, "version": ck.VERSION, "x": _Evil()}, "evil.pt")
    with pytest.raises(ValueError, match="other Python objects"):
        ck.load("evil.pt")
    assert not (tmp_path / "EVIL_RAN").exists()


def test_a_failed_write_keeps_the_last_good_checkpoint(tmp_path):
    path = tmp_path / "c.pt"
    ck.save(path, {"epoch": 1})
    with pytest.raises(Exception):  # noqa: B017 - any failure mid-write
        ck.save(path, {"epoch": 2, "bad": lambda: 0})  # a lambda cannot be pickled
    assert ck.load(path)["epoch"] == 1
    assert list(tmp_path.iterdir()) == [path]  # and no temporary file left behind


def test_stale_temps_are_removed(tmp_path):
    path = tmp_path / "checkpoint.pt"
    (tmp_path / ".checkpoint.pt.abc.tmp").write_bytes(b"half")
    (tmp_path / "keep.txt").write_text("x")
    assert [p.name for p in ck.remove_stale_temps(path)] == [".checkpoint.pt.abc.tmp"]
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_sigkill_at_random_moments_never_loses_the_checkpoint(tmp_path):
    """Start training with one-step epochs (a checkpoint every few ms), SIGKILL it, check
    the checkpoint loads, resume, kill again. Half the kills wait for a temporary file to
    appear, so they land in the middle of a write."""
    out = tmp_path / "run"
    path = out / "checkpoint.pt"
    data = tmp_path / "tiny.npz"  # not digits: skipping scikit-learn's import saves ~1 s a start
    gen = np.random.default_rng(0)
    np.savez(data, x=gen.random((64, 8, 8, 1), dtype=np.float32), y=np.arange(64) % 10)
    cmd = [sys.executable, "-m", "pointwise.cli.train", "train", "nin_digits", "--data",
           str(data), "--epochs", "100000", "--batch-size", "16", "--limit-batches", "1",
           "--threads", "1", "--out", str(out), "--quiet"]
    rng = random.Random(0)
    kills, mid_write, last_epoch = 10, 0, 0
    deadline = time.monotonic() + 90
    for i in range(kills):
        proc = subprocess.Popen(cmd + (["--resume"] if i else []),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            before = path.stat().st_mtime_ns if path.exists() else 0
            while not (path.exists() and path.stat().st_mtime_ns != before):
                assert proc.poll() is None, proc.stderr.read().decode()
                assert time.monotonic() < deadline, "training never wrote a checkpoint"
                time.sleep(0.005)
            if i % 2:  # wait for a write to begin, then kill within it
                t = time.monotonic()
                while not list(out.glob(".checkpoint.pt.*.tmp")) and time.monotonic() - t < 1:
                    pass
                time.sleep(rng.uniform(0, 0.002))
            else:
                time.sleep(rng.uniform(0, 0.1))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        mid_write += bool(list(out.glob(".checkpoint.pt.*.tmp")))
        state = ck.load(path)  # the test: it always loads
        assert state["epoch"] >= last_epoch
        last_epoch = state["epoch"]
    print(f"{kills} kills, {mid_write} mid-write, reached epoch {last_epoch}")
    assert mid_write >= 1, "no kill landed during a write; the test did not test anything"
    assert last_epoch > kills  # every resumed run made progress


def _tensor_offsets(path):
    """Byte ranges of every tensor's data inside a torch.save zip: (start, size) each."""
    import zipfile

    with zipfile.ZipFile(path) as z:
        infos = [i for i in z.infolist() if "/data/" in i.filename and i.file_size]
    out = []
    raw = path.read_bytes()
    for info in infos:  # stored uncompressed: the data follows its local header
        name_len, extra_len = np.frombuffer(raw[info.header_offset + 26:
                                                info.header_offset + 30], "<u2")
        out.append((info.header_offset + 30 + int(name_len) + int(extra_len), info.file_size))
    return out


def test_a_bit_flipped_tensor_is_refused(tmp_path):
    """Every bit of a small tensor's bytes, flipped one at a time, is refused with a clear
    error: torch's reader checks no CRC, so the state's checksum is what sees it."""
    path = tmp_path / "c.pt"
    ck.save(path, {"model": {"w": torch.arange(4.0)}, "epoch": 3})
    (start, size), = _tensor_offsets(path)
    assert size == 16
    good = path.read_bytes()
    for bit in range(8 * size):
        bad = bytearray(good)
        bad[start + bit // 8] ^= 1 << (bit % 8)
        path.write_bytes(bytes(bad))
        with pytest.raises(ValueError, match="recorded checksum"):
            ck.load(path)
    path.write_bytes(good)
    assert torch.equal(ck.load(path)["model"]["w"], torch.arange(4.0))


def test_an_edited_primitive_is_refused_and_the_digest_sees_types_and_order():
    a = {"w": torch.zeros(2), "lr": 0.1, "name": "x", "n": [1, 2]}
    variants = [{**a, "lr": 0.1000001}, {**a, "name": "y"}, {**a, "n": [2, 1]},
                {**a, "n": (1, 2, 3)}, {**a, "w": torch.zeros(2, dtype=torch.float64)},
                {**a, "w": torch.zeros(1, 2)}, {**a, "n": [True, 2]}, {**a, "lr": None},
                dict(reversed(list(a.items())))]
    digests = {ck.digest(v) for v in variants}
    assert ck.digest(a) not in digests and len(digests) == len(variants)
    with pytest.raises(ValueError, match="only tensors and primitives.*set"):
        ck.digest({"x": {1, 2}})


def test_version_1_files_still_load_unchecked(tmp_path):
    """Checkpoints written before the checksum (version 1) load, with nothing to verify."""
    torch.save({"format": ck.FORMAT, "version": 1, "epoch": 2}, tmp_path / "v1.pt")
    assert ck.load(tmp_path / "v1.pt")["epoch"] == 2
    for version in (1.0, True, 3, "2"):
        torch.save({"format": ck.FORMAT, "version": version}, tmp_path / "v.pt")
        with pytest.raises(ValueError, match="expected checkpoint version 2"):
            ck.load(tmp_path / "v.pt")
