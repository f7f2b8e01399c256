"""The blocks suite: structure only, never time."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

from pointwise.bench import headline as hl
from pointwise.bench.roofs import measure_roofs
from pointwise.bench.suites import SUITES
from pointwise.bench.suites.blocks import SHAPES, BlockShape, run, run_shapes
from pointwise.bench.suites.common import Settings


def test_mobilenet_v2s_seventeen_blocks() -> None:
    assert len(SHAPES) == 17 and SUITES["blocks"].run is run
    assert [s.name for s in SHAPES[:2]] == ["mobilenet_v2.1 112x112 32->32->16",
                                             "mobilenet_v2.2 112x112 16->96->24 s2"]
    assert sum(s.residual for s in SHAPES) == 10


def test_block_rows_are_verified_and_compared_with_onnxruntime() -> None:
    st = Settings(threads=2, repeats=1, target_s=0.002, warm_s=0.0, settle_s=0.0, rtol=1e-4,
                  quick=True)
    shapes = [BlockShape(1, 2, 9, 8, 6, 8, 1), BlockShape(2, 1, 11, 8, 1, 16, 2)]
    rows = run_shapes(shapes, st, measure_roofs(quick=True), lambda _: None)
    impls = {r["impl"] for r in rows}
    assert {"pointwise fused", "pointwise layers", "pointwise module",
            "torch channels_last"} <= impls
    for r in rows:
        assert r["verified"] and r["rel_err"] <= 1e-4, r
        assert r["median_ms"] > 0 and r["flops"] > 0
    if any(r["library"] == "onnxruntime" for r in rows):
        assert all("vs_onnxruntime" in r for r in rows)
        assert hl.headline(rows).count("\n") == len(shapes)
    with pytest.raises(ValueError, match="matches none"):
        run(st, {}, lambda _: None, shapes="no such block")
