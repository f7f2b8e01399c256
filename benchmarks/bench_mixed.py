"""Two 1×1 layers in a row, as in a bottleneck: why plain and fused calls share one thread rule.

A fused layer (bias + ReLU, C → F) is followed by a plain one (F → C), at N=8, fp32, on all
cores. The plain layer is run three ways:

* ``pointwise``: ``pw.conv1x1`` — on the same threads as the fused layer: the compiled
  kernels' pool where they are built (float32, AVX-512), else above ``_gemm.POOL_MIN_MACS``
  the NumPy path's pool of single-threaded BLAS calls;
* ``np.matmul``: the same GEMM on OpenBLAS's own threads, which keep spinning ~0.1 s after
  the call and then share the cores with the next fused layer's pool;
* ``alone``: each layer timed on its own, summed (no interaction).

Every output is checked against a float64 einsum first. Medians of interleaved samples.

    .venv/bin/python benchmarks/bench_mixed.py
    .venv/bin/python benchmarks/bench_mixed.py --quick    # a smoke run: one shape, 2 rounds
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import pointwise as pw

SHAPES = [(28, 512, 128), (56, 64, 256), (14, 1024, 256), (112, 32, 16), (56, 24, 144)]
ROUNDS = 15


def _median_ms(fn, rounds: int | None = None) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(rounds or ROUNDS):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def main() -> None:
    global ROUNDS
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    ap.add_argument("--quick", action="store_true", help="a smoke run: one shape, 2 rounds")
    args = ap.parse_args()
    if args.quick:
        ROUNDS = 2
    rng = np.random.default_rng(0)
    print(f"{'layers (N=8)':26s} {'pointwise':>10s} {'np.matmul':>10s} {'alone':>8s}  (ms)")
    for h, c, f in SHAPES[3:4] if args.quick else SHAPES:
        print(_row(h, c, f, rng))


def _row(h: int, c: int, f: int, rng: np.random.Generator) -> str:
    """One table row: the pair with the plain layer on our pool, on OpenBLAS, and alone."""
    x = rng.standard_normal((8, h, h, c)).astype(np.float32)  # (N, H, W, C)
    w1 = (rng.standard_normal((c, f)) / np.sqrt(c)).astype(np.float32)  # (C, F)
    w2 = (rng.standard_normal((f, c)) / np.sqrt(f)).astype(np.float32)  # (F, C)
    b1 = rng.standard_normal(f).astype(np.float32)  # (F,)
    y1 = np.empty((8, h, h, f), np.float32)
    y2 = np.empty((8, h, h, c), np.float32)
    m = 8 * h * h

    def fused() -> None:
        pw.conv1x1(x, w1, b1, activation="relu", out=y1)

    def plain_pw() -> None:
        pw.conv1x1(y1, w2, out=y2)

    def plain_np() -> None:
        np.matmul(y1.reshape(m, f), w2, out=y2.reshape(m, c))  # (M, F) @ (F, C)

    ref1 = np.maximum(np.einsum("nhwc,cf->nhwf", x.astype(np.float64), w1) + b1, 0)
    fused()
    np.testing.assert_allclose(y1, ref1, rtol=1e-4, atol=1e-4)
    ref2 = np.einsum("nhwf,fc->nhwc", y1.astype(np.float64), w2)
    for plain in (plain_pw, plain_np):
        plain()
        np.testing.assert_allclose(y2, ref2, rtol=1e-4, atol=1e-4)

    def with_pw() -> None:
        fused()
        plain_pw()

    def with_np() -> None:
        fused()
        plain_np()

    a, b = _median_ms(with_pw), _median_ms(with_np)
    time.sleep(0.3)  # OpenBLAS's workers, just used by with_np, go idle first
    alone = _median_ms(fused) + _median_ms(plain_pw)
    a2, b2 = _median_ms(with_pw), _median_ms(with_np)  # again, in the other phase
    return (f"{h}² {c}→{f}→{c}".ljust(26) + f" {min(a, a2):10.2f} {min(b, b2):10.2f} "
            f"{alone:8.2f}")


if __name__ == "__main__":
    main()
