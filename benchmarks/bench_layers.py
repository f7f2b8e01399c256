"""Where a ``convert()``ed model's time goes: every conv's median time and rate, beside
onnxruntime's whole-model time.

The models suite (``pointwise bench --suite models``) says which engine is faster; this
script says which layers make the difference. The zoo's model is converted and run in
channels-last; forward hooks time every leaf module (a hook pair costs ~2 µs, far below any
conv here). Its output is checked against a float64 reference first. onnxruntime runs the
exported model (all graph optimizations, the same threads) and is timed alone, each engine
after ``--idle`` seconds of idle, so neither runs while the other's threads still spin.

    .venv/bin/python benchmarks/bench_layers.py --model resnet50 --batch 8
    .venv/bin/python benchmarks/bench_layers.py --model mobilenet_v2 --batch 1 --top 10
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import copy
import os
import statistics
import tempfile
import time
from typing import Any

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="resnet50")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--idle", type=float, default=0.5)
    p.add_argument("--quick", action="store_true",
                   help="a smoke run: ResNet-18 at 64x64, N=1, one forward")
    p.add_argument("--top", type=int, default=0,
                   help="only the N convs of lowest GFLOP/s, weakest first (0: all, in order)")
    a = p.parse_args()
    if a.quick:
        a.model, a.size, a.batch, a.repeats, a.idle = "resnet18", 64, 1, 1, 0.2

    import torch

    import pointwise.models as pm
    from pointwise.nn import convert

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = pm.create(a.model).eval()
    x = torch.randn(a.batch, 3, a.size, a.size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        ref = copy.deepcopy(model).double()(x.double()).numpy()  # float64 reference
    ours, _ = convert(copy.deepcopy(model))
    ours = ours.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    x_cl = x.contiguous(memory_format=torch.channels_last)

    times: dict[str, list[float]] = collections.defaultdict(list)
    macs: dict[str, int] = {}
    started: dict[str, float] = {}
    leaves = [(n, m) for n, m in ours.named_modules() if not list(m.children())]

    def before(name: str) -> Any:
        return lambda m, args: started.__setitem__(name, time.perf_counter())

    def after(name: str) -> Any:
        def hook(m: Any, args: tuple[Any, ...], y: Any) -> None:
            times[name].append(time.perf_counter() - started[name])
            if hasattr(m, "in_channels"):
                kh, kw = getattr(m, "kernel_size", (1, 1))
                # MACs: N·Ho·Wo·F outputs, each C/groups·kh·kw products
                macs[name] = (y.numel() * m.in_channels // getattr(m, "groups", 1) * kh * kw)
        return hook

    for name, m in leaves:
        m.register_forward_pre_hook(before(name))
        m.register_forward_hook(after(name))

    with torch.inference_mode():
        err = _rel_err(ours(x_cl).numpy(), ref)
        if err > 1e-4:
            raise SystemExit(f"error: {a.model} converted: relative error {err:.2e} > 1e-4")
        times.clear()
        sess = _onnx_session(torch, model, x, a.threads)
        xn = x.numpy()
        err_ort = _rel_err(sess.run(None, {"x": xn})[0], ref) if sess is not None else None
        total_ort: list[float] = []
        total_ours: list[float] = []
        for _ in range(a.repeats):
            if sess is not None:
                time.sleep(a.idle)
                t0 = time.perf_counter()
                sess.run(None, {"x": xn})
                total_ort.append(time.perf_counter() - t0)
            time.sleep(a.idle)
            t0 = time.perf_counter()
            ours(x_cl)
            total_ours.append(time.perf_counter() - t0)

    ms = {n: 1e3 * statistics.median(v) for n, v in times.items()}
    print(f"{a.model} N={a.batch} {a.size}², {a.threads} threads, medians of {a.repeats} "
          f"forwards after {a.idle} s idle; output rel err {err:.1e}")
    line = f"  convert() channels_last {1e3 * statistics.median(total_ours):.1f} ms"
    if sess is not None:
        line += (f", onnxruntime {1e3 * statistics.median(total_ort):.1f} ms "
                 f"(rel err {err_ort:.1e})")
    print(line)
    by_type: dict[str, float] = collections.defaultdict(float)
    for name, m in leaves:
        if name in ms:
            by_type[_kind(m).split(" ")[0] + " " + _kernel(m)] += ms[name]
    print("  by module: " + ", ".join(f"{k} {v:.1f} ms" for k, v in
                                       sorted(by_type.items(), key=lambda t: -t[1])))
    convs = [(n, m) for n, m in leaves if n in macs]
    if a.top:
        convs = sorted(convs, key=lambda t: macs[t[0]] / ms[t[0]])[: a.top]
    print(f"  {'layer':30s} {'kind':22s} {'ms':>7s} {'GFLOP/s':>8s}")
    for name, m in convs:
        rate = 2 * macs[name] / (ms[name] * 1e6)
        print(f"  {name:30s} {_kind(m):22s} {ms[name]:7.2f} {rate:8.1f}")


def _kind(m: Any) -> str:
    """'Conv1x1 64->256 s1' and the like: the module's class, channels and stride."""
    if not hasattr(m, "in_channels"):
        return type(m).__name__
    k = _kernel(m)
    g = f" g{m.groups}" if getattr(m, "groups", 1) > 1 else ""
    return (f"{type(m).__name__} {k} {m.in_channels}->{m.out_channels} "
            f"s{m.stride[0]}{g}")


def _kernel(m: Any) -> str:
    """'3x3', '1x1' for a conv (Conv1x1 has no kernel_size), '' for anything else."""
    if not hasattr(m, "in_channels"):
        return ""
    return "x".join(map(str, getattr(m, "kernel_size", (1, 1))))


def _rel_err(y: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(y - ref).max() / max(np.abs(ref).max(), 1e-30))


def _onnx_session(torch: Any, model: Any, x: Any, threads: int) -> Any:
    """onnxruntime on the exported model, or None where onnx or onnxruntime is missing."""
    try:
        import onnx  # noqa: F401  (torch.onnx.export needs it)
        import onnxruntime as ort
    except ImportError:
        return None
    fd, path = tempfile.mkstemp(suffix=".onnx")
    os.close(fd)
    try:
        with open(os.devnull, "w") as null, contextlib.redirect_stderr(null):
            torch.onnx.export(model, (x,), path, dynamo=False, input_names=["x"],
                              output_names=["y"])
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    finally:
        os.unlink(path)


if __name__ == "__main__":
    main()
