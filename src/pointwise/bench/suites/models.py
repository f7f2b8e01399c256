"""The ``models`` suite: whole networks, torch eager against ``convert()`` and onnxruntime.

Each model runs at batch 8 and batch 1 (:data:`BATCHES`). Besides ``×best`` within a
layout, every row gets ``vs_onnxruntime`` and the text ends with a headline naming the
fastest engine per model (:mod:`pointwise.bench.headline`): onnxruntime runs the exported
NCHW model, so a channels-last row never meets it within its layout.

pointwise runs as ``convert()`` leaves a model (each weight packed on every call, so any
edit is seen) and as ``convert(freeze=True)`` leaves it (weights packed once, as onnxruntime
takes them when its session is made: :mod:`pointwise.nn.frozen`).

FLOPs come from :func:`pointwise.analysis.analyze`, which counts with :mod:`pointwise.cost`.
"""

from __future__ import annotations

import contextlib
import copy
import os
import tempfile
from collections.abc import Callable
from typing import Any

import numpy as np

from pointwise.bench import harness as h
from pointwise.bench import peers
from pointwise.bench.headline import add_vs_onnxruntime, headline
from pointwise.bench.suites.common import Settings, measure, rows

__all__ = ["BATCHES", "MODELS", "headline", "run"]

MODELS = ("resnet18", "resnet50", "resnet101", "mobilenet_v1", "mobilenet_v2", "googlenet")
#: the batch sizes each model runs at: a server's batch, and one image
BATCHES = (8, 1)
#: rounds, time per round (ms), warm-up (s) and tolerance of this suite's runs
DEFAULTS = {"repeats": 5, "target_ms": 200.0, "warm_s": 1.0, "rtol": 1e-3}


def run(st: Settings, roofs: dict[str, Any], say: Callable[[str], None], *,
        models: tuple[str, ...] | None = None, **_: Any) -> list[dict[str, Any]]:
    """The zoo's ``models`` (default :data:`MODELS`; quick: MobileNetV2 at 96×96)."""
    if peers.module("torch") is None:
        raise ModuleNotFoundError("the models suite needs torch, but it does not import",
                                  name="torch")
    names = models or (("mobilenet_v2",) if st.quick else MODELS)
    out: list[dict[str, Any]] = []
    for batch in (8,) if st.quick else BATCHES:
        out += run_models(names, st, roofs, say, batch=batch, size=96 if st.quick else 224)
    add_vs_onnxruntime(out)
    return out


def run_models(names: tuple[str, ...], st: Settings, roofs: dict[str, Any],
               say: Callable[[str], None], batch: int = 8, size: int = 224
               ) -> list[dict[str, Any]]:
    """Whole-model inference: torch eager NCHW and channels_last, ``convert()``, ONNX.

    "torch eager" is the zoo's model with every ``Conv1x1`` swapped for ``nn.Conv2d``
    (:func:`pointwise.nn.to_conv2d`): torch's kernels alone.
    """
    torch = h.pin_torch(st.threads)
    import pointwise.models as pm
    from pointwise.analysis import analyze
    from pointwise.nn import convert, to_conv2d

    out: list[dict[str, Any]] = []
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, size, size, generator=gen)  # (N, 3, H, W)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    for name in names:
        say(f"{name} N={batch}: building, converting, computing the float64 reference")
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
        # weights packed once, as onnxruntime reorders its own when the session is made
        frozen, _ = convert(model, freeze=True)
        frozen_cl = frozen.to(memory_format=cl)  # type: ignore[call-overload]

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
            h.Impl("pointwise convert(freeze=True) channels_last", "pointwise", "NHWC", "torch",
                   call(frozen_cl, x_cl), check),
        ]
        ort = peers.module("onnxruntime")
        if ort is not None and peers.module("onnx") is not None:
            say(f"{name}: exporting to onnxruntime")
            impls.append(_onnx_impl(ort, torch, model, x, st.threads, ref))
        say(f"{name}: verifying and timing {len(impls)} implementations, {st.repeats} rounds")
        with torch.inference_mode():
            foreign = measure(impls, st, say, name)
        problem = {"suite": "models", "shape": f"{name} {batch}x3x{size}x{size}",
                   "mode": "inference", "problem": f"{name} N={batch}", "flops": flops,
                   "bytes": nbytes, "intensity": flops / nbytes}
        out += rows(impls, problem, flops, nbytes, roofs["gemm_gflops"], foreign)
        say(f"done {name}")
    h.add_ratios(out)
    return out


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
