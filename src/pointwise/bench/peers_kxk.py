"""Ours and every peer's k×k conv (bias + ReLU), on one problem, as :class:`Impl` s.

``x`` is NHWC float32, ``w`` HWIO (kh, kw, C, F); each output goes back to NHWC to be
checked against the float64 reference.

===================  ======  =============================================================
implementation       layout  call
===================  ======  =============================================================
pointwise            NHWC    ``pw.conv2d(x, w, b, ..., out=y)`` on NumPy arrays: the taps
                             kernels, the weight packed for the call
pointwise Conv2d     NHWC    ``pointwise.nn.Conv2d`` on a channels_last tensor, inference:
                             the taps kernels, the weight packed once (as ``convert()``
                             leaves a model; onnxruntime also reorders weights once)
torch NCHW           NCHW    ``F.conv2d`` on an NCHW-contiguous tensor, then ``relu_``
torch channels_last  NHWC    the same on a channels_last tensor
onnxruntime          NCHW    a Conv → Relu model (ORT fuses them; NCHWc kernels inside)
===================  ======  =============================================================
"""

from __future__ import annotations

from typing import Any

import numpy as np

import pointwise as pw
from pointwise.bench.harness import Impl, rel_err
from pointwise.bench.peers import module, onnx_graph

__all__ = ["forward"]


def forward(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int, padding: int,
            ref: np.ndarray, threads: int) -> list[Impl]:
    """Ours and every importable peer for ``relu(conv2d(x, w) + b)``."""
    n, h, wd, _ = x.shape
    kh, kw, _, f = w.shape
    ho = (h + 2 * padding - kh) // stride + 1
    wo = (wd + 2 * padding - kw) // stride + 1
    y = np.empty((n, ho, wo, f), np.float32)
    impls = [Impl("pointwise", "pointwise", "NHWC", "pointwise",
                  lambda: pw.conv2d(x, w, b, stride=stride, padding=padding, activation="relu",
                                    out=y), lambda out: rel_err(out, ref))]
    return impls + _torch(x, w, b, stride, padding, ref) + _onnxruntime(
        x, w, b, stride, padding, ref, threads)


def _nchw(y: Any) -> np.ndarray:
    return np.asarray(y).transpose(0, 2, 3, 1)  # (N, F, Ho, Wo) -> (N, Ho, Wo, F)


def _torch(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int, padding: int,
           ref: np.ndarray) -> list[Impl]:
    torch = module("torch")
    if torch is None:
        return []
    from pointwise.nn import Conv2d

    kh, kw, c, f = w.shape
    tx = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))  # (N, C, H, W)
    tx_cl = tx.contiguous(memory_format=torch.channels_last)
    tw = torch.from_numpy(np.ascontiguousarray(w.transpose(3, 2, 0, 1)))  # (F, C, kh, kw)
    tb = torch.from_numpy(b)
    conv = Conv2d(c, f, (kh, kw), stride=stride, padding=padding, activation="relu").eval()
    conv.load_state_dict({"weight": tw, "bias": tb})
    conv.requires_grad_(False)
    fn = torch.nn.functional

    def torch_conv(xt: Any) -> Any:
        return lambda: torch.relu_(fn.conv2d(xt, tw, tb, stride=stride, padding=padding))

    def ours() -> Any:
        with torch.inference_mode():
            return conv(tx_cl)

    check = lambda out: rel_err(_nchw(out.numpy()), ref)  # noqa: E731
    return [
        Impl("pointwise Conv2d", "pointwise", "NHWC", "torch", ours, check),
        Impl("torch NCHW", "torch", "NCHW", "torch", torch_conv(tx), check),
        Impl("torch channels_last", "torch", "NHWC", "torch", torch_conv(tx_cl), check),
    ]


def _onnxruntime(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int, padding: int,
                 ref: np.ndarray, threads: int) -> list[Impl]:
    if module("onnxruntime") is None or module("onnx") is None:
        return []
    from onnx import helper, numpy_helper

    kh, kw = w.shape[:2]
    x_nchw = np.ascontiguousarray(x.transpose(0, 3, 1, 2))  # (N, C, H, W)
    inits = [numpy_helper.from_array(np.ascontiguousarray(w.transpose(3, 2, 0, 1)), "w"),
             numpy_helper.from_array(b, "b")]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["z"], kernel_shape=[kh, kw],
                              strides=[stride, stride], pads=[padding] * 4),
             helper.make_node("Relu", ["z"], ["y"])]
    return onnx_graph(nodes, inits, x_nchw, ref, threads)
