"""The ``ops`` and ``models`` suites: problems, references, and one row per implementation.

Every row is a dict (see :func:`pointwise.bench.harness.result`) with the problem it
belongs to; :func:`pointwise.bench.harness.add_ratios` then compares it with the best peer
in its layout. FLOPs and bytes come from :func:`pointwise.cost.conv_cost` (ops) and
:func:`pointwise.analyze.analyze` (models), which counts with the same module.
"""

from __future__ import annotations

import contextlib
import copy
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from pointwise.bench import harness as h
from pointwise.bench import peers
from pointwise.bench.roofs import attainable
from pointwise.cost import Cost, conv_cost


@dataclass(frozen=True)
class Shape:
    net: str
    n: int
    h: int
    c: int
    f: int
    stride: int = 1

    @property
    def name(self) -> str:
        s = f"{self.net} {self.h}x{self.h} {self.c}->{self.f}"
        s += f" s{self.stride}" if self.stride > 1 else ""
        return s + (f" N={self.n}" if self.n != 8 else "")

    def cost(self, bias: bool) -> Cost:
        return conv_cost(self.c, self.f, 1, input_size=self.h, stride=self.stride, bias=bias,
                         batch=self.n)


# The 18 1×1 shapes of the core issue (ResNet-50, MobileNetV2, GoogLeNet 3a; N=8) and the
# tutorial's toy example.
SHAPES = [
    Shape("resnet50", 8, 56, 64, 256), Shape("resnet50", 8, 56, 256, 64),
    Shape("resnet50", 8, 28, 512, 128), Shape("resnet50", 8, 28, 128, 512),
    Shape("resnet50", 8, 14, 1024, 256), Shape("resnet50", 8, 14, 256, 1024),
    Shape("resnet50", 8, 7, 2048, 512), Shape("resnet50", 8, 7, 512, 2048),
    Shape("resnet50", 8, 56, 256, 512, stride=2),
    Shape("mobilenetv2", 8, 112, 32, 16), Shape("mobilenetv2", 8, 56, 24, 144),
    Shape("mobilenetv2", 8, 56, 144, 24), Shape("mobilenetv2", 8, 28, 192, 32),
    Shape("mobilenetv2", 8, 14, 384, 64), Shape("mobilenetv2", 8, 7, 960, 320),
    Shape("googlenet3a", 8, 28, 192, 64), Shape("googlenet3a", 8, 28, 192, 96),
    Shape("googlenet3a", 8, 28, 192, 16),
    Shape("toy", 1, 3, 2, 1),
]
QUICK = ("mobilenetv2 7x7 960->320", "googlenet3a 28x28 192->16", "toy")
MODELS = ("resnet50", "mobilenet_v2", "googlenet")


@dataclass(frozen=True)
class Settings:
    threads: int
    repeats: int
    target_s: float
    warm_s: float
    settle_s: float
    rtol: float
    quick: bool


def select(spec: str | None, quick: bool) -> list[Shape]:
    """Shapes whose name contains one of the comma-separated substrings of ``spec``."""
    if spec:
        subs = [t.strip().lower() for t in spec.split(",") if t.strip()]
        return [s for s in SHAPES if any(t in s.name.lower() for t in subs)]
    return [s for s in SHAPES if not quick or s.name.startswith(QUICK)]


def _rows(impls: list[h.Impl], problem: dict[str, Any], flops: int, nbytes: int,
          roof: float, foreign: float) -> list[dict[str, Any]]:
    rows = []
    for im in impls:
        r = {**problem, **h.result(im, flops, nbytes), "roof_gflops": roof, "bg": foreign}
        if "gflops" in r:
            r["pct_roof"] = 100 * r["gflops"] / roof
        rows.append(r)
    return rows


def _run(impls: list[h.Impl], st: Settings, say: Callable[[str], None],
         label: str) -> float:
    for note in h.verify(impls, st.rtol):
        say(f"{label}: {note}")
    h.peak_memory(impls)
    return h.measure(impls, st.repeats, st.target_s, st.warm_s, st.settle_s,
                     retries=0 if st.quick else h.RETRIES)


def run_ops(shapes: list[Shape], st: Settings, roofs: dict[str, Any],
            say: Callable[[str], None]) -> list[dict[str, Any]]:
    """Forward plain, forward fused (bias + ReLU) and backward, for every shape."""
    rng = np.random.default_rng(0)
    rows: list[dict[str, Any]] = []
    for sh in shapes:
        s = sh.stride
        x = rng.standard_normal((sh.n, sh.h, sh.h, sh.c), dtype=np.float32)  # (N, H, W, C)
        w = rng.standard_normal((sh.c, sh.f), dtype=np.float32)  # (C, F)
        w *= np.float32(1 / np.sqrt(sh.c))  # |y| ~ 1 for every C
        b = rng.standard_normal(sh.f, dtype=np.float32)  # (F,)
        xs64 = x[:, ::s, ::s, :].astype(np.float64)  # (N, Ho, Wo, C)
        w64 = w.astype(np.float64)
        ref = np.einsum("nhwc,cf->nhwf", xs64, w64, optimize=True)  # (N, Ho, Wo, F)
        ref_br = np.maximum(ref + b, 0.0)
        gy = rng.standard_normal(ref.shape, dtype=np.float32)  # (N, Ho, Wo, F)
        gx = np.zeros(x.shape)
        gx[:, ::s, ::s, :] = np.einsum("nhwf,cf->nhwc", gy.astype(np.float64), w64,
                                       optimize=True)
        gw = np.einsum("nhwc,nhwf->cf", xs64, gy.astype(np.float64), optimize=True)
        gb = gy.astype(np.float64).sum(axis=(0, 1, 2))
        for mode in ("forward", "forward+bias+relu", "backward"):
            if mode == "backward":
                cost = sh.cost(bias=True)
                # grad_x and grad_w: two GEMMs of the forward's size
                flops = 2 * cost.flops
                nbytes = 4 * (2 * cost.input_elems + cost.output_elems + 2 * cost.params)
                impls = peers.backward(x, w, gy, s, (gx, gw, gb))
            else:
                fused = mode != "forward"
                cost = sh.cost(bias=fused)
                flops, nbytes = cost.flops, cost.bytes(4)
                impls = peers.forward(x, w, b if fused else None, s,
                                      ref_br if fused else ref, st.threads)
            label = f"{sh.name} | {mode}"
            foreign = _run(impls, st, say, label)
            roof = attainable(roofs, flops / nbytes)
            problem = {"suite": "ops", "shape": sh.name, "mode": mode, "problem": label,
                       "flops": flops, "bytes": nbytes, "intensity": flops / nbytes}
            rows += _rows(impls, problem, flops, nbytes, roof, foreign)
            say(f"done {label}")
    h.add_ratios(rows)
    return rows


def run_models(names: tuple[str, ...], st: Settings, roofs: dict[str, Any],
               say: Callable[[str], None], batch: int = 8, size: int = 224
               ) -> list[dict[str, Any]]:
    """Whole-model inference: torch eager NCHW and channels_last, ``convert()``, ONNX.

    "torch eager" is the zoo's model with every ``Conv1x1`` swapped for ``nn.Conv2d``
    (:func:`pointwise.nn.to_conv2d`): torch's kernels alone.
    """
    torch = h.pin_torch(st.threads)
    import pointwise.models as pm
    from pointwise.analyze import analyze
    from pointwise.nn import convert, to_conv2d

    rows: list[dict[str, Any]] = []
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, size, size, generator=gen)  # (N, 3, H, W)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    for name in names:
        torch.manual_seed(0)
        model = pm.create(name).eval()
        eager = to_conv2d(model)  # torch's kernels only
        with torch.inference_mode():
            ref = copy.deepcopy(model).double()(x.double()).numpy()  # float64 reference
        flops = 2 * analyze(model, tuple(x.shape)).macs
        nbytes = 4 * (x.numel() + sum(p.numel() for p in model.parameters()) + ref.size)
        cl = torch.channels_last
        m_cl = copy.deepcopy(eager).to(memory_format=cl)  # type: ignore[call-overload]
        ours, _ = convert(model)
        ours_cl = copy.deepcopy(ours).to(memory_format=cl)  # type: ignore[call-overload]

        def check(y: Any, ref: np.ndarray = ref) -> float:
            return h.rel_err(y.numpy(), ref)

        def call(m: Any, xin: Any) -> Callable[[], Any]:
            return lambda: m(xin)

        impls = [
            h.Impl("torch eager NCHW", "torch", "NCHW", "torch", call(eager, x), check),
            h.Impl("torch eager channels_last", "torch", "NHWC", "torch", call(m_cl, x_cl),
                   check),
            h.Impl("pointwise convert() NCHW", "pointwise", "NCHW", "torch", call(ours, x),
                   check),
            h.Impl("pointwise convert() channels_last", "pointwise", "NHWC", "torch",
                   call(ours_cl, x_cl), check),
        ]
        ort = peers.module("onnxruntime")
        if ort is not None and peers.module("onnx") is not None:
            impls.append(_onnx_impl(ort, torch, model, x, st.threads, ref))
        with torch.inference_mode():
            foreign = _run(impls, st, say, name)
        problem = {"suite": "models", "shape": f"{name} {batch}x3x{size}x{size}",
                   "mode": "inference", "problem": name, "flops": flops, "bytes": nbytes,
                   "intensity": flops / nbytes}
        rows += _rows(impls, problem, flops, nbytes, roofs["gemm_gflops"], foreign)
        say(f"done {name}")
    h.add_ratios(rows)
    return rows


def _onnx_impl(ort: Any, torch: Any, model: Any, x: Any, threads: int,
               ref: np.ndarray) -> h.Impl:
    fd, path = tempfile.mkstemp(suffix=".onnx")
    os.close(fd)
    try:
        with open(os.devnull, "w") as null, contextlib.redirect_stderr(null):  # its warnings
            torch.onnx.export(model, (x,), path, dynamo=False, input_names=["x"],
                              output_names=["y"])
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    finally:
        os.unlink(path)
    xn = x.numpy()
    return h.Impl("onnxruntime (exported)", "onnxruntime", "NCHW", "onnxruntime",
                  lambda: sess.run(None, {"x": xn})[0], lambda y: h.rel_err(y, ref))
