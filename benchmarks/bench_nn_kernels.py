"""The measurements behind ``pointwise.nn``'s kernel choice for a 1×1 conv on CPU.

For each shape and each input memory format, times the shipped kernels of
``pointwise.nn.kernels`` (``_run``) on the same data, forward only, float32, with a bias,
under ``torch.inference_mode``:

* NCHW-contiguous input: ``conv2d`` (F.conv2d); ``matmul``, ``W (F, C) @ X_n (C, H·W)`` plus
  the bias (a candidate defined here, not shipped); and ``numpy``, the NumPy core (layout
  NCHW) on the zero-copy NumPy view;
* channels_last input: ``conv2d``; ``addmm``, ``torch.addmm(b, X (N·H·W, C), Wᵀ)`` on the
  channels-last view (bias fused into the GEMM); and ``numpy`` with layout NHWC.
* both formats: ``native``, pointwise's compiled kernels on the tensors' memory, run on
  torch's OpenMP team.

Every output is checked against ``F.conv2d`` on the NCHW input before anything is timed.
Implementations are interleaved (one call of each per round, in a rotating order) after a
warm-up. The table gives the median and the spread (min–max) in ms, and what
``choose_kernel`` picks; ``--json`` adds GFLOP/s from ``pointwise.cost``. A last section times
a small model with every ``Conv1x1`` forced to each kernel, where the NumPy core's BLAS
threads meet torch's OpenMP threads. Threads are pinned (default 2) for torch and NumPy's
BLAS; the environment, ``OMP_WAIT_POLICY`` included, is printed with the numbers.

    python benchmarks/bench_nn_kernels.py            # full run, ~2 minutes on 2 cores
    python benchmarks/bench_nn_kernels.py --quick    # a smoke run
    python benchmarks/bench_nn_kernels.py --json out.json
"""

from __future__ import annotations

import argparse
import os
import sys


def _pin_threads(n: int) -> None:
    # Must happen before numpy/torch load their BLAS.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)


if __name__ == "__main__":
    _threads = 2
    for i, a in enumerate(sys.argv):
        if a == "--threads" and i + 1 < len(sys.argv):
            _threads = int(sys.argv[i + 1])
    _pin_threads(_threads)

import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import pointwise as pw  # noqa: E402
from pointwise.nn import functional as PF  # noqa: E402
from pointwise.nn import kernels as K  # noqa: E402

# (network, H=W, C, F): the 1×1 convs of ResNet-50, MobileNetV2 and GoogLeNet
SHAPES = [
    ("resnet50", 56, 64, 256),
    ("resnet50", 56, 256, 64),
    ("resnet50", 28, 512, 128),
    ("resnet50", 28, 128, 512),
    ("resnet50", 14, 1024, 256),
    ("resnet50", 14, 256, 1024),
    ("resnet50", 7, 2048, 512),
    ("resnet50", 7, 512, 2048),
    ("mobilenetv2", 112, 32, 16),
    ("mobilenetv2", 56, 24, 144),
    ("mobilenetv2", 56, 144, 24),
    ("googlenet", 28, 192, 32),
    ("googlenet", 28, 192, 64),
    ("googlenet", 28, 192, 16),
    ("googlenet", 14, 384, 64),
    ("mobilenetv2", 7, 960, 320),
]
# small problems (batch 1) where per-call overhead dominates
SMALL = [("small", 8, 8, 16), ("small", 4, 3, 8), ("small", 14, 64, 64), ("small", 1, 256, 256)]

IMPLS = {
    "nchw": ("conv2d", "matmul", "numpy", "native"),
    "channels_last": ("conv2d", "addmm", "numpy", "native"),
}


def _matmul(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The candidate not shipped: ``W @ X_n`` per image on NCHW-contiguous input, + bias."""
    n, c, h, wd = x.shape
    f = w.shape[0]
    y3 = torch.matmul(w.reshape(f, c), x.reshape(n, c, h * wd))  # (F, C) @ (N, C, P) -> (N, F, P)
    return y3.add_(b[:, None]).view(n, f, h, wd)  # (N, F, P) + (F, 1) -> (N, F, H, W)


def make_calls(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, fmt: str) -> dict:
    """The kernels of pointwise.nn.kernels (and ``matmul``) for ``x`` (N, C, H, W)."""
    calls = {
        k: (lambda k=k: PF._run(k, x, w, b, (1, 1), (0, 0), 1, None))
        for k in IMPLS[fmt] if k != "matmul"
    }
    if "matmul" in IMPLS[fmt]:
        calls["matmul"] = lambda: _matmul(x, w, b)
    return {k: calls[k] for k in IMPLS[fmt]}


def bench_model(rounds: int, warmup: int) -> dict:
    """Three ResNet bottleneck bodies (1×1 256→64, 3×3, 1×1 64→256) at N=8, 56², forward,
    with every Conv1x1 forced to one kernel: the kernels in their real neighbourhood, where
    the NumPy core's BLAS threads meet torch's OpenMP threads."""
    from torch import nn

    from pointwise.nn import Conv1x1

    def body():
        return [Conv1x1(256, 64, activation="relu"), nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(),
                Conv1x1(64, 256, activation="relu")]

    model = nn.Sequential(*body(), *body(), *body()).eval()
    chooser, run = PF.choose_kernel, PF._run

    def run_with_matmul(kernel, x, w, b, stride, padding, groups, activation, residual=None):
        if kernel == "matmul":  # stride 1, no padding, one group, no residual in this model
            return K._activate(_matmul(x, w, b), activation)
        return run(kernel, x, w, b, stride, padding, groups, activation, residual)

    PF._run = run_with_matmul
    out = {}
    try:
        with torch.inference_mode():
            for fmt, mf in (("nchw", torch.contiguous_format),
                            ("channels_last", torch.channels_last)):
                x = torch.randn(8, 256, 56, 56).contiguous(memory_format=mf)
                m = model.to(memory_format=mf)
                names = [*IMPLS[fmt], "rule"]
                ref = m(x)
                times: dict[str, list[float]] = {k: [] for k in names}
                for r in range(warmup + rounds):
                    for k in names[r % len(names):] + names[: r % len(names)]:
                        PF.choose_kernel = chooser if k == "rule" else (lambda *a, k=k, **kw: k)
                        t0 = time.perf_counter()
                        y = m(x)
                        dt = time.perf_counter() - t0
                        PF.choose_kernel = chooser
                        if r == 0:
                            torch.testing.assert_close(y, ref, rtol=1e-4, atol=1e-3)
                        if r >= warmup:
                            times[k].append(dt)
                for k, ts in times.items():
                    out[f"{fmt}:{k}"] = {"median_ms": 1e3 * statistics.median(ts),
                                         "min_ms": 1e3 * min(ts), "max_ms": 1e3 * max(ts)}
    finally:
        PF.choose_kernel, PF._run = chooser, run
    return out


def bench_shape(n: int, hw: int, c: int, f: int, rounds: int, warmup: int) -> dict:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, c, hw, hw, generator=g)
    w = torch.randn(f, c, 1, 1, generator=g) / c**0.5
    b = torch.randn(f, generator=g)
    cost = pw.cost(c, f, 1, input_size=hw, batch=n)
    out = {}
    with torch.inference_mode():
        ref = F.conv2d(x, w, b)
        for fmt in IMPLS:
            xf = x if fmt == "nchw" else x.contiguous(memory_format=torch.channels_last)
            calls = make_calls(xf, w, b, fmt)
            for call in calls.values():  # verify before timing
                torch.testing.assert_close(call(), ref, rtol=1e-4, atol=1e-4 * c**0.5)
            times: dict[str, list[float]] = {k: [] for k in calls}
            names = list(calls)
            for r in range(warmup + rounds):
                order = names[r % len(names) :] + names[: r % len(names)]  # rotate
                for name in order:
                    t0 = time.perf_counter()
                    calls[name]()
                    dt = time.perf_counter() - t0
                    if r >= warmup:
                        times[name].append(dt)
            for name, ts in times.items():
                med = statistics.median(ts)
                out[f"{fmt}:{name}"] = {
                    "median_ms": 1e3 * med,
                    "min_ms": 1e3 * min(ts),
                    "max_ms": 1e3 * max(ts),
                    "gflops": cost.flops / med / 1e9,
                }
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--quick", action="store_true", help="3 shapes, 3 rounds")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--no-model", action="store_true", help="skip the in-model comparison")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    shapes = [(args.batch, *s) for s in SHAPES] + [(1, *s) for s in SMALL]
    rounds, warmup = args.rounds, 3
    if args.quick:
        shapes, rounds, warmup = shapes[:2] + shapes[-1:], 3, 1
    env = {
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "threads": args.threads,
        "torch_threads": torch.get_num_threads(),
        "rounds": rounds,
        "dtype": "float32",
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "(default)"),
    }
    print(" ".join(f"{k}={v}" for k, v in env.items()))
    cols = [f"{fmt}:{k}" for fmt, ks in IMPLS.items() for k in ks]
    head = f"{'net':<12}{'N':>3}{'HxW':>5}{'C->F':>11} | " + " ".join(f"{c:>20}" for c in cols)
    print("median ms (min-max); * = fastest for that memory format")
    print(head)
    rows = []
    for n, net, hw, c, f in shapes:
        res = bench_shape(n, hw, c, f, rounds, warmup)
        best = {
            fmt: min((k for k in res if k.startswith(fmt + ":")), key=lambda k: res[k]["median_ms"])
            for fmt in IMPLS
        }
        cells = []
        for col in cols:
            r = res[col]
            star = "*" if col in best.values() else " "
            cells.append(f"{r['median_ms']:8.3f}{star}({r['min_ms']:.2f}-{r['max_ms']:.2f})")
        print(f"{net:<12}{n:>3}{hw:>5}{f'{c}->{f}':>11} | " + " ".join(f"{s:>20}" for s in cells))
        rule = {}
        for fmt in IMPLS:
            mf = torch.contiguous_format if fmt == "nchw" else torch.channels_last
            xe = torch.empty(n, c, hw, hw).contiguous(memory_format=mf)
            rule[fmt] = PF.choose_kernel(xe, torch.empty(f, c, 1, 1), None, (1, 1), (0, 0), 1)
        print(f"{'':<12}{'':>3}{'':>5}{'':>11} | rule picks: nchw={rule['nchw']}, "
              f"channels_last={rule['channels_last']}")
        rows.append({"net": net, "n": n, "hw": hw, "c": c, "f": f, "results": res,
                     "best": best, "rule": rule})
    model = {}
    if not args.no_model:
        model = bench_model(max(3, rounds // 3), 1)
        print("in a model (3 bottleneck bodies, N=8, 56², 256->64->256), median ms (min-max):")
        for k, r in model.items():
            print(f"  {k:<22}{r['median_ms']:9.1f} ({r['min_ms']:.1f}-{r['max_ms']:.1f})")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"env": env, "rows": rows, "model": model}, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
