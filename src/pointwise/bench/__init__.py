"""``pointwise bench``: honest timings of the 1×1 conv against its peers, on this machine.

One harness for the command line and for ``benchmarks/``: :func:`run` measures the roofs,
runs a suite (``ops`` or ``models``), verifies every output against a float64 reference
before timing it, and returns the result document (environment, roofs, missing peers, rows).
Importing :mod:`pointwise` does not import this package; this package imports torch only
when a suite needs it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from pointwise.bench import harness, peers, report, roofs, suites
from pointwise.bench.suites import MODELS, SHAPES, Settings, Shape

__all__ = ["MODELS", "SHAPES", "Settings", "Shape", "run"]


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run(suite: str = "ops", *, quick: bool = False, threads: int = 2, repeats: int | None = None,
        shapes: str | None = None, models: tuple[str, ...] | None = None,
        target_ms: float | None = None, settle_s: float | None = None, rtol: float | None = None,
        say: Callable[[str], None] = _say) -> dict[str, Any]:
    """Run one suite; returns ``{"suite", "environment", "roofs", "missing", "rows", "failed"}``."""
    pinned = harness.pin_threads(threads)
    if peers.module("torch") is not None:
        harness.pin_torch(threads)
    missing = peers.missing()
    st = Settings(
        threads=threads,
        repeats=repeats or (2 if quick else (15 if suite == "ops" else 5)),
        target_s=(target_ms or (2.0 if quick else (20.0 if suite == "ops" else 200.0))) / 1e3,
        warm_s=0.01 if quick else (0.2 if suite == "ops" else 1.0),
        settle_s=settle_s if settle_s is not None else (0.02 if quick else 0.15),
        rtol=rtol if rtol is not None else (1e-4 if suite == "ops" else 1e-3),
        quick=quick,
    )
    picked = suites.select(shapes, quick)
    if suite == "ops" and not picked:
        raise ValueError(f"expected --shapes to match one of {[s.name for s in SHAPES]}, "
                         f"but {shapes!r} matches none")
    say("measuring the roofs")
    r = roofs.measure_roofs(quick)
    if suite == "ops":
        rows = suites.run_ops(picked, st, r, say)
    elif suite == "models":
        if peers.module("torch") is None:
            raise RuntimeError("the models suite needs torch, but it does not import")
        names = models or (("mobilenet_v2",) if quick else MODELS)
        rows = suites.run_models(names, st, r, say, size=96 if quick else 224)
    else:
        raise ValueError(f"expected suite 'ops' or 'models', but got {suite!r}")
    env = harness.environment(threads, pinned)
    env["settings"] = st.__dict__
    failed = [f"{x['problem']}: {x['impl']} [{x['layout']}]" for x in rows if not x["verified"]]
    return {"suite": suite, "environment": env, "roofs": r, "missing": missing, "rows": rows,
            "failed": failed, "text": report.header(env, r, missing) + "\n\n" + report.table(rows)}
