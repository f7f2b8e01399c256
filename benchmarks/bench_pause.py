"""What a pause costs the next call: pointwise's speed after idle, eviction and other libraries.

The burst suite compares calls with a warm loop's steady state. This script measures what
that state assumes, for the burst suite's three shapes (N=8, NHWC, bias + ReLU, fp32, all
threads), in one process with torch imported (so the kernels run on torch's threads, as in
a script that uses both). Each round times one ``pw.conv1x1`` call after each of:

* ``warm``: nothing (the previous condition's call just ran);
* ``sleep``: ``--sleep-ms`` of sleep: every thread idles, no data is touched;
* ``walk``: a read of ``--walk-mib`` MiB, which evicts the caches (and takes milliseconds,
  so the threads idle too);
* ``walk+wake``: the walk, then a small torch op on every thread, so they are awake again;
* ``np+torch``: NumPy's matmul + bias + ReLU and torch's conv2d + ReLU on the same data, as
  a script that mixes the libraries makes them.

The conditions rotate within each round; each figure is the median over the rounds, in
GFLOP/s. pointwise's output is checked against float64 before anything is timed.

    .venv/bin/python benchmarks/bench_pause.py
    .venv/bin/python benchmarks/bench_pause.py --quick    # a smoke run: one shape, 2 rounds
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections.abc import Callable

import numpy as np

import pointwise as pw

SHAPES = [(8, 28, 192, 64), (8, 14, 1024, 256), (8, 56, 24, 144)]  # (N, H=W, C, F)
CONDITIONS = ("warm", "sleep", "walk", "walk+wake", "np+torch")  # what precedes a call


def _conditions(torch, x: np.ndarray, w: np.ndarray, b: np.ndarray, sleep_s: float,
                walk: np.ndarray) -> dict[str, Callable[[], object]]:
    n, h, _, c = x.shape
    f = w.shape[1]
    x2 = x.reshape(n * h * h, c)  # (M, C) view
    yn = np.empty((n * h * h, f), np.float32)  # (M, F)
    tx = torch.from_numpy(x).permute(0, 3, 1, 2)  # (N, C, H, W) view, channels_last
    tw = torch.from_numpy(np.ascontiguousarray(w.T)).reshape(f, c, 1, 1)  # (F, C, 1, 1)
    tb = torch.from_numpy(b)
    wake = torch.ones(1 << 18)  # 1 MiB: split over the threads, evicts little

    def peers() -> None:
        np.matmul(x2, w, out=yn)  # (M, C) @ (C, F) -> (M, F)
        np.maximum(np.add(yn, b, out=yn), 0, out=yn)
        torch.relu_(torch.nn.functional.conv2d(tx, tw, tb))

    return dict(zip(CONDITIONS, (lambda: None, lambda: time.sleep(sleep_s), walk.sum,
                                 lambda: (walk.sum(), (wake * 2).sum()), peers), strict=True))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=25)
    p.add_argument("--shapes", type=int, default=len(SHAPES), help="the first S shapes")
    p.add_argument("--sleep-ms", type=float, default=5.0)
    p.add_argument("--walk-mib", type=int, default=64)
    p.add_argument("--quick", action="store_true", help="a smoke run: one shape, 2 rounds")
    args = p.parse_args()
    if args.quick:
        args.rounds, args.shapes = 2, 1
    if args.rounds < 1 or not 1 <= args.shapes <= len(SHAPES) or args.sleep_ms < 0 \
            or args.walk_mib < 1:
        p.error(f"expected --rounds >= 1, 1 <= --shapes <= {len(SHAPES)}, --sleep-ms >= 0 and "
                f"--walk-mib >= 1, but got {args.rounds}, {args.shapes}, {args.sleep_ms:g} and "
                f"{args.walk_mib}")
    import torch  # the benchmarks' extra; imported here so --help stays fast

    rng = np.random.default_rng(0)
    walk = np.ones((args.walk_mib << 20) // 8)  # float64
    print(f"pointwise {pw.__version__}, {torch.get_num_threads()} threads; GFLOP/s, median of "
          f"{args.rounds} rounds")
    print("| shape | " + " | ".join(CONDITIONS) + " |")
    print("|---|" + "---|" * len(CONDITIONS))
    for n, h, c, f in SHAPES[:args.shapes]:
        x = rng.standard_normal((n, h, h, c), dtype=np.float32)  # (N, H, W, C)
        w = rng.standard_normal((c, f), dtype=np.float32) * np.float32(1 / np.sqrt(c))  # (C, F)
        b = rng.standard_normal(f, dtype=np.float32)  # (F,)
        y = np.empty((n, h, h, f), np.float32)  # (N, H, W, F)
        call = functools.partial(pw.conv1x1, x, w, b, activation="relu", out=y)
        call()
        # (M, C) @ (C, F) -> (M, F) in float64, bias, ReLU
        ref = np.maximum(x.reshape(-1, c).astype(np.float64) @ w.astype(np.float64) + b, 0.0)
        err = np.abs(y.reshape(-1, f) - ref).max() / max(np.abs(ref).max(), 1e-30)
        if not err <= 1e-4:
            raise SystemExit(f"{h}x{h} {c}->{f}: output off the float64 reference by {err:.2e}")
        conditions = _conditions(torch, x, w, b, args.sleep_ms / 1e3, walk)
        for before in conditions.values():  # warm every path up once
            before()
            call()
        times: dict[str, list[float]] = {k: [] for k in conditions}
        for _ in range(args.rounds):
            for name, before in conditions.items():
                before()
                t0 = time.perf_counter()
                call()
                times[name].append(time.perf_counter() - t0)
        flops = 2 * n * h * h * c * f
        cells = [f"{flops / statistics.median(ts) / 1e9:.0f}" for ts in times.values()]
        print(f"| {h}² {c}→{f} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
