"""fit_reduction on ~1 GB of pixel vectors: its rate against the machine's GEMM, and its memory.

The data: P = 2,097,152 pixels × C = 128 channels of float32, (2048, 32, 32, 128) NHWC, 1 GiB,
correlated channels with an offset.

FLOPs are counted one way throughout: the covariance is the GEMM ``XᵀX``, ``2·P·C²`` FLOPs,
and "GFLOP/s" is that count over the fit's time, set beside the GEMM roofs measured in the
same run: OpenBLAS's 2048³ sgemm (the roof the README's benchmarks use) and dgemm (the fit
accumulates in float64, as it must to be exact, and float64 GEMMs run at half the float32
rate on AVX-512). Neither path performs all of them: XᵀX is symmetric, so both compute one
triangle, ``P·C·(C + 1)`` FLOPs (the compiled kernel's diagonal tiles whole, 8 channels
wide: ``P·C·(C + 8)`` at most). The "triangle" columns give that work's rate, and its share
of the dgemm roof: how well the float64 arithmetic runs.

Rows: the fit as one array and as ~100 batches on the default path (the compiled kernel,
``csrc/moments.c``, where it runs), and as one array on the NumPy path (``POINTWISE_NATIVE=0``
: float64 blocks and OpenBLAS's SYRK), all in this run; then the same pixels as a contiguous
channels-first copy, (2048, 128, 32, 32) NCHW, fitted with ``layout="NCHW"`` as one array and
as ~100 batches on the default path (the kernel packs each image's pixels by 8×8 transposes).

Before any timing, the fitted covariance of each path is checked against a plain float64
reference (Σxxᵀ/P − μμᵀ over 64K-row chunks, one thread, no shift, no merge) to 1e-9.

Memory: the peak resident set over the fit, less the resident set before it (Linux's VmHWM,
reset through /proc/self/clear_refs), so OpenBLAS's buffers and thread stacks count too; and
tracemalloc's peak of NumPy's allocations.

``--quick`` is a smoke run (32 MiB, one round). ``--blocks`` instead sweeps the block size
for C = 32, 128 and 512 on 256 MiB of data: the kernel's packed float64 block
(``moments.KERNEL_BLOCK_BYTES``), or with ``POINTWISE_NATIVE=0`` NumPy's
(``moments.BLOCK_BYTES``), the measurements that chose them.

    flock -x /tmp/pw-bench.lock .venv/bin/python benchmarks/bench_reduction.py [--json PATH]
    flock -x /tmp/pw-bench.lock .venv/bin/python benchmarks/bench_reduction.py --blocks
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

import pointwise as pw
from pointwise import moments
from pointwise.bench.harness import Load
from pointwise.kernels import native
from pointwise.kernels.blas import cores

ROUNDS = 5
BUSY = 0.10  # measure again while other processes keep more than this share of the CPUs


def _times(fn: Callable[[], Any], rounds: int = ROUNDS) -> list[float]:
    fn()  # warm-up: pages, thread pool, BLAS buffers
    out = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def gemm_roofs(n: int = 2048) -> dict[str, float]:
    """GFLOP/s of n³ sgemm and dgemm into reused outputs, best of 7."""
    rng = np.random.default_rng(0)
    out = {}
    for dt in (np.float32, np.float64):
        a = rng.standard_normal((n, n)).astype(dt)
        c = np.empty_like(a)
        best = min(_times(lambda a=a, c=c: np.matmul(a, a, out=c), 7))
        out[np.dtype(dt).name] = 2 * n**3 / best / 1e9
    return out


def pixels(n: int, c: int, seed: int = 0) -> np.ndarray:
    """(n, 32, 32, c) float32: channels mixed by a rotation, spread 4 … 0.05, offset 0.5."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((c, c)))
    mix = (np.geomspace(4.0, 0.05, c)[:, None] * q).astype(np.float32)  # (C, C)
    x = np.empty((n, 32, 32, c), np.float32)
    flat = x.reshape(-1, c)  # (P, C), a view
    for i in range(0, flat.shape[0], 1 << 16):
        z = rng.standard_normal((min(1 << 16, flat.shape[0] - i), c), dtype=np.float32)
        np.matmul(z, mix, out=flat[i:i + len(z)])  # (M, C) @ (C, C)
    flat += np.float32(0.5)
    return x


def reference_covariance(x: np.ndarray) -> np.ndarray:
    flat = x.reshape(-1, x.shape[-1])  # (P, C)
    s, total = np.zeros((flat.shape[1],) * 2), np.zeros(flat.shape[1])
    for i in range(0, flat.shape[0], 1 << 16):
        b = flat[i:i + (1 << 16)].astype(np.float64)  # (M, C)
        s += b.T @ b  # (C, M) @ (M, C)
        total += b.sum(0)
    mean = total / flat.shape[0]
    return s / flat.shape[0] - np.outer(mean, mean)


@contextlib.contextmanager
def numpy_path() -> Iterator[None]:
    """The fit as with ``POINTWISE_NATIVE=0``: the compiled kernels off for the duration."""
    saved = native._kernel
    native._kernel = None
    try:
        yield
    finally:
        native._kernel = saved


def checked(fit: Callable[[], Any], x: np.ndarray, ref: np.ndarray) -> float:
    """The fit's covariance against the float64 reference: max relative difference."""
    r = fit()
    err = float(np.abs(r.covariance - ref).max() / np.abs(ref).max())
    assert err < 1e-9, f"covariance differs from the float64 reference by {err:.2e}"
    assert r.count == x.size // x.shape[-1]
    return err


def _rss() -> tuple[int, int]:
    """(VmRSS, VmHWM) in bytes."""
    fields = {}
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0]) * 1024
    return fields["VmRSS"], fields["VmHWM"]


def extra_memory(fn: Callable[[], Any]) -> dict[str, float]:
    """Peak resident set during ``fn`` above the one before it, and tracemalloc's peak."""
    with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
        fh.write("5")  # reset VmHWM to the current RSS
    before, _ = _rss()
    tracemalloc.start()
    fn()
    _, traced = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    _, peak = _rss()
    return {"rss_peak_extra_mb": (peak - before) / 2**20, "tracemalloc_peak_mb": traced / 2**20}


def main_run(json_path: str | None, quick: bool) -> None:
    n_roof, images, rounds = (512, 32, 1) if quick else (2048, 2048, ROUNDS)
    roofs = gemm_roofs(n_roof)
    x = pixels(images, 128)
    p, c = x.shape[0] * x.shape[1] * x.shape[2], x.shape[3]
    flops, triangle = 2 * p * c * c, p * c * (c + 1)
    print(f"data: {x.shape} float32 NHWC, {x.nbytes / 2**30:.2f} GiB, {p:,} pixels × {c}")
    memory = extra_memory(lambda: pw.fit_reduction(x, 16))
    ref = reference_covariance(x)
    err = checked(lambda: pw.fit_reduction(x, 16), x, ref)
    with numpy_path():
        err_numpy = checked(lambda: pw.fit_reduction(x, 16), x, ref)
    xc = np.ascontiguousarray(x.transpose(0, 3, 1, 2))  # (N, C, H, W), the same pixels
    err_nchw = checked(lambda: pw.fit_reduction(xc, 16, layout="NCHW"), x, ref)

    step = max(1, x.shape[0] // 100)

    def streamed() -> None:  # about 100 batches: 20 images, 10 MiB each in the full run
        pw.fit_reduction((x[i:i + step] for i in range(0, x.shape[0], step)), 16)

    def on_numpy() -> None:
        with numpy_path():
            pw.fit_reduction(x, 16)

    batches = f"{-(-x.shape[0] // step)} batches"
    default = f"kernel ({native.ISA})" if native.ENABLED else "NumPy"
    def streamed_nchw() -> None:
        pw.fit_reduction((xc[i:i + step] for i in range(0, x.shape[0], step)), 16,
                         layout="NCHW")

    runs = {f"one array, {default}": lambda: pw.fit_reduction(x, 16),
            f"{batches}, {default}": streamed, "one array, NumPy": on_numpy,
            f"NCHW one array, {default}": lambda: pw.fit_reduction(xc, 16, layout="NCHW"),
            f"NCHW {batches}, {default}": streamed_nchw}
    rows, foreign = {}, {}
    for name, fn in runs.items():
        for _ in range(1 if quick else 3):
            load = Load()
            rows[name] = _times(fn, rounds)
            foreign[name] = load.foreign()
            if foreign[name] <= BUSY or quick:
                break
            print(f"  {name}: other processes used {foreign[name]:.0%} of the CPUs; again")
    # the fit repeated, interleaved with the sgemm roof, to see whether the machine drifted
    roofs_after = gemm_roofs(n_roof)
    print(f"GEMM roofs ({n_roof}³, {cores()} threads): sgemm {roofs['float32']:.1f} / "
          f"{roofs_after['float32']:.1f} GFLOP/s, dgemm {roofs['float64']:.1f} / "
          f"{roofs_after['float64']:.1f} (before / after the fits)")
    print(f"covariance vs float64 reference: max relative difference {err:.1e} "
          f"(NumPy path {err_numpy:.1e}, NCHW {err_nchw:.1e})")
    result: dict[str, Any] = {
        "shape": list(x.shape), "dtype": "float32", "flops": flops, "triangle_flops": triangle,
        "flop_convention": "gflops = 2·P·C² (the GEMM XᵀX) / time; triangle_gflops = "
                           "P·C·(C + 1) (its lower triangle, the work done) / time",
        "roofs_before": roofs, "roofs_after": roofs_after, "reference_rel_err": err,
        "reference_rel_err_numpy_path": err_numpy, "reference_rel_err_nchw": err_nchw,
        "memory": memory, "rows": {}}
    # the better of the two measurements: a roof is what the machine can do
    sg = max(roofs["float32"], roofs_after["float32"])
    dg = max(roofs["float64"], roofs_after["float64"])
    print(f"{'fit_reduction(x, 16)':32s} {'median s':>9s} {'spread':>14s} {'GFLOP/s':>8s} "
          f"{'/sgemm':>7s} {'triangle':>9s} {'/dgemm':>7s} {'others':>7s}")
    print(f"{'':32s} {'':9s} {'':14s} {'2·P·C²':>8s} {'':7s} {'P·C(C+1)':>9s}")
    for name, ts in rows.items():
        med = statistics.median(ts)
        rate, work = flops / med / 1e9, triangle / med / 1e9
        print(f"{name:32s} {med:9.3f} {min(ts):6.3f}–{max(ts):6.3f} {rate:8.1f} "
              f"{rate / sg:7.1%} {work:9.1f} {work / dg:7.1%} {foreign[name]:7.0%}")
        result["rows"][name] = {"median_s": med, "times_s": ts, "gflops": rate,
                                "of_sgemm": rate / sg, "triangle_gflops": work,
                                "triangle_of_dgemm": work / dg,
                                "foreign_cpu_share": foreign[name]}
    print(f"extra memory: peak RSS {memory['rss_peak_extra_mb']:.1f} MiB above the data, "
          f"tracemalloc peak {memory['tracemalloc_peak_mb']:.1f} MiB")
    if json_path:
        import scipy

        result["env"] = {"machine": platform.processor() or platform.machine(),
                         "cpus": os.cpu_count(), "threads": cores(), "numpy": np.__version__,
                         "scipy": scipy.__version__, "python": platform.python_version(),
                         "kernels": native.ISA, "date": time.strftime("%Y-%m-%d")}
        Path(json_path).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
        print(f"wrote {json_path}")


def main_blocks() -> None:
    kernel = native.ENABLED
    what = f"the kernel's packed float64 block ({native.ISA})" if kernel else "NumPy's block"
    print(f"{what}; 256 MiB float32, {cores()} threads; GFLOP/s counts 2·P·C²")
    print(f"{'C':>4s} {'block':>7s} {'rows':>6s} {'GFLOP/s':>8s} {'others':>7s}")
    names = (("KERNEL_BLOCK_BYTES", "KERNEL_MIN_ROWS", "KERNEL_MAX_ROWS") if kernel
             else ("BLOCK_BYTES", "MIN_ROWS", "MAX_ROWS"))
    sizes = (32, 128, 256, 512, 1024, 2048, 8192) if kernel else (256, 512, 1024, 2048, 4096,
                                                                   8192)
    saved = [getattr(moments, n) for n in names]
    try:
        for c in (32, 128, 512):
            x = pixels((1 << 26) // (32 * 32 * c), c)
            flops = 2 * x.size * c
            for kib in sizes:
                for n, v in zip(names, (kib << 10, 16, 1 << 20), strict=True):
                    setattr(moments, n, v)
                m = moments.ChannelMoments(c)
                rows = m.kernel_rows if kernel else m.block_rows
                load = Load()
                med = statistics.median(_times(lambda x=x: pw.fit_reduction(x, 4), ROUNDS))
                print(f"{c:4d} {kib:5d}Ki {rows:6d} {flops / med / 1e9:8.1f} "
                      f"{load.foreign():7.0%}")
    finally:
        for n, v in zip(names, saved, strict=True):
            setattr(moments, n, v)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", action="store_true", help="sweep the block size instead")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 32 MiB of data, one round, 512³ roofs")
    parser.add_argument("--json", metavar="PATH", help="also write the results here")
    args = parser.parse_args()
    main_blocks() if args.blocks else main_run(args.json, args.quick)
