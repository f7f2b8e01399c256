"""Ours and every peer's MobileNetV2 inverted residual, on one problem, as :class:`Impl` s.

``x`` is NHWC float32 and the weights HWIO; each output goes back to NHWC to be checked
against the float64 reference.

=====================  ======  ==========================================================
implementation         layout  call
=====================  ======  ==========================================================
pointwise fused        NHWC    ``pw.inverted_residual`` on NumPy arrays: one pass over
                               bands of rows, the expanded tensor kept in L2
pointwise layers       NHWC    ``pw.conv1x1`` → ``pw.conv2d`` (depthwise) → ``pw.conv2d``
                               (+ x): the same kernels, one layer at a time
pointwise module       NHWC    ``pointwise.nn.FusedInvertedResidual`` on a channels_last
                               tensor, inference (what ``convert()`` leaves)
torch channels_last    NHWC    ``nn.Conv2d`` → ``ReLU6`` → depthwise → ``ReLU6`` →
                               ``nn.Conv2d`` (+ x), BN folded, channels_last
onnxruntime            NCHW    the same block as an ONNX graph (Conv, Clip, Add; ORT fuses
                               each Conv with its Clip)
=====================  ======  ==========================================================
"""

from __future__ import annotations

from typing import Any

import numpy as np

import pointwise as pw
from pointwise.bench.harness import Impl, rel_err
from pointwise.bench.peers import module, onnx_graph

__all__ = ["forward"]

Weights = tuple[Any, Any, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def forward(x: np.ndarray, wts: Weights, stride: int, residual: bool, ref: np.ndarray,
            threads: int) -> list[Impl]:
    """Ours and every importable peer for the block with NHWC weights ``wts``
    (we (C, E) or None, be, wd (3, 3, E, 1), bd, wp (E, F), bp)."""
    we, be, wd, bd, wp, bp = wts
    e = wd.shape[2]

    def layers() -> np.ndarray:
        h = x if we is None else pw.conv1x1(x, we, be, activation="relu6")
        h = pw.conv2d(h, wd.reshape(3, 3, 1, e), bd, stride=stride, padding=1, groups=e,
                      activation="relu6")
        if residual:
            return pw.conv2d(h, wp[None, None], bp, residual=x)
        return pw.conv1x1(h, wp, bp)

    check = lambda out: rel_err(out, ref)  # noqa: E731
    impls = [
        Impl("pointwise fused", "pointwise", "NHWC", "pointwise",
             lambda: pw.inverted_residual(x, we, be, wd, bd, wp, bp, stride=stride,
                                          residual=residual), check),
        Impl("pointwise layers", "pointwise", "NHWC", "pointwise", layers, check),
    ]
    return impls + _torch(x, wts, stride, residual, ref) + _onnxruntime(
        x, wts, stride, residual, ref, threads)


def _nchw(y: Any) -> np.ndarray:
    return np.asarray(y).transpose(0, 2, 3, 1)  # (N, F, Ho, Wo) -> (N, Ho, Wo, F)


def _oihw(wts: Weights) -> list[Any]:
    """The three weights in torch's and ONNX's OIHW."""
    we, _, wd, _, wp, _ = wts
    return [None if we is None else np.ascontiguousarray(we.T[:, :, None, None]),
            np.ascontiguousarray(wd.transpose(2, 3, 0, 1)),  # (3, 3, E, 1) -> (E, 1, 3, 3)
            np.ascontiguousarray(wp.T[:, :, None, None])]


def _torch(x: np.ndarray, wts: Weights, stride: int, residual: bool,
           ref: np.ndarray) -> list[Impl]:
    torch = module("torch")
    if torch is None:
        return []
    from torch import nn

    from pointwise.nn import Conv1x1, Conv2d, FusedInvertedResidual

    biases = [wts[1], wts[3], wts[5]]
    ws = _oihw(wts)
    tx = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))  # (N, C, H, W)
    tx = tx.contiguous(memory_format=torch.channels_last)

    def load(m: nn.Module, w: np.ndarray, b: np.ndarray) -> nn.Module:
        m.load_state_dict({"weight": torch.from_numpy(w), "bias": torch.from_numpy(b)})
        return m.eval().requires_grad_(False)

    e, f = ws[1].shape[0], ws[2].shape[0]
    c = x.shape[3]
    plain: list[nn.Module] = []
    if ws[0] is not None:
        plain += [load(nn.Conv2d(c, e, 1), ws[0], biases[0]), nn.ReLU6(inplace=True)]
    plain += [load(nn.Conv2d(e, e, 3, stride, 1, groups=e), ws[1], biases[1]),
              nn.ReLU6(inplace=True), load(nn.Conv2d(e, f, 1), ws[2], biases[2])]
    seq = nn.Sequential(*plain)
    seq.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    expand = None if ws[0] is None else load(Conv1x1(c, e, activation="relu6"), ws[0],
                                             biases[0])
    dw = load(Conv2d(e, e, 3, stride, 1, groups=e, activation="relu6"), ws[1], biases[1])
    fused = FusedInvertedResidual(expand, dw, load(Conv1x1(e, f), ws[2], biases[2]), residual)

    def torch_cl() -> Any:
        with torch.inference_mode():
            y = seq(tx)
            return y.add_(tx) if residual else y

    def ours() -> Any:
        with torch.inference_mode():
            return fused(tx)

    check = lambda out: rel_err(_nchw(out.numpy()), ref)  # noqa: E731
    return [Impl("pointwise module", "pointwise", "NHWC", "torch", ours, check),
            Impl("torch channels_last", "torch", "NHWC", "torch", torch_cl, check)]


def _onnxruntime(x: np.ndarray, wts: Weights, stride: int, residual: bool, ref: np.ndarray,
                 threads: int) -> list[Impl]:
    if module("onnxruntime") is None or module("onnx") is None:
        return []
    from onnx import helper, numpy_helper

    ws = _oihw(wts)
    e = ws[1].shape[0]
    x_nchw = np.ascontiguousarray(x.transpose(0, 3, 1, 2))  # (N, C, H, W)
    inits = [numpy_helper.from_array(np.array(0, np.float32), "lo"),
             numpy_helper.from_array(np.array(6, np.float32), "hi")]
    nodes, h = [], "x"
    for i, (w, b) in enumerate(zip(ws, (wts[1], wts[3], wts[5]), strict=True)):
        if w is None:
            continue
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        kw: dict[str, Any] = ({"group": e, "strides": [stride] * 2, "pads": [1] * 4}
                              if i == 1 else {})
        nodes.append(helper.make_node("Conv", [h, f"w{i}", f"b{i}"], [f"z{i}"],
                                      kernel_shape=list(w.shape[2:]), **kw))
        h = f"z{i}"
        if i < 2:
            nodes.append(helper.make_node("Clip", [h, "lo", "hi"], [f"a{i}"]))
            h = f"a{i}"
    if residual:
        nodes.append(helper.make_node("Add", [h, "x"], ["y"]))
    else:
        nodes[-1].output[0] = "y"
    return onnx_graph(nodes, inits, x_nchw, ref, threads)
