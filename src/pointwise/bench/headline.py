"""Each problem's fastest engine, across layouts, and every row against onnxruntime.

``×best`` (:func:`pointwise.bench.harness.add_ratios`) compares a row with the peers of its
own layout; onnxruntime runs NCHW models, so a channels-last row never meets it there. This
adds ``vs_onnxruntime`` (onnxruntime's median / the row's, > 1 = faster than onnxruntime)
to every timed row of a problem that has an onnxruntime row, and writes the headline: per
problem, the fastest engine and where pointwise's rows and onnxruntime stand.
"""

from __future__ import annotations

from typing import Any

__all__ = ["add_vs_onnxruntime", "headline"]

ORT = "onnxruntime"


def add_vs_onnxruntime(rows: list[dict[str, Any]]) -> None:
    """Set ``vs_onnxruntime`` on the timed rows of each problem that onnxruntime ran."""
    ort = {r["problem"]: r["median_ms"] for r in rows
           if r["library"] == ORT and "median_ms" in r}
    for r in rows:
        if r["problem"] in ort and "median_ms" in r:
            r["vs_onnxruntime"] = ort[r["problem"]] / r["median_ms"]


def headline(rows: list[dict[str, Any]]) -> str:
    """Per problem: the fastest engine, pointwise's best row (ours) and onnxruntime, in ms."""
    problems = list(dict.fromkeys(r["problem"] for r in rows))
    out = ["headline (medians; ×ort = onnxruntime's median / the row's, > 1 = faster):"]
    for p in problems:
        timed = [r for r in rows if r["problem"] == p and "median_ms" in r]
        if not timed:
            continue
        best = min(timed, key=lambda r: r["median_ms"])
        ours = [r for r in timed if r["library"] == "pointwise"]
        ort = [r for r in timed if r["library"] == ORT]
        line = f"  {p}: fastest {_name(best)} {best['median_ms']:.4g} ms"
        if ours:
            o = min(ours, key=lambda r: r["median_ms"])
            line += f"; ours {_name(o)} {o['median_ms']:.4g} ms"
            if "vs_onnxruntime" in o:
                line += f" (×ort {o['vs_onnxruntime']:.2f})"
        if ort:
            line += f"; onnxruntime {ort[0]['median_ms']:.4g} ms"
        out.append(line)
    return "\n".join(out)


def _name(r: dict[str, Any]) -> str:
    return f"{r['impl']} [{r['layout']}]"
