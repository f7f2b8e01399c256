"""Our conv and every peer's, on one problem, as :class:`~pointwise.bench.harness.Impl` s.

Arrays use one alphabet: N, C (in), F (out), H, W; ``x`` is NHWC float32, ``w`` is (C, F).
Each implementation's output is turned back into NHWC (and float64) only to be checked.

Peers, each used only when its library imports (:func:`missing` names the others):

===================  ======  =============================================================
peer                 layout  call
===================  ======  =============================================================
torch NCHW           NCHW    ``F.conv2d`` on an NCHW-contiguous tensor (+ ``relu_``)
torch channels_last  NHWC    ``F.conv2d`` on a channels_last tensor (+ ``relu_``)
torch matmul         NHWC    ``torch.matmul``/``addmm`` on the (N·H·W, C) view, ``out=``
numpy                both    ``np.matmul`` on the view, ``out=`` (+ bias, maximum passes)
onnxruntime          NCHW    a one-node Conv model (Conv → Relu when fused; ORT fuses it)
jax                  both    ``lax.conv_general_dilated`` under ``jax.jit``
tensorflow           NHWC    ``tf.nn.conv2d`` (+ ``bias_add``, ``relu``) in a ``tf.function``
===================  ======  =============================================================

Torch, onnxruntime and TF allocate their outputs on every call (there is no ``out=``):
that cost, and its page faults, are part of their numbers, as their users see them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import numpy as np

import pointwise as pw
from pointwise.bench.harness import Impl, rel_err

OPTIONAL = ("torch", "onnxruntime", "jax", "tensorflow")
_imported: dict[str, Any] = {}


def module(name: str) -> Any:
    """The module if it imports, else None (the import is tried once)."""
    if name not in _imported:
        try:
            _imported[name] = importlib.import_module(name)
        except Exception:  # missing, or broken: either way not a peer here
            _imported[name] = None
    return _imported[name]


def missing() -> list[str]:
    """The optional peers that do not import here."""
    return [n for n in OPTIONAL if module(n) is None]


def onnx_graph(nodes: list[Any], inits: list[Any], x_nchw: np.ndarray, ref: np.ndarray,
               threads: int) -> list[Impl]:
    """onnxruntime on a graph of ``nodes`` from input ``x`` to output ``y``, with the
    initializers ``inits``, as one NCHW implementation checked against ``ref`` (NHWC)."""
    ort = module("onnxruntime")
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_nchw.shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    sess = ort.InferenceSession(model.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])
    return [Impl("onnxruntime", "onnxruntime", "NCHW", "onnxruntime",
                 lambda: sess.run(None, {"x": x_nchw})[0],
                 _checker(ref, _nchw_to_nhwc))]


def _nchw_to_nhwc(y: Any) -> np.ndarray:
    return np.asarray(y).transpose(0, 2, 3, 1)  # (N, F, H, W) -> (N, H, W, F)


def _checker(ref: np.ndarray, to_nhwc: Callable[[Any], np.ndarray]) -> Callable[[Any], float]:
    return lambda y: rel_err(to_nhwc(y), ref)


def forward(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, stride: int,
            ref: np.ndarray, threads: int) -> list[Impl]:
    """Ours and every importable peer for ``act(x·w + b)``; fused (bias + ReLU) iff ``b``."""
    n, h, wd, c = x.shape
    f = w.shape[1]
    s = stride
    act = "relu" if b is not None else None
    x_nchw = np.ascontiguousarray(x.transpose(0, 3, 1, 2))  # (N, C, H, W)
    w_hwio = w.reshape(1, 1, c, f)  # (1, 1, C, F)
    w_oihw = np.ascontiguousarray(w.T).reshape(f, c, 1, 1)  # (F, C, 1, 1)
    ho, wo = pw.output_size(h, 0, s), pw.output_size(wd, 0, s)
    m = n * ho * wo
    y_nhwc = np.empty((n, ho, wo, f), np.float32)
    y_nchw = np.empty((n, f, ho, wo), np.float32)
    nhwc = _checker(ref, lambda y: y)
    nchw = _checker(ref, _nchw_to_nhwc)
    impls = [
        Impl("pointwise", "pointwise", "NHWC", "pointwise",
             lambda: pw.conv1x1(x, w_hwio, b, stride=s, activation=act, out=y_nhwc), nhwc),
        Impl("pointwise", "pointwise", "NCHW", "pointwise",
             lambda: pw.conv1x1(x_nchw, w_oihw, b, layout="NCHW", stride=s, activation=act,
                                out=y_nchw), nchw),
    ]

    # numpy: one matmul on the view (strided pixels gathered first, as every caller must)
    yn_nhwc = np.empty((m, f), np.float32)  # (N·Ho·Wo, F)
    yn_nchw = np.empty((n, f, ho * wo), np.float32)  # (N, F, Ho·Wo)
    wt = np.ascontiguousarray(w.T)  # (F, C)

    def np_nhwc() -> np.ndarray:
        xm = x[:, ::s, ::s, :].reshape(m, c)  # (N·Ho·Wo, C), a copy only when s > 1
        np.matmul(xm, w, out=yn_nhwc)  # (M, C) @ (C, F) -> (M, F)
        if b is not None:
            np.add(yn_nhwc, b, out=yn_nhwc)
            np.maximum(yn_nhwc, 0, out=yn_nhwc)
        return yn_nhwc

    def np_nchw() -> np.ndarray:
        xp = x_nchw[:, :, ::s, ::s].reshape(n, c, ho * wo)  # (N, C, P)
        np.matmul(wt, xp, out=yn_nchw)  # (F, C) @ (N, C, P) -> (N, F, P)
        if b is not None:
            np.add(yn_nchw, b[:, None], out=yn_nchw)
            np.maximum(yn_nchw, 0, out=yn_nchw)
        return yn_nchw

    impls += [
        Impl("numpy matmul", "numpy", "NHWC", "openblas", np_nhwc,
             _checker(ref, lambda y: y.reshape(n, ho, wo, f))),
        Impl("numpy matmul", "numpy", "NCHW", "openblas", np_nchw,
             _checker(ref, lambda y: y.reshape(n, f, ho, wo).transpose(0, 2, 3, 1))),
    ]
    for build in (_torch, _onnxruntime, _jax, _tensorflow):
        impls += build(x, x_nchw, w, b, s, ref, threads)
    return impls


def _torch(x: np.ndarray, x_nchw: np.ndarray, w: np.ndarray, b: np.ndarray | None, s: int,
           ref: np.ndarray, threads: int) -> list[Impl]:
    torch = module("torch")
    if torch is None:
        return []
    fn = torch.nn.functional
    n, h, wd, c = x.shape
    f = w.shape[1]
    tx = torch.from_numpy(x_nchw)  # (N, C, H, W) contiguous
    tx_cl = tx.contiguous(memory_format=torch.channels_last)
    tw = torch.from_numpy(np.ascontiguousarray(w.T).reshape(f, c, 1, 1))  # (F, C, 1, 1)
    tb = None if b is None else torch.from_numpy(b)
    txh = torch.from_numpy(x)  # (N, H, W, C)
    tw2 = torch.from_numpy(w)  # (C, F)
    ho, wo = pw.output_size(h, 0, s), pw.output_size(wd, 0, s)
    ty = torch.empty((n * ho * wo, f))  # (M, F)

    def conv(xt: Any) -> Callable[[], Any]:
        if tb is None:
            return lambda: fn.conv2d(xt, tw, stride=s)
        return lambda: torch.relu_(fn.conv2d(xt, tw, tb, stride=s))

    def matmul() -> Any:
        xm = txh[:, ::s, ::s, :].reshape(-1, c)  # (M, C), a copy only when s > 1
        if tb is None:
            return torch.matmul(xm, tw2, out=ty)  # (M, C) @ (C, F) -> (M, F)
        torch.addmm(tb, xm, tw2, out=ty)
        return torch.relu_(ty)

    from_t = _checker(ref, lambda y: _nchw_to_nhwc(y.numpy()))
    return [
        Impl("torch NCHW", "torch", "NCHW", "torch", conv(tx), from_t),
        Impl("torch channels_last", "torch", "NHWC", "torch", conv(tx_cl), from_t),
        Impl("torch matmul", "torch", "NHWC", "torch", matmul,
             _checker(ref, lambda y: y.numpy().reshape(n, ho, wo, f))),
    ]


def _onnxruntime(x: np.ndarray, x_nchw: np.ndarray, w: np.ndarray, b: np.ndarray | None,
                 s: int, ref: np.ndarray, threads: int) -> list[Impl]:
    ort = module("onnxruntime")
    if ort is None or module("onnx") is None:
        return []
    from onnx import TensorProto, helper, numpy_helper

    c, f = w.shape
    inits = [numpy_helper.from_array(np.ascontiguousarray(w.T).reshape(f, c, 1, 1), "w")]
    conv_in = ["x", "w"]
    if b is not None:
        inits.append(numpy_helper.from_array(b, "b"))
        conv_in.append("b")
    nodes = [helper.make_node("Conv", conv_in, ["z" if b is not None else "y"],
                              kernel_shape=[1, 1], strides=[s, s])]
    if b is not None:
        nodes.append(helper.make_node("Relu", ["z"], ["y"]))
    graph = helper.make_graph(
        nodes, "conv1x1", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_nchw.shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])
    return [Impl("onnxruntime", "onnxruntime", "NCHW", "onnxruntime",
                 lambda: sess.run(None, {"x": x_nchw})[0], _checker(ref, _nchw_to_nhwc))]


def _jax(x: np.ndarray, x_nchw: np.ndarray, w: np.ndarray, b: np.ndarray | None, s: int,
         ref: np.ndarray, threads: int) -> list[Impl]:
    jax = module("jax")
    if jax is None:
        return []
    lax, jnp = jax.lax, jax.numpy
    c, f = w.shape
    out = []
    for layout, xa, wa, dims, bshape in (
        ("NHWC", x, w.reshape(1, 1, c, f), ("NHWC", "HWIO", "NHWC"), (1, 1, 1, f)),
        ("NCHW", x_nchw, np.ascontiguousarray(w.T).reshape(f, c, 1, 1),
         ("NCHW", "OIHW", "NCHW"), (1, f, 1, 1)),
    ):
        def conv(xv: Any, wv: Any, dims: Any = dims, bshape: Any = bshape) -> Any:
            y = lax.conv_general_dilated(xv, wv, (s, s), "VALID", dimension_numbers=dims)
            return y if b is None else jnp.maximum(y + b.reshape(bshape), 0)

        jf, xd, wdv = jax.jit(conv), jax.device_put(xa), jax.device_put(wa)

        def call(jf: Any = jf, xd: Any = xd, wdv: Any = wdv) -> Any:
            return jf(xd, wdv).block_until_ready()

        out.append(Impl(f"jax {layout}", "jax", layout, "jax", call,
                        _checker(ref, np.asarray if layout == "NHWC" else _nchw_to_nhwc)))
    return out


def _tensorflow(x: np.ndarray, x_nchw: np.ndarray, w: np.ndarray, b: np.ndarray | None,
                s: int, ref: np.ndarray, threads: int) -> list[Impl]:
    tf = module("tensorflow")
    if tf is None:
        return []
    c, f = w.shape
    tx, tw = tf.constant(x), tf.constant(w.reshape(1, 1, c, f))
    tb = None if b is None else tf.constant(b)

    @tf.function
    def conv(xv: Any) -> Any:
        y = tf.nn.conv2d(xv, tw, strides=s, padding="VALID")  # NHWC: CPU TF has no NCHW
        return y if tb is None else tf.nn.relu(tf.nn.bias_add(y, tb))

    return [Impl("tensorflow", "tensorflow", "NHWC", "tensorflow", lambda: conv(tx).numpy(),
                 _checker(ref, lambda y: y))]


def backward(x: np.ndarray, w: np.ndarray, gy: np.ndarray, stride: int,
             refs: tuple[np.ndarray, np.ndarray, np.ndarray]) -> list[Impl]:
    """Gradients of a plain conv with bias (x, w, b): ours against torch autograd.

    torch's graph is built once; each call is ``autograd.grad(..., retain_graph=True)``,
    so only the backward is timed, as for ours.
    """
    c, f = w.shape
    s = stride
    gx_ref, gw_ref, gb_ref = refs  # (N, H, W, C), (C, F), (F,)
    x_nchw = np.ascontiguousarray(x.transpose(0, 3, 1, 2))  # (N, C, H, W)
    gy_nchw = np.ascontiguousarray(gy.transpose(0, 3, 1, 2))  # (N, F, Ho, Wo)
    w_oihw = np.ascontiguousarray(w.T).reshape(f, c, 1, 1)  # (F, C, 1, 1)

    def check(gx_nhwc: Callable[[Any], np.ndarray], gw_cf: Callable[[Any], np.ndarray],
              gb: Callable[[Any], np.ndarray]) -> Callable[[Any], float]:
        return lambda g: max(rel_err(gx_nhwc(g[0]), gx_ref), rel_err(gw_cf(g[1]), gw_ref),
                             rel_err(gb(g[2]), gb_ref))

    def as_np(t: Any) -> np.ndarray:
        return t.detach().numpy() if hasattr(t, "detach") else np.asarray(t)

    nchw_check = check(lambda a: as_np(a).transpose(0, 2, 3, 1),
                       lambda a: as_np(a).reshape(f, c).T, as_np)
    impls = [
        Impl("pointwise", "pointwise", "NHWC", "openblas",
             lambda: pw.conv1x1_backward(gy, x, w.reshape(1, 1, c, f), stride=s),
             check(lambda a: a, lambda a: a.reshape(c, f), lambda a: a)),
        Impl("pointwise", "pointwise", "NCHW", "openblas",
             lambda: pw.conv1x1_backward(gy_nchw, x_nchw, w_oihw, layout="NCHW", stride=s),
             nchw_check),
    ]
    torch = module("torch")
    if torch is None:
        return impls
    for name, layout, fmt in (("torch autograd NCHW", "NCHW", torch.contiguous_format),
                              ("torch autograd channels_last", "NHWC", torch.channels_last)):
        tx = torch.from_numpy(x_nchw).contiguous(memory_format=fmt).requires_grad_()
        tw = torch.from_numpy(w_oihw).contiguous(memory_format=fmt).requires_grad_()
        tb = torch.zeros(f, requires_grad=True)
        tgy = torch.from_numpy(gy_nchw).contiguous(memory_format=fmt)
        with torch.enable_grad():
            ty = torch.nn.functional.conv2d(tx, tw, tb, stride=s)

        def grads(ty: Any = ty, tx: Any = tx, tw: Any = tw, tb: Any = tb, tgy: Any = tgy) -> Any:
            return torch.autograd.grad(ty, (tx, tw, tb), tgy, retain_graph=True)


        impls.append(Impl(name, "torch", layout, "torch", grads, nchw_check))
    return impls
