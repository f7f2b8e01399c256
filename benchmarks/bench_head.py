"""A network's head (global average pool + Linear) on pointwise's kernels against torch's.

Two suites, each checked against float64 before anything is timed, medians over rounds in
which the implementations alternate, 2 threads by default:

* ``batch``: the classifier alone, ``y = x Wᵀ + b``, by batch size: ``linear_at`` (the weight
  read in place as dot products), ``rows_at`` (the rows kernel's GEMM, the weight packed per
  thread from torch's storage) and torch's ``F.linear``, warm (back to back). It chose
  ``pointwise.nn.head.LINEAR_MAX_BATCH``.
* ``after-body``: a ``convert()``ed zoo model's head (pool, flatten, classifier) timed right
  after its body ran, as in a forward: torch's modules (``to_conv2d``) against
  ``convert()``'s, and each half alone.

    .venv/bin/python benchmarks/bench_head.py --suite batch
    .venv/bin/python benchmarks/bench_head.py --suite after-body --models mobilenet_v2 --n 1
    .venv/bin/python benchmarks/bench_head.py --quick    # a smoke run
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

import pointwise.models as pm
from pointwise.nn import _native_torch as NT
from pointwise.nn import convert, to_conv2d


def _median_ms(ts: list[float]) -> str:
    return f"{1e3 * statistics.median(ts):.3f}"


def _ways(threads: int, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor,
          y: torch.Tensor) -> dict[str, Callable[[], object]]:
    """The classifier three ways on x (N, C), w (F, C), b (F,), the kernels writing y (N, F)."""
    k, t = NT._native._kernel, threads
    (n, c), f = x.shape, w.shape[0]
    xa, wa, ya, ba = x.data_ptr(), w.data_ptr(), y.data_ptr(), b.data_ptr()
    return {"linear_at": lambda: k.linear_at(t, True, xa, c, wa, c, ya, f, ba, n, c, f),
            "rows_at": lambda: k.rows_at(t, True, 0, xa, c, (0, 0, 0, 0, 0), wa, c, True, ya,
                                         f, ba, n, c, f),
            "torch": lambda: torch.nn.functional.linear(x, w, b)}


def batch(shapes: list[tuple[int, int]], batches: list[int], rounds: int, threads: int) -> None:
    for c, f in shapes:
        w, b = torch.randn(f, c) / c**0.5, torch.randn(f)
        for n in batches:
            x, y = torch.randn(n, c), torch.empty(n, f)
            ways = _ways(threads, x, w, b, y)
            ref = x.double() @ w.double().T + b.double()  # (N, C) @ (C, F)
            for name, way in ways.items():
                out = way()
                got = out if isinstance(out, torch.Tensor) else y
                assert (out is not False) and torch.allclose(got.double(), ref, atol=1e-4), name
            ts: dict[str, list[float]] = {name: [] for name in ways}
            for _ in range(rounds):
                for name, way in ways.items():
                    way()
                    t = time.perf_counter()
                    way()
                    ts[name].append(time.perf_counter() - t)
            print(f"{c}->{f} N={n:4d}  " + "  ".join(f"{k_} {_median_ms(v)} ms"
                                                     for k_, v in ts.items()), flush=True)


def after_body(name: str, n: int, rounds: int) -> None:
    model, _ = convert(pm.create(name).eval())
    model = model.to(memory_format=torch.channels_last)
    x = torch.randn(n, 3, 224, 224).contiguous(memory_format=torch.channels_last)
    fc_name = "classifier" if hasattr(model, "classifier") else "fc"
    body = model.features if hasattr(model, "features") else torch.nn.Sequential(
        model.conv1, model.bn1, model.relu, model.maxpool, *model.layer1, *model.layer2,
        *model.layer3, *model.layer4)
    new = (model.avgpool, model.get_submodule(fc_name))
    old = (to_conv2d(new[0]), to_conv2d(new[1]))
    parts = {"head": lambda p, h: p[1](torch.flatten(p[0](h), 1)),
             "pool": lambda p, h: p[0](h)}
    with torch.inference_mode():
        h = body(x)
        v = torch.flatten(new[0](h), 1)
        want = parts["head"](old, h).double()
        torch.testing.assert_close(new[1](v).double(), want, rtol=1e-5,
                                   atol=1e-5 * want.abs().max().item())
        parts["linear"] = lambda p, h: p[1](v)
        ts: dict[tuple[str, str], list[float]] = {}
        for r in range(rounds):
            for part, run in parts.items():
                for which, mods in (("torch", old), ("pointwise", new))[:: 1 if r % 2 else -1]:
                    h = body(x)
                    t = time.perf_counter()
                    run(mods, h)
                    ts.setdefault((part, which), []).append(time.perf_counter() - t)
    print(f"{name} N={n}, right after the body, ms (torch / pointwise):  " + "  ".join(
        f"{part} {_median_ms(ts[part, 'torch'])} / {_median_ms(ts[part, 'pointwise'])}"
        for part in parts), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    p.add_argument("--suite", choices=("batch", "after-body"), default="batch")
    p.add_argument("--models", default="mobilenet_v2,mobilenet_v1,resnet18")
    p.add_argument("--n", type=int, default=1, help="batch of the after-body suite")
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quick", action="store_true",
                   help="a smoke run: one shape and two batches, or the first model, 1 round")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if not NT.available():
        raise SystemExit("error: the compiled kernels are not used here (POINTWISE_NATIVE?)")
    rounds = 1 if args.quick else args.rounds
    if args.suite == "batch":
        shapes = [(1280, 1000), (2048, 1000), (512, 1000)]
        batches = [1, 8, 16, 32, 64, 96, 128, 256]
        if args.quick:
            shapes, batches = shapes[:1], [1, 8]
        batch(shapes, batches, rounds, args.threads)
    else:
        names = args.models.split(",")
        for name in names[:1] if args.quick else names:
            after_body(name, args.n, rounds)


if __name__ == "__main__":
    main()
