"""Smoke test of ``pointwise bench --quick``: structure only, never time."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

from pointwise import bench_cli
from pointwise.bench import peers, report, run


def test_import_pointwise_does_not_import_bench_or_torch() -> None:
    code = ("import sys, pointwise, pointwise.bench_cli; "
            "print(any(m == 'torch' or m.startswith('pointwise.bench.') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


def test_quick_ops_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    js, png = tmp_path / "out.json", tmp_path / "out.png"
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
    for r in rows:
        assert r["verified"] and r["rel_err"] <= 1e-4, r
        for key in ("median_ms", "min_ms", "max_ms", "gflops", "pct_roof", "faults_per_call"):
            assert key in r, (key, r)
        assert r["min_ms"] <= r["median_ms"] <= r["max_ms"]
        assert r["layout"] in ("NHWC", "NCHW")
    assert all("vs_best_peer" in r for r in rows if r["library"] == "pointwise")
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
