"""The kxk suite and the cross-layout headline: structure only, never time."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

from pointwise.bench import headline as hl
from pointwise.bench.roofs import measure_roofs
from pointwise.bench.suites import SUITES
from pointwise.bench.suites.common import Settings
from pointwise.bench.suites.kxk import KxkShape, run, run_shapes


def test_kxk_rows_are_verified_and_compared_with_onnxruntime() -> None:
    st = Settings(threads=2, repeats=1, target_s=0.002, warm_s=0.0, settle_s=0.0, rtol=1e-4,
                  quick=True)
    shapes = [KxkShape("tiny", 2, 9, 8, 24, k=3, stride=2), KxkShape("tiny", 1, 11, 3, 16, k=7)]
    rows = run_shapes(shapes, st, measure_roofs(quick=True), lambda _: None)
    assert SUITES["kxk"].run is run
    impls = {r["impl"] for r in rows}
    assert {"pointwise", "pointwise Conv2d", "torch NCHW", "torch channels_last"} <= impls
    for r in rows:
        assert r["verified"] and r["rel_err"] <= 1e-4, r
        assert r["median_ms"] > 0 and r["flops"] > 0
    ort = [r for r in rows if r["library"] == "onnxruntime"]
    if ort:  # every timed row of a problem onnxruntime ran is compared with it
        assert all("vs_onnxruntime" in r for r in rows)
        text = hl.headline(rows)
        assert text.count("\n") == len(shapes) and "×ort" in text
    with pytest.raises(ValueError, match="matches none"):
        run(st, {}, lambda _: None, shapes="no such shape")


def test_headline_names_the_fastest_engine_across_layouts() -> None:
    rows = [{"problem": "m N=8", "impl": "torch eager channels_last", "library": "torch",
             "layout": "NHWC", "median_ms": 12.0},
            {"problem": "m N=8", "impl": "pointwise convert() channels_last",
             "library": "pointwise", "layout": "NHWC", "median_ms": 9.0},
            {"problem": "m N=8", "impl": "onnxruntime (exported)", "library": "onnxruntime",
             "layout": "NCHW", "median_ms": 10.0}]
    hl.add_vs_onnxruntime(rows)
    assert [round(r["vs_onnxruntime"], 3) for r in rows] == [0.833, 1.111, 1.0]
    text = hl.headline(rows)
    assert "m N=8: fastest pointwise convert() channels_last [NHWC] 9 ms" in text
    assert "(×ort 1.11); onnxruntime 10 ms" in text
