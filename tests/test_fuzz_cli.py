"""The command line under hostile arguments and files: every run ends in a documented exit
status, and a failure is one ``error:`` line (maybe one ``hint:`` line) on stderr: never a
traceback, a hang, an exit 4 (pointwise's own bug) or a crash.

Two profiles: the default keeps the whole file under a minute for CI; ``POINTWISE_FUZZ=long``
runs ~40× the examples (several minutes), for a fuzzing session.

The long-running commands are driven for real up to the point where the work would start:
``train``, ``export`` and ``bench`` get a stand-in for their worker (training, exporting,
timing), so every argument and file check of theirs runs, and ``predict`` and ``analyze``
run whole on small models. ``explain``, ``cost`` and ``models`` always run whole.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import string
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pointwise.cli import main
from pointwise.cli.errors import EXIT

LONG = os.environ.get("POINTWISE_FUZZ") == "long"
SCALE = 40 if LONG else 1
HANG_S = 60  # no single command may take longer (the slowest real ones take ~2 s)
ALLOWED = {EXIT["ok"], EXIT["failed"], EXIT["usage"], EXIT["missing"]}

pytestmark = pytest.mark.usefixtures("one_torch_thread")
torch = pytest.importorskip("torch")


class Hang(BaseException):
    """Raised by the alarm; a BaseException, so no handler of the program swallows it."""


@contextlib.contextmanager
def deadline(seconds: int) -> Iterator[None]:
    def ring(signum: int, frame: object) -> None:
        raise Hang(f"no exit after {seconds} s")

    old = signal.signal(signal.SIGALRM, ring)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def check(argv: list[str], capsys: pytest.CaptureFixture[str]) -> int:
    """Run ``argv``; assert the program's contract; return the exit status."""
    with deadline(HANG_S):
        code = main(argv)
    out, err = capsys.readouterr()
    assert code in ALLOWED, f"{argv}: exit {code}\n{err}"
    assert "Traceback" not in err and "weights_only=False" not in err, f"{argv}\n{err}"
    if code != 0:
        lines = err.splitlines()
        assert lines and lines[0].startswith("error: "), f"{argv}: {err!r}"
        rest = [line for line in lines[1:] if not line.startswith("error: failed verif")]
        assert len(rest) <= 1 and all(line.startswith("hint: ") for line in rest), \
            f"{argv}: {err!r}"
    elif "-" in argv and argv[argv.index("-") - 1] == "--json":
        def refuse(constant: str) -> None:
            raise AssertionError(f"{argv}: non-strict JSON constant {constant}")

        json.loads(out, parse_constant=refuse)
    return code


# ------------------------------------------------------------------------- hostile files
def write_files(folder: Path) -> dict[str, str]:
    """One of each kind of file a user could pass by mistake, or an attacker on purpose."""
    f: dict[str, Path] = {}
    np.save(folder / "ok.npy", np.arange(12).reshape(2, 3, 2))
    f["ok.npy"] = folder / "ok.npy"
    np.save(folder / "nan.npy", np.array([[[np.nan, np.inf]], [[-np.inf, 1.0]]], np.float32))
    f["nan.npy"] = folder / "nan.npy"
    (folder / "ok.json").write_text(json.dumps([[[1, 2], [3, 4]]]))
    f["ok.json"] = folder / "ok.json"
    (folder / "w.json").write_text(json.dumps([[[[1], [2]]]]))
    f["w.json"] = folder / "w.json"
    (folder / "deep.json").write_text("[" * 50_000 + "]" * 50_000)
    f["deep.json"] = folder / "deep.json"
    (folder / "nan.json").write_text("[[[NaN, Infinity], [-Infinity, 1e400]]]")
    f["nan.json"] = folder / "nan.json"
    with open(folder / "bomb.npy", "wb") as fh:
        np.lib.format.write_array_header_1_0(
            fh, {"descr": "<f8", "fortran_order": False, "shape": (10**6, 10**6, 10**6)})
    f["bomb.npy"] = folder / "bomb.npy"
    with open(folder / "neg.npy", "wb") as fh:  # a header no writer would produce
        fh.write(b"\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': False, "
                 b"'shape': (-1, 3), }" + b" " * 50 + b"\n")
    f["neg.npy"] = folder / "neg.npy"
    (folder / "empty.npy").write_bytes(b"")
    f["empty.npy"] = folder / "empty.npy"
    (folder / "garbage.onnx").write_bytes(bytes(range(256)) * 4)
    f["garbage.onnx"] = folder / "garbage.onnx"
    (folder / "empty.onnx").write_bytes(b"")
    f["empty.onnx"] = folder / "empty.onnx"
    (folder / "garbage.pt").write_bytes(b"PK\x03\x04" + bytes(200))
    f["garbage.pt"] = folder / "garbage.pt"
    torch.save({"weights": torch.zeros(2)}, folder / "foreign.pt")
    f["foreign.pt"] = folder / "foreign.pt"
    (folder / "folder.npy").mkdir()
    f["folder.npy"] = folder / "folder.npy"
    os.mkfifo(folder / "fifo.npy")
    f["fifo.npy"] = folder / "fifo.npy"
    (folder / "loop.npy").symlink_to(folder / "loop.npy")
    f["loop.npy"] = folder / "loop.npy"
    (folder / "ünï cödé.json").write_text("[[[1]]]")
    f["unicode.json"] = folder / "ünï cödé.json"
    f["missing.npy"] = folder / "missing.npy"
    f["no/such/dir/x.npy"] = folder / "no" / "such" / "dir" / "x.npy"
    return {k: str(v) for k, v in f.items()}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return write_files(tmp_path_factory.mktemp("hostile"))


@pytest.fixture
def stand_ins(monkeypatch: pytest.MonkeyPatch) -> None:
    """The workers of train, export and bench return at once (their checks still run)."""
    import pointwise.bench
    import pointwise.training.export
    import pointwise.training.train

    monkeypatch.setattr(pointwise.training.train, "train", lambda *a, **k: None)
    monkeypatch.setattr(pointwise.training.export, "export_onnx", lambda *a, **k: "exported")
    doc = {"text": "", "failed": [], "suite": "ops", "environment": {}, "rows": []}
    monkeypatch.setattr(pointwise.bench, "run", lambda *a, **k: dict(doc))
    for name in ("write_json", "write_png"):  # their writing is tested in test_bench.py
        monkeypatch.setattr(pointwise.bench.report, name, lambda path, doc: path)


# ------------------------------------------------------------------------- hostile values
NUMBERS = ["0", "-1", "1", "2", "3", "17", "99999999999999999999", "1e9", "nan", "inf", "-0",
           "0x10", "٣", " 4", "4 ", "", "1.5", "+2"]
SIZES = ["3x4x4", "1x2x3x3", "2x3", "3x100000x100000", "0x3x3", "3x4x4x4x4", "3×4×4", "3,4,4",
         "axbxc", "x", "-3x4x4", "999999999999x9x9", "1x1x1"]
WORDS = ["-", "--", "---", "-x", "--json", "=", "nchw", "NCHW", "HWC", "digits", "resnet18",
         "nin_digits", "nope", ":f", "a:", "no_such_mod:f", "*", "[", "\x00", "é" * 300,
         "x" * 5000, "5x5:32", "3:0", "0x5:32", "relu"]
OPTIONS = {
    "explain": ["--input", "--random", "--filter", "--filters", "--seed", "--layout", "--bias",
                "--max-pixels", "--json", "--png"],
    "cost": ["--input-size", "--conv", "--reduce", "--stride", "--count-bias", "--json"],
    "models": [],
    "analyze": ["--input-size", "--group-depth", "--savings", "--paper", "--json", "--csv"],
    "train": ["--data", "--epochs", "--batch-size", "--lr", "--optimizer", "--weight-decay",
              "--seed", "--limit-batches", "--out", "--resume", "--device", "--threads",
              "--quiet"],
    "export": ["--onnx", "--optimize", "--opset"],
    "predict": ["--data"],
    "bench": ["--suite", "--quick", "--threads", "--repeats", "--shapes", "--models", "--json",
              "--png", "--quiet"],
}
POSITIONAL = {"analyze": ["squeezenet1_1", "nin_digits", "resnet18", "nope", ":f"],
              "models": ["*", "res*", "[", "nope"], "train": ["nin_digits", "nope"],
              "export": [], "predict": []}
FIXED = ["--input-size", "192x28x28", "--conv", "5x5:32"]  # cost's required options


@st.composite
def argvs(draw: st.DrawFn, files: dict[str, str], folder: str) -> list[str]:
    command = draw(st.sampled_from(sorted(OPTIONS)))
    paths = [*sorted(files.values()), f"{folder}/out.json", f"{folder}/out.png", "-",
             f"{folder}/sub/out.json", folder]
    value = st.one_of(st.sampled_from(NUMBERS), st.sampled_from(SIZES),
                      st.sampled_from(WORDS), st.sampled_from(paths),
                      st.text(string.printable, max_size=12))
    argv = [command]
    if command in ("export", "predict"):
        argv.append(draw(st.sampled_from(paths)))
    elif POSITIONAL.get(command) and draw(st.booleans()):
        argv.append(draw(st.sampled_from(POSITIONAL[command])))
    if command == "cost" and draw(st.integers(0, 3)):
        argv += FIXED
    known = OPTIONS[command] or ["--help-me"]
    for _ in range(draw(st.integers(0, 5))):
        option = draw(st.one_of(st.sampled_from(known), st.sampled_from(WORDS)))
        argv.append(option)
        if draw(st.integers(0, 4)):
            argv.append(draw(value))
    return argv


def fuzz_settings(examples: int) -> settings:
    return settings(max_examples=examples * SCALE, deadline=None, derandomize=not LONG,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])


@fuzz_settings(120)
@given(data=st.data())
def test_any_command_line(data: st.DataObject, files: dict[str, str], stand_ins: None,
                          tmp_path_factory: pytest.TempPathFactory,
                          capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):
    folder = tmp_path_factory.mktemp("out")
    monkeypatch.chdir(folder)  # whatever a command writes lands in a scratch folder
    check(data.draw(argvs(files, str(folder))), capsys)


# -------------------------------------------------------------------- hostile file bytes
@st.composite
def npy_bytes(draw: st.DrawFn) -> bytes:
    """An .npy file: a header (sometimes a lie about shape or dtype), then some bytes."""
    shape = draw(st.lists(st.integers(0, 10**7), max_size=5))
    descr = draw(st.sampled_from(["<f4", "<f8", "<i8", "|b1", "<c8", "|O", "<U3", "<f2",
                                  ">f4", "|V8", "<m8[s]"]))
    dims = "".join(f"{s}," for s in shape)
    head = f"{{'descr': '{descr}', 'fortran_order': {draw(st.booleans())}, 'shape': ({dims}), }}"
    head += " " * (63 - (len(head) + 10) % 64) + "\n"
    body = draw(st.binary(max_size=2048))
    return b"\x93NUMPY\x01\x00" + len(head).to_bytes(2, "little") + head.encode() + body


nested = st.recursive(
    st.one_of(st.integers(-(2**70), 2**70), st.floats(), st.booleans(), st.none(),
              st.text(max_size=3)),
    lambda inner: st.lists(inner, max_size=4), max_leaves=60)


@fuzz_settings(80)
@given(kind=st.sampled_from(["npy", "json", "json-text", "onnx", "pt", "flipped-npy"]),
       data=st.data())
def test_any_file(kind: str, data: st.DataObject, tmp_path_factory: pytest.TempPathFactory,
                  stand_ins: None, capsys: pytest.CaptureFixture[str]):
    folder = tmp_path_factory.mktemp("file")
    if kind == "npy":
        path, blob = folder / "x.npy", data.draw(npy_bytes())
    elif kind == "flipped-npy":  # a valid file with one byte changed
        buf = folder / "valid.npy"
        np.save(buf, data.draw(st.sampled_from([np.ones((2, 3, 2)), np.arange(6.0)])))
        blob = bytearray(buf.read_bytes())
        i = data.draw(st.integers(0, len(blob) - 1))
        blob[i] ^= data.draw(st.integers(1, 255))
        path, blob = folder / "x.npy", bytes(blob)
    elif kind == "json":
        path, blob = folder / "x.json", json.dumps(data.draw(nested)).encode()
    elif kind == "json-text":
        path, blob = folder / "x.json", data.draw(st.binary(max_size=300))
    elif kind == "onnx":
        path, blob = folder / "x.onnx", data.draw(st.binary(max_size=600))
    else:
        path, blob = folder / "x.pt", data.draw(st.binary(max_size=600))
    path.write_bytes(blob)
    if kind in ("onnx", "pt"):
        commands = [["predict", str(path)], ["export", str(path), "--onnx",
                                             str(folder / "y.onnx")]]
    else:
        commands = [["explain", "--input", str(path), "--filters", "2", "--json", "-"],
                    ["explain", "--filter", str(path)],
                    ["explain", "--input", str(path), "--filter", str(path), "--layout",
                     "NCHW"]]
    for argv in commands:
        check(argv, capsys)


def test_the_fuzzers_reach_success_and_every_failure_kind(files: dict[str, str],
                                                          capsys: pytest.CaptureFixture[str],
                                                          stand_ins: None):
    """The contract above is not checked only on failures: these succeed, as they should."""
    assert check(["explain", "--input", files["ok.npy"], "--filters", "1"], capsys) == 0
    assert check(["explain", "--input", files["nan.json"], "--filters", "1", "--json", "-"],
                 capsys) == 0
    assert check(["cost", *FIXED, "--json", "-"], capsys) == 0
    assert check(["explain", "--input", files["fifo.npy"], "--filters", "1"], capsys) == 2
    assert check(["explain", "--input", files["loop.npy"], "--filters", "1"], capsys) == 2
    assert check(["explain", "--input", files["neg.npy"], "--filters", "1"], capsys) == 2
