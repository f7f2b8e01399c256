"""Smoke test of ``pointwise bench --quick``: structure only, never time."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

from pointwise.bench import harness, peers, report, run
from pointwise.cli import bench as bench_cli


def test_import_pointwise_does_not_import_bench_or_torch() -> None:
    code = ("import sys, pointwise, pointwise.cli.bench; "
            "print(any(m == 'torch' or m.startswith('pointwise.bench.') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


def test_quick_ops_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    js, png = tmp_path / "out.json", tmp_path / "new" / "out.png"  # folders are created
    rc = bench_cli.main(["bench", "--suite", "ops", "--quick", "--repeats", "1",
                         "--shapes", "googlenet3a 28x28 192->16,toy",
                         "--json", str(js), "--png", str(png)])
    printed = capsys.readouterr().out
    assert rc == 0
    doc = json.loads(js.read_text())
    env = doc["environment"]
    assert env["threads"] == 2 and env["date"] and env["versions"]["numpy"]
    assert env["versions"]["torch"] and env["cpu"]["usable_cpus"] >= 1
    assert doc["missing"] == peers.missing()
    for name in ("jax", "tensorflow"):
        assert (name in doc["missing"]) == (importlib.util.find_spec(name) is None)
    assert "missing peers: " + (", ".join(doc["missing"]) or "none") in printed
    rows = doc["rows"]
    assert {r["shape"] for r in rows} == {"googlenet3a 28x28 192->16", "toy 3x3 2->1 N=1"}
    assert {r["mode"] for r in rows} == {"forward", "forward+bias+relu", "backward"}
    assert not doc["failed"]
    report.write_json(f"{tmp_path / 'runs'}/", doc)  # a trailing slash: a folder to create
    saved = list((tmp_path / "runs").glob("bench-ops-*.json"))
    assert len(saved) == 1 and json.loads(saved[0].read_text())["rows"] == rows
    for r in rows:
        assert r["verified"] and r["rel_err"] <= 1e-4, r
        for key in ("median_ms", "min_ms", "max_ms", "gflops", "pct_roof", "faults_per_call"):
            assert key in r, (key, r)
        assert r["min_ms"] <= r["median_ms"] <= r["max_ms"]
        assert r["layout"] in ("NHWC", "NCHW")
    assert all("vs_best_peer" in r for r in rows if r["library"] == "pointwise")
    for r in rows:  # tracemalloc sees NumPy's buffers only: no figure for torch and others
        numpy_based = r["library"] in ("pointwise", "numpy")
        assert ("peak_extra_mib" in r) == numpy_based, r
        if numpy_based:
            assert r["peak_extra_mib"] >= 0
    impls = {(r["impl"], r["layout"]) for r in rows if r["mode"] == "forward"}
    assert ("pointwise", "NHWC") in impls and ("torch channels_last", "NHWC") in impls
    assert ("numpy matmul", "NCHW") in impls
    if importlib.util.find_spec("onnxruntime"):
        assert ("onnxruntime", "NCHW") in impls
    if importlib.util.find_spec("matplotlib"):
        assert png.read_bytes()[:4] == b"\x89PNG"


def test_failed_verification_is_reported_not_timed(monkeypatch: pytest.MonkeyPatch) -> None:
    real = peers.forward

    def broken(*a: object, **k: object) -> list:
        impls = real(*a, **k)  # type: ignore[arg-type]
        impls[0].fn = lambda: None  # ours NHWC now returns nothing: must fail, not be timed
        return impls

    monkeypatch.setattr(peers, "forward", broken)
    doc = run("ops", quick=True, repeats=1, shapes="toy", say=lambda m: None)
    bad = [r for r in doc["rows"] if not r["verified"]]
    assert bad and all("median_ms" not in r for r in bad) and doc["failed"]
    assert "FAILED" in report.table(doc["rows"])


def test_bad_shapes_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_cli.main(["bench", "--shapes", "no-such-shape", "--quick"]) == 2
    assert "no-such-shape" in capsys.readouterr().err


def test_busy_machine_is_measured_again_and_the_quietest_attempt_kept(
        monkeypatch: pytest.MonkeyPatch) -> None:
    loads = iter([0.6, 0.3, 0.4])
    im = harness.Impl("x", "pointwise", "NHWC", "openblas", lambda: None, lambda y: 0.0)

    def fake(impls: list, *a: object) -> float:
        load = next(loads)
        for i in impls:
            i.samples, i.faults = [load], 0  # tag each attempt's samples with its load
        return load

    monkeypatch.setattr(harness, "sample", fake)
    assert harness.measure([im], 1, 0.0, 0.0, 0.0, retries=2) == 0.3
    assert im.samples == [0.3]
    loads = iter([0.05, 0.9])
    assert harness.measure([im], 1, 0.0, 0.0, 0.0, retries=2) == 0.05  # quiet: no re-run
    assert next(loads) == 0.9


def test_peak_memory_counts_numpy_temporaries_only_for_numpy_runtimes() -> None:
    import numpy as np

    ours = harness.Impl("a", "pointwise", "NHWC", "openblas",
                        lambda: np.ones(1 << 18).sum(), lambda y: 0.0, ok=True)  # 2 MiB temp
    other = harness.Impl("b", "torch", "NHWC", "torch", lambda: None, lambda y: 0.0, ok=True)
    harness.peak_memory([ours, other])
    assert ours.peak_bytes is not None and 2 * 2**20 <= ours.peak_bytes < 3 * 2**20
    assert other.peak_bytes is None


def test_quick_burst_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pointwise.bench.suites import burst, burst_machine
    from pointwise.kernels import native

    js = tmp_path / "burst.json"
    rc = bench_cli.main(["bench", "--suite", "burst", "--quick", "--repeats", "2",
                         "--json", str(js)])
    printed = capsys.readouterr().out
    assert rc == 0
    doc = json.loads(js.read_text())
    rows = doc["rows"]
    assert not doc["failed"] and {r["mode"] for r in rows} == {"bursts", "interleaved"}
    users = {"pointwise", "numpy matmul", "torch channels_last"}
    machine = native.ENABLED and len(burst_machine.cpus_for(2)) == 2
    assert {r["impl"] for r in rows} == users | ({burst.MACHINE} if machine else set())
    assert {r["impl"] for r in rows if r["mode"] == "interleaved"} == users
    for r in rows:
        assert r["verified"] and r["rel_err"] <= 1e-4, r
        g = r["rounds_gflops"]
        assert len(g) == 2 and all(v > 0 for v in g)
        ref = max(g) if r["mode"] == "bursts" else r["steady_gflops"]
        assert r["flagged"] == [i for i, v in enumerate(g) if v < burst.FLAG * ref * (1 - 1e-9)]
        assert f"{r['impl']:<20}" in printed
    ours = next(r for r in rows if r["mode"] == "bursts" and r["library"] == "pointwise")
    assert len(ours["vs_numpy"]) == 2 and len(ours["first_gflops"]) == 2
    assert ("vs_machine" in ours) == machine and len(ours.get("vs_machine", [0] * 2)) == 2
    for r in rows:
        if r["mode"] == "interleaved":  # the cold steady state, and each round over it
            assert r["cold_gflops"] > 0 and len(r["vs_cold"]) == 2
    assert len(ours["waited_ms"]) == 2 and min(ours["waited_ms"]) >= 0
    assert "flagged" in printed and "÷ steady" in printed


def test_machine_burst_follows_pointwise_in_the_same_window(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from pointwise.bench.suites import burst

    log: list[str] = []
    monkeypatch.setattr(burst.time, "sleep", lambda s: log.append(f"sleep {s:g}"))

    def impl(name: str, library: str) -> harness.Impl:
        return harness.Impl(name, library, "NHWC", library, lambda: log.append(name),
                            lambda y: 0.0, ok=True)

    ours, numpy = impl("pointwise", "pointwise"), impl("numpy matmul", "numpy")
    machine = impl(burst.MACHINE, "machine")
    special = {burst.MACHINE: lambda calls: (log.append("machine burst"), [1.0] * calls)[1]}
    out, _ = burst._bursts([ours, numpy, machine], 2, 0.3, special)
    assert all(len(out[n]) == 2 for n in ("pointwise", "numpy matmul", burst.MACHINE))
    steps = [e for i, e in enumerate(log) if i == 0 or e != log[i - 1]]  # runs of calls as one
    pair = ["sleep 0.3", "pointwise", f"sleep {burst.ADJACENT_S:g}", "machine burst"]
    assert steps == [*pair, "sleep 0.3", "numpy matmul", "sleep 0.3", "numpy matmul", *pair]
    log.clear()  # without pointwise the machine's burst gets its own idle
    burst._bursts([numpy, machine], 1, 0.3, special)
    assert [e for e in log if e.startswith(("sleep", "machine"))] == [
        "sleep 0.3", "sleep 0.3", "machine burst"]


def test_burst_report_marks_every_flagged_round() -> None:
    from pointwise.bench.suites import burst

    row = {"problem": "p | bursts", "mode": "bursts", "impl": "pointwise", "verified": True,
           "flops": 1e8, "rounds_gflops": [100.0, 80.0, 95.0], "first_gflops": [50.0] * 3,
           "best_gflops": 100.0, "flagged": [1], "vs_numpy": [1.5, 1.1, 1.4],
           "waited_ms": [0.0, 12.5, 0.0]}
    out = burst.text([row])
    assert "flagged 1/3" in out and " 80!" in out and " 95 " in out and "(min 1.10)" in out
    assert "waited for a CPU" in out and "12.5" in out
    assert "waited for a CPU" not in burst.text([{**row, "waited_ms": [0.0, 0.2, 0.0]}])
    out = burst.text([{**row, "vs_machine": [0.95, 0.62, 1.0]}])
    assert "÷ the machine, timed right after" in out and "(min 0.62)" in out
    inter = {"problem": "p | interleaved", "mode": "interleaved", "impl": "pointwise",
             "verified": True, "flops": 1e8, "rounds_gflops": [80.0, 99.0],
             "steady_gflops": 100.0, "vs_steady": [0.8, 0.99], "flagged": [0],
             "cold_gflops": 85.0, "vs_cold": [0.94, 1.16]}
    out = burst.text([inter])
    assert "0.80!" in out and "cold      85" in out and "1.16" in out


def test_after_idle_sleeps_before_every_switch_of_runtime(
        monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    slept: list[tuple[float, int]] = []  # (seconds, calls made before the sleep)
    monkeypatch.setattr(harness.time, "sleep", lambda s: slept.append((s, len(calls))))
    a = harness.Impl("a", "pointwise", "NHWC", "pointwise", lambda: calls.append("a"),
                     lambda y: 0.0, ok=True)
    b = harness.Impl("b", "numpy", "NHWC", "openblas", lambda: calls.append("b"),
                     lambda y: 0.0, ok=True)
    harness.sample([a, b], 3, 0.0, 0.0, 0.0, idle_s=0.3)
    assert len(a.samples) == len(b.samples) == 3
    # rounds alternate the order (a b | b a | a b): four switches of runtime, a sleep
    # before the first call of each
    start = slept[0][1]  # the calls before it warmed each implementation up
    switches = [i for i in range(start, len(calls)) if i == start or calls[i] != calls[i - 1]]
    assert slept == [(0.3, i) for i in switches] and len(slept) == 4
    slept.clear()
    harness.sample([a, b], 2, 0.0, 0.0, 0.0)  # the default: no sleep
    assert slept == []


@pytest.mark.parametrize("bad", ["-1", "nan", "inf", "soon"])
def test_after_idle_refuses_what_is_not_seconds(bad: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_cli.main(["bench", "--after-idle", bad]) == 2
    assert "expected seconds, a number 0 or more" in capsys.readouterr().err


def test_modes_runs_only_the_modes_named(tmp_path: Path) -> None:
    js = tmp_path / "out.json"
    rc = bench_cli.main(["bench", "--suite", "ops", "--quick", "--repeats", "1", "--quiet",
                         "--shapes", "toy", "--modes", "backward,forward", "--json", str(js)])
    assert rc == 0
    rows = json.loads(js.read_text())["rows"]
    assert {r["mode"] for r in rows} == {"forward", "backward"}
    assert all(r["verified"] for r in rows)


@pytest.mark.parametrize(("argv", "message"), [
    (["--modes", "sideways"], "expected --modes among forward, fused, backward"),
    (["--modes", ","], "expected --modes among"),
    (["--suite", "burst", "--modes", "forward"], "expected --modes with --suite ops"),
])
def test_modes_refuses_unknown_names_and_other_suites(
        argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_cli.main(["bench", *argv]) == 2
    assert message in capsys.readouterr().err
