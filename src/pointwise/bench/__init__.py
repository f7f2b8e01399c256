"""``pointwise bench``: honest timings of the 1×1 conv against its peers, on this machine.

One harness for the command line and for ``benchmarks/``: :func:`run` measures the roofs,
runs a suite (see :data:`pointwise.bench.suites.SUITES`), verifies every output against a
float64 reference before timing it, and returns the result document (environment, roofs,
missing peers, rows).
Importing :mod:`pointwise` does not import this package; this package imports torch only
when a suite needs it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from pointwise.bench import harness, peers, report, roofs
from pointwise.bench.suites import MODELS, SHAPES, SUITES, Settings, Shape

__all__ = ["MODELS", "SHAPES", "SUITES", "Settings", "Shape", "run"]


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run(suite: str = "ops", *, quick: bool = False, threads: int = 2, repeats: int | None = None,
        shapes: str | None = None, models: tuple[str, ...] | None = None,
        modes: tuple[str, ...] | None = None, target_ms: float | None = None,
        settle_s: float | None = None, rtol: float | None = None,
        idle_s: float = 0.0, say: Callable[[str], None] = _say) -> dict[str, Any]:
    """Run one suite; returns ``{"suite", "environment", "roofs", "missing", "rows", "failed"}``."""
    module = SUITES.get(suite)
    if module is None:
        raise ValueError(f"expected a suite among {', '.join(SUITES)}, but got {suite!r}")
    pinned = harness.pin_threads(threads)
    if peers.module("torch") is not None:
        harness.pin_torch(threads)
    missing = peers.missing()
    d = module.DEFAULTS
    st = Settings(
        threads=threads,
        repeats=repeats or (2 if quick else int(d["repeats"])),
        target_s=(target_ms or (2.0 if quick else float(d["target_ms"]))) / 1e3,
        warm_s=0.01 if quick else float(d["warm_s"]),
        settle_s=settle_s if settle_s is not None else (0.02 if quick else 0.15),
        rtol=rtol if rtol is not None else float(d["rtol"]),
        quick=quick,
        idle_s=idle_s,
    )
    say("measuring the roofs")
    r = roofs.measure_roofs(quick)
    rows = module.run(st, r, say, shapes=shapes, models=models, modes=modes)
    env = harness.environment(threads, pinned)
    env["settings"] = st.__dict__
    failed = [f"{x['problem']}: {x['impl']} [{x['layout']}]" for x in rows if not x["verified"]]
    table = getattr(module, "text", report.table)  # a suite may have its own report
    text = report.header(env, r, missing) + "\n\n" + table(rows)
    if hasattr(module, "headline"):  # suites with onnxruntime: the fastest engine per problem
        text += "\n\n" + module.headline(rows)
    return {"suite": suite, "environment": env, "roofs": r, "missing": missing, "rows": rows,
            "failed": failed, "text": text}
