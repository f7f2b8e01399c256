"""What a ``pointwise.nn`` inference call costs: packing weights on every call, and batch 1.

Two suites, each verifying every output against ``F.conv2d`` before it times anything,
timing the candidates interleaved (one call of each per round, after a warm-up), and
reporting medians in ms and their ratio to the first column:

* ``pack``: the compiled kernels on ResNet-50's 1×1 layers (and two 3×3s), channels-last,
  bias + ReLU, at N=8 and N=1: ``taps`` with a weight packed before the timing (what a
  pack kept between calls gave), ``taps`` packing torch's (F, C, kh, kw) weight on every
  call (what ``pointwise.nn`` does), and, for 1×1s, ``rows`` reading torch's (F, C)
  weight transposed.
* ``batch1``: ``Conv1x1`` against ``nn.Conv2d(kernel_size=1)`` with the same weights, eval,
  ``no_grad``, N=1, NCHW and channels_last: the whole module call, Python included.

    flock -x /tmp/pw-bench.lock python benchmarks/bench_nn_call.py --suite pack
    flock -x /tmp/pw-bench.lock python benchmarks/bench_nn_call.py --suite batch1
"""

from __future__ import annotations

import argparse
import os
import sys

if __name__ == "__main__":  # before numpy and torch load their thread pools
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, "2")

import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from pointwise.kernels import native
from pointwise.nn import Conv1x1
from pointwise.nn import _native_torch as NT

# (H = W, C, F, k) at N=8 and N=1: ResNet-50's 1×1 layers, and two of its 3×3s
PACK_SHAPES = [(56, 64, 256, 1), (56, 256, 64, 1), (28, 128, 512, 1), (28, 512, 128, 1),
               (14, 256, 1024, 1), (14, 1024, 256, 1), (7, 512, 2048, 1), (7, 2048, 512, 1),
               (14, 256, 256, 3), (7, 512, 512, 3)]


def interleaved(fns: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """Median seconds of each function, one call of each per round in a rotating order."""
    names = list(fns)
    times: dict[str, list[float]] = {k: [] for k in names}
    for fn in fns.values():  # warm-up
        fn()
    for r in range(rounds):
        for k in names[r % len(names):] + names[:r % len(names)]:
            t0 = time.perf_counter()
            fns[k]()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def row(label: str, med: dict[str, float]) -> str:
    base = next(iter(med.values()))
    return f"{label:<22}" + "".join(f"{k} {v * 1e3:7.3f} ms ({base / v:4.2f}x)   "
                                     for k, v in med.items())


def suite_pack(quick: bool) -> None:
    if not NT.available():
        sys.exit("the compiled kernels are not available here")
    for n in (8, 1):
        for hw, c, f, k in PACK_SHAPES[:3] if quick else PACK_SHAPES:
            rounds = 10 if quick else (40 if n == 8 else 200)
            print(row(f"N={n} {hw}² {c}->{f} {k}x{k}", pack_case(n, hw, c, f, k, rounds)),
                  flush=True)


def pack_case(n: int, hw: int, c: int, f: int, k: int, rounds: int) -> dict[str, float]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, c, hw, hw, generator=g).contiguous(memory_format=torch.channels_last)
    w = torch.randn(f, c, k, k, generator=g) / (c * k * k) ** 0.5
    b = torch.randn(f, generator=g)
    p = k // 2
    m = n * hw * hw
    want = F.relu(F.conv2d(x, w, b, padding=p)).permute(0, 2, 3, 1).reshape(m, f).numpy()
    xl = x.permute(0, 2, 3, 1).numpy()  # (N, H, W, C) view
    w4 = w.permute(2, 3, 1, 0).numpy()  # (k, k, C, F) view of torch's (F, C, k, k)
    packed = native.pack_taps(np.ascontiguousarray(w4))
    bn, geo = b.numpy(), (k, k, 1, 1, p, p, 1, 1, hw, hw)
    fns = {
        "taps packed before": lambda y: native.taps(xl, packed, y, bn, "relu", None, geo,
                                                    packed=True, team=2),
        "taps per call": lambda y: native.taps(xl, w4, y, bn, "relu", None, geo, team=2),
    }
    if k == 1:
        wt = w.reshape(f, c).t().numpy()  # (C, F) view of torch's (F, C)
        fns["rows per call"] = lambda y: native.rows(xl.reshape(m, c), wt, y, bn, "relu",
                                                     team=2)
    outs = {name: np.empty((m, f), np.float32) for name in fns}  # (M, F) each
    for name, fn in fns.items():
        if not fn(outs[name]):
            sys.exit(f"{name} declined the call")
        err = float(np.abs(outs[name] - want).max())
        if err > 1e-3 * max(1.0, float(np.abs(want).max())):
            sys.exit(f"{name} gave a wrong result at {(n, c, f, hw, k)}: {err}")
    return interleaved({name: (lambda fn=fn, y=outs[name]: fn(y)) for name, fn in fns.items()},
                       rounds)


def suite_batch1(quick: bool) -> None:
    torch.manual_seed(0)
    ours = Conv1x1(64, 64).eval()
    theirs = torch.nn.Conv2d(64, 64, 1).eval()
    theirs.load_state_dict(ours.state_dict())
    for fmt in (torch.contiguous_format, torch.channels_last):
        x = torch.randn(1, 64, 16, 16).contiguous(memory_format=fmt)
        with torch.no_grad():
            torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-5)

            def call(m: torch.nn.Module, x: torch.Tensor = x) -> Callable[[], object]:
                def run() -> None:
                    for _ in range(20):
                        m(x)
                return run

            med = interleaved({"nn.Conv2d": call(theirs), "Conv1x1": call(ours)},
                              rounds=50 if quick else 1000)
        med = {k: v / 20 for k, v in med.items()}  # per call
        name = "channels_last" if fmt == torch.channels_last else "NCHW"
        print(row(f"N=1 16² 64->64 {name}", med), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--suite", choices=["pack", "batch1"], required=True)
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    args = parser.parse_args(argv)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, kernels "
          f"{native.ISA}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")
    {"pack": suite_pack, "batch1": suite_batch1}[args.suite](args.quick)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
