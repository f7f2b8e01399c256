"""Frozen weights against per-call packing: one ``convert()``ed zoo model both ways.

``convert(model)`` packs each conv's weight on every call, from torch's own memory, so any
edit is seen; ``convert(model, freeze=True)`` packs each once (:mod:`pointwise.nn.frozen`).
Both run channels-last in one process, taking turns forward by forward (the order rotating
each round), after both outputs are checked against the float64 model. Prints each median
and per-call ÷ frozen (> 1: freezing is faster).

    .venv/bin/python benchmarks/bench_frozen.py --model resnet50 --batch 1
    .venv/bin/python benchmarks/bench_frozen.py --quick    # a smoke run: ResNet-18, 64×64
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet50", help="a zoo name (pointwise.models)")
    ap.add_argument("--batch", type=int, default=1, help="images per forward (default 1)")
    ap.add_argument("--size", type=int, default=224, help="image height and width")
    ap.add_argument("--rounds", type=int, default=30, help="forwards of each variant")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's own)")
    ap.add_argument("--quick", action="store_true", help="ResNet-18 at 64×64, 3 rounds")
    a = ap.parse_args()
    if a.quick:
        a.model, a.size, a.rounds = "resnet18", 64, 3
    if a.batch < 1 or a.rounds < 1 or a.size < 32:
        ap.error(f"--batch and --rounds must be ≥ 1 and --size ≥ 32, got {a.batch}, "
                 f"{a.rounds}, {a.size}")

    import torch

    import pointwise.models as pm
    from pointwise.nn import convert

    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = pm.create(a.model).eval()
    x = torch.randn(a.batch, 3, a.size, a.size)  # (N, 3, H, W)
    cl = torch.channels_last
    variants = {"per call": convert(model)[0].to(memory_format=cl),
                "frozen": convert(model, freeze=True)[0].to(memory_format=cl)}
    xcl = x.contiguous(memory_format=cl)
    with torch.inference_mode():
        ref = copy.deepcopy(model).double()(x.double())
        scale = float(ref.abs().max())
        for name, m in variants.items():
            m(xcl)
            err = float((m(xcl).double() - ref).abs().max()) / scale
            if not err < 1e-4:
                raise SystemExit(f"{name}: relative error {err:.2e} against float64 "
                                 f"exceeds 1e-4; nothing timed")
            print(f"{name}: relative error {err:.1e} against float64")
        times: dict[str, list[float]] = {k: [] for k in variants}
        names = list(variants)
        for r in range(a.rounds):
            for name in names[r % 2:] + names[:r % 2]:
                t = time.perf_counter()
                variants[name](xcl)
                times[name].append(time.perf_counter() - t)
    med = {k: 1e3 * statistics.median(v) for k, v in times.items()}
    print(f"{a.model} N={a.batch} {a.size}², {torch.get_num_threads()} threads, "
          f"{a.rounds} rounds: per call {med['per call']:.2f} ms, frozen {med['frozen']:.2f} "
          f"ms, per call ÷ frozen {med['per call'] / med['frozen']:.3f}")


if __name__ == "__main__":
    main()
