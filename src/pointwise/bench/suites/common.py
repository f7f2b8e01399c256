"""What every suite shares: the settings of a run, and the measure-then-report step."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pointwise.bench import harness as h

__all__ = ["Settings", "measure", "rows"]


@dataclass(frozen=True)
class Settings:
    threads: int
    repeats: int
    target_s: float
    warm_s: float
    settle_s: float
    rtol: float
    quick: bool
    idle_s: float = 0.0  # sleep before each runtime's turn (harness.sample)


def rows(impls: list[h.Impl], problem: dict[str, Any], flops: int, nbytes: int,
          roof: float, foreign: float) -> list[dict[str, Any]]:
    rows = []
    for im in impls:
        r = {**problem, **h.result(im, flops, nbytes), "roof_gflops": roof, "bg": foreign}
        if "gflops" in r:
            r["pct_roof"] = 100 * r["gflops"] / roof
        rows.append(r)
    return rows


def measure(impls: list[h.Impl], st: Settings, say: Callable[[str], None],
         label: str) -> float:
    for note in h.verify(impls, st.rtol):
        say(f"{label}: {note}")
    h.peak_memory(impls)
    return h.measure(impls, st.repeats, st.target_s, st.warm_s, st.settle_s,
                     retries=0 if st.quick else h.RETRIES, idle_s=st.idle_s)


def pick(shapes: str, known: list[Any]) -> list[Any]:
    """The problems of ``known`` (each with a ``name``) whose name contains one of the
    comma-separated substrings ``shapes``, case-insensitive; a ValueError where none does."""
    subs = [t.strip().lower() for t in shapes.split(",") if t.strip()]
    picked = [s for s in known if any(t in s.name.lower() for t in subs)]
    if not picked:
        raise ValueError(f"expected --shapes to match one of {[s.name for s in known]}, "
                         f"but {shapes!r} matches none")
    return picked
