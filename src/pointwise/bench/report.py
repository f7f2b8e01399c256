"""Render bench results: the terminal table, the JSON file and the ``--png`` charts.

matplotlib is imported only by :func:`write_png`. Files are written atomically.
"""

from __future__ import annotations

import os
from typing import Any

from pointwise.files import atomic_write, strict_json

HEADER = ("impl", "layout", "median ms", "min–max ms", "GFLOP/s", "%roof", "×best",
          "flt/call", "peak MiB", "rel err")


def _g(v: float) -> str:
    return f"{v:.4g}"


def _cells(r: dict[str, Any]) -> list[str]:
    base = [r["impl"], r["layout"]]
    if not r["verified"]:
        return [*base, "FAILED", r.get("error", "")[:60], "", "", "", "", "", ""]
    if "median_ms" not in r:
        return [*base] + ["-"] * 8
    ratio = r.get("vs_best_peer")
    return [*base, _g(r["median_ms"]), f"{_g(r['min_ms'])}–{_g(r['max_ms'])}",
                   f"{r['gflops']:.1f}", f"{r['pct_roof']:.0f}",
                   "-" if ratio is None else f"{ratio:.2f}", f"{r['faults_per_call']:.1f}",
                   f"{r['peak_extra_mib']:.2f}" if "peak_extra_mib" in r else "-",
                   f"{r['rel_err']:.1e}"]


def table(rows: list[dict[str, Any]]) -> str:
    """One block per problem; ×best = best peer's median / this median, in the same layout."""
    body = [_cells(r) for r in rows]
    widths = [max(len(c[i]) for c in [list(HEADER), *body]) for i in range(len(HEADER))]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(wd) if i < 2 else c.rjust(wd)
                         for i, (c, wd) in enumerate(zip(cells, widths, strict=True)))

    out = [line(list(HEADER)), "-" * (sum(widths) + 2 * (len(widths) - 1))]
    problem = None
    for r, cells in zip(rows, body, strict=True):
        if r["problem"] != problem:
            problem = r["problem"]
            out.append(f"{problem}   ({r['flops'] / 1e6:.4g} MFLOP, {r['intensity']:.3g} "
                       f"FLOP/B, roof {r['roof_gflops']:.0f} GFLOP/s, bg {100 * r['bg']:.0f}%)")
        out.append("  " + line(cells))
    return "\n".join(out)


def header(env: dict[str, Any], roofs: dict[str, Any], missing: list[str]) -> str:
    v = env["versions"]
    libs = ", ".join(f"{k} {val}" for k, val in v.items())
    return "\n".join([
        f"{env['date']} | {env['cpu'].get('model', '?')}, {env['cpu']['usable_cpus']} usable "
        f"CPUs | {env['threads']} threads ({env['pinned_by']})",
        libs + " | pointwise kernels: "
        + (env.get("kernels") or "off (float32 runs on NumPy's BLAS)"),
        f"roofs: GEMM {roofs['gemm_gflops']:.1f} GFLOP/s (sgemm n={roofs['gemm_n']}), copy "
        f"{roofs['copy_gbs']:.1f} GB/s, triad {roofs['triad_gbs']:.1f} GB/s",
        "missing peers: " + (", ".join(missing) if missing else "none"),
        "fp32; every output verified against a float64 reference before timing; "
        "×best = best peer's median / row's median in the same layout (>1 = faster than "
        "every peer); %roof = GFLOP/s / min(GEMM, intensity × bandwidth); flt/call = minor "
        "page faults per call; peak MiB = NumPy memory one call held above its start "
        "(tracemalloc; '-' where the library allocates out of its sight)",
    ])


def default_name(env: dict[str, Any], suite: str) -> str:
    from pointwise.bench.harness import env_slug

    return f"bench-{suite}-{env_slug(env)}"


def _target(path: str, env: dict[str, Any], suite: str, ext: str) -> str:
    """``path`` itself, or a file named after the environment when ``path`` is a folder (an
    existing one, or one spelled with a trailing slash). Missing folders are created."""
    if os.path.isdir(path) or path.endswith(("/", os.sep)):
        os.makedirs(path, exist_ok=True)
        return os.path.join(path, default_name(env, suite) + ext)
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    return path


def write_json(path: str, doc: dict[str, Any]) -> str:
    """Write ``doc``; a folder gets a file named after the environment. Returns the path."""
    target = _target(path, doc["environment"], doc["suite"], ".json")
    with atomic_write(target, "w") as fh:
        fh.write(strict_json(doc, indent=1))  # NaN as "NaN": strict parsers read it
        fh.write("\n")
    return target


def write_png(path: str, doc: dict[str, Any]) -> str:
    """Roofline (intensity vs GFLOP/s, roofs and every implementation) and the ratio bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    target = _target(path, doc["environment"], doc["suite"], ".png")
    rows = [r for r in doc["rows"] if "gflops" in r]
    roofs = doc["roofs"]
    n_bars = sum(1 for r in rows if r["library"] == "pointwise" and "vs_best_peer" in r)
    # one readable line per bar: 0.14 inch each, the roofline beside them at least 7 inches
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(16, max(7.0, 1.5 + 0.14 * n_bars)),
                                 gridspec_kw={"width_ratios": (1, 1.2)})
    lo = min([r["intensity"] for r in rows] + [0.1]) / 2
    hi = max([r["intensity"] for r in rows] + [10.0]) * 2
    xs = [lo * (hi / lo) ** (i / 200) for i in range(201)]
    for key, style in (("bandwidth_gbs", "-"), ("triad_gbs", ":")):
        ax.plot(xs, [min(roofs["gemm_gflops"], x * roofs[key]) for x in xs], "k" + style,
                label=f"roof: GEMM {roofs['gemm_gflops']:.0f} GFLOP/s, "
                f"{key.split('_')[0]} {roofs[key]:.0f} GB/s")
    names = sorted({(r["impl"], r["layout"]) for r in rows})
    markers = "osD^v<>pP*hX"
    for i, (impl, layout) in enumerate(names):
        pts = [r for r in rows if (r["impl"], r["layout"]) == (impl, layout)]
        ax.scatter([r["intensity"] for r in pts], [r["gflops"] for r in pts], s=22,
                   marker=markers[i % len(markers)], label=f"{impl} [{layout}]")
    ax.set(xscale="log", yscale="log", xlabel="arithmetic intensity (FLOP per compulsory byte)",
           ylabel="GFLOP/s", title=f"roofline: {doc['suite']} suite")
    ax.legend(fontsize=7)
    ax.grid(True, which="both", alpha=0.3)
    ours = [r for r in rows if r["library"] == "pointwise" and "vs_best_peer" in r]
    labels = [f"{r['problem']} [{r['layout']}]" for r in ours]
    vals = [r["vs_best_peer"] for r in ours]
    bx.barh(range(len(vals)), vals, color=["tab:green" if v >= 1 else "tab:red" for v in vals])
    bx.axvline(1.0, color="k", lw=1)
    bx.set_yticks(range(len(vals)), labels, fontsize=7)
    bx.set_ylim(len(vals) - 0.5, -0.5)
    for i, v in enumerate(vals):
        bx.text(v, i, f" {v:.2f}", va="center", fontsize=6)
    bx.set(xlabel="best peer's median / ours (>1 = pointwise faster)",
           title="pointwise vs the best peer in the same layout")
    fig.tight_layout()
    with atomic_write(target, "wb") as fh:
        fig.savefig(fh, format="png", dpi=110)
    plt.close(fig)
    return target
