"""The block size of the fused epilogue, ``pointwise.kernels.gemm.BLOCK_BYTES``, measured.

``conv1x1`` with a bias or an activation runs its GEMM on blocks of at most ``BLOCK_BYTES``
(input rows + output rows) and biases/activates each block while it is still in cache. For
every shape this script times ``conv1x1(x, w, b, activation="relu", out=buf)`` in NHWC and
NCHW with ``BLOCK_BYTES`` set in-process before each call, against the plain
``conv1x1(x, w, out=buf)``; ``--gemm-only`` adds the same blocked path with the epilogue
(``_gemm._Epilogue.__call__``) replaced by a no-op, which splits blocking cost from epilogue
cost. The harness (verification first, interleaved rounds, environment) is
:mod:`pointwise.bench.harness`. Overhead = fused median / plain median.

    .venv/bin/python benchmarks/bench_block.py --quick
    .venv/bin/python benchmarks/bench_block.py --shapes 56x56 --gemm-only --json out.json
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__":
    _n = next((sys.argv[i + 1] for i, a in enumerate(sys.argv[:-1]) if a == "--threads"), "2")
    for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[_v] = _n  # before NumPy loads OpenBLAS

import argparse
import json
from collections.abc import Callable
from typing import Any

import numpy as np

import pointwise as pw
import pointwise.kernels.gemm as gemm
from pointwise.bench import harness as h
from pointwise.files import atomic_write

KIB = 1 << 10
SETTINGS = [("256K", 256 * KIB), ("1M", 1024 * KIB), ("2M", 2048 * KIB), ("4M", 4096 * KIB),
            ("16M", 16384 * KIB), ("none", 1 << 62)]
# (name, H = W, C, F), N = 8
SHAPES = [("resnet50", 28, 512, 128), ("resnet50", 7, 2048, 512), ("mobilenetv2", 7, 960, 320),
          ("resnet50", 56, 64, 256), ("resnet50", 56, 256, 64), ("mobilenetv2", 112, 32, 16),
          ("mobilenetv2", 56, 24, 144), ("googlenet3a", 28, 192, 16)]
QUICK = ("resnet50 7x7", "mobilenetv2 112x112")
EPILOGUE = gemm._Epilogue.__call__


def _no_epilogue(self: Any, yb: np.ndarray) -> None:
    """Stands in for the epilogue in the GEMM-only variants."""


def variants(n: int, hh: int, c: int, f: int, gemm_only: bool) -> list[h.Impl]:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, hh, hh, c), dtype=np.float32)  # (N, H, W, C)
    w = rng.standard_normal((c, f), dtype=np.float32) / np.float32(np.sqrt(c))  # (C, F)
    b = rng.standard_normal(f, dtype=np.float32)  # (F,)
    x_nchw = np.ascontiguousarray(x.transpose(0, 3, 1, 2))  # (N, C, H, W)
    w_oihw = np.ascontiguousarray(w.T)  # (F, C)
    ref = np.einsum("nhwc,cf->nhwf", x.astype(np.float64), w.astype(np.float64), optimize=True)
    ref_br = np.maximum(ref + b, 0.0)  # (N, H, W, F)
    y_nhwc = np.empty((n, hh, hh, f), np.float32)
    y_nchw = np.empty((n, f, hh, hh), np.float32)

    def check(layout: str, want: np.ndarray) -> Callable[[Any], float]:
        if layout == "NHWC":
            return lambda y: h.rel_err(y, want)
        return lambda y: h.rel_err(y.transpose(0, 2, 3, 1), want)  # (N, F, H, W) -> NHWC

    def call(layout: str, bb: int | None, epilogue: Any) -> Callable[[], Any]:
        def run() -> Any:
            gemm.BLOCK_BYTES = bb if bb is not None else DEFAULT
            gemm._Epilogue.__call__ = epilogue  # type: ignore[method-assign]
            if bb is None:
                if layout == "NHWC":
                    return pw.conv1x1(x, w, out=y_nhwc)
                return pw.conv1x1(x_nchw, w_oihw, layout="NCHW", out=y_nchw)
            if layout == "NHWC":
                return pw.conv1x1(x, w, b, activation="relu", out=y_nhwc)
            return pw.conv1x1(x_nchw, w_oihw, b, layout="NCHW", activation="relu", out=y_nchw)
        return run

    out = []
    for lay in ("NHWC", "NCHW"):
        out.append(h.Impl("plain", "pointwise", lay, "openblas", call(lay, None, EPILOGUE),
                          check(lay, ref)))
        for name, bb in SETTINGS:
            out.append(h.Impl(name, "pointwise", lay, "openblas", call(lay, bb, EPILOGUE),
                              check(lay, ref_br)))
            if gemm_only:
                out.append(h.Impl(f"gemm {name}", "pointwise", lay, "openblas",
                                  call(lay, bb, _no_epilogue), check(lay, ref)))
    return out


DEFAULT = gemm.BLOCK_BYTES


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=None, help="rounds (default 9; quick 2)")
    ap.add_argument("--shapes", default=None, help="comma-separated substrings of shape names")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--gemm-only", action="store_true", help="add the no-epilogue variants")
    ap.add_argument("--json", metavar="PATH", default=None)
    args = ap.parse_args(argv)
    pinned = h.pin_threads(args.threads)
    repeats = args.repeats or (2 if args.quick else 9)
    target, warm = (0.003, 0.02) if args.quick else (0.02, 0.2)
    subs = [t.strip() for t in (args.shapes or "").split(",") if t.strip()] or (
        list(QUICK) if args.quick else [""])
    env = h.environment(args.threads, pinned)
    print(f"{env['cpu'].get('model')} | {args.threads} threads | numpy "
          f"{env['versions']['numpy']} | default BLOCK_BYTES {DEFAULT} | {repeats} rounds")
    results, failed = [], False
    for net, hh, c, f in SHAPES:
        name = f"{net} {hh}x{hh} {c}->{f}"
        if not any(t in name for t in subs):
            continue
        vs = variants(8, hh, c, f, args.gemm_only)
        try:
            notes = h.verify(vs, 1e-4)
            bg = h.measure(vs, repeats, target, warm, 0.0)
        finally:
            gemm.BLOCK_BYTES, gemm._Epilogue.__call__ = DEFAULT, EPILOGUE  # type: ignore
        failed |= bool(notes)
        cost = pw.conv_cost(c, f, input_size=hh, bias=False, batch=8)
        rows = [h.result(v, cost.flops, cost.bytes(4)) for v in vs]
        plain = {r["layout"]: r.get("median_ms") for r in rows if r["impl"] == "plain"}
        print(f"\n{name}  (bg {100 * bg:.0f}%)" + "".join(f"\n  FAILED {m}" for m in notes))
        for r in rows:
            base = plain[r["layout"]]
            if "median_ms" in r and base:
                r["over_plain"] = r["median_ms"] / base
            print(f"  {r['layout']} {r['impl']:>10}: " + (
                f"{r['median_ms']:8.3f} ms ({r['min_ms']:.3f}–{r['max_ms']:.3f})  "
                f"x{r.get('over_plain', float('nan')):.2f} of plain"
                if "median_ms" in r else "FAILED"))
        results.append({"shape": name, "bg": bg, "rows": rows})
    if args.json:
        with atomic_write(args.json, "w") as fh:
            json.dump({"environment": env, "default_block_bytes": DEFAULT, "results": results},
                      fh, indent=1)
        print(f"\nwrote {args.json}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
