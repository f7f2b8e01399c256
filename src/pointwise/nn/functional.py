"""``conv1x1`` on torch tensors: the NumPy core's signature and semantics, with autograd.

``pointwise.conv1x1`` routes torch tensors here, and :class:`pointwise.nn.Conv1x1` calls
this function in its forward (the function/module pair of STYLE.md, item 2). Arguments are
checked by the same code as the NumPy core (:func:`pointwise.layout.check_forward`, given
shape-only stand-ins), so the error messages are the same. Each validated call signature is
remembered, so a network's repeated layers are checked once.

``residual`` (a tensor of the output's shape) is added before the activation,
``act(conv(x) + b + residual)``: ResNet's shortcut.

The computing is done by one of the kernels of :mod:`pointwise.nn.kernels`, picked by its
:func:`~pointwise.nn.kernels.choose_kernel`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch

from pointwise.layout import Problem, as_array, check_forward, check_out
from pointwise.nn.kernels import ACTIVATIONS, KERNELS, _is_graph_capture, _run, choose_kernel

__all__ = ["KERNELS", "choose_kernel", "conv1x1"]

_NP_DTYPES = {
    torch.float16: np.float16,
    torch.float32: np.float32,
    torch.float64: np.float64,
    torch.int8: np.int8,
    torch.int16: np.int16,
    torch.int32: np.int32,
    torch.int64: np.int64,
    torch.uint8: np.uint8,
    torch.uint16: np.uint16,
    torch.uint32: np.uint32,
    torch.bool: np.bool_,
    torch.complex64: np.complex64,
    torch.complex128: np.complex128,
}


def _np_dtype(dt: torch.dtype) -> np.dtype:
    if dt == torch.bfloat16:
        try:
            import ml_dtypes

            return np.dtype(ml_dtypes.bfloat16)
        except ImportError:  # only the "one float dtype" check sees it: float16 stands in
            return np.dtype(np.float16)
    found = _NP_DTYPES.get(dt)
    if found is None:  # float8, uint64, ...: computing in another dtype would be silent
        hint = ("its values may not fit int64, in which integers compute; check them and "
                "cast with .to(torch.int64)" if dt == torch.uint64 else
                "cast with .to(torch.float32)")
        raise TypeError(f"expected tensors of dtype float16, bfloat16, float32, float64 or an "
                        f"integer dtype of up to 32 bits or int64, but got {dt}; {hint}")
    return np.dtype(found)


def _stand_in(t: Any) -> Any:
    """``t`` for check_forward: its values when tiny (an error may quote them), else a
    zero-stride NumPy array of its shape and dtype; never a copy of a large tensor.

    Under torch.func's transforms (grad, jacrev, jacfwd, vmap) a tensor, or what detach()
    makes of it, may wrap another and have no memory to view: then the zero-stride array."""
    if not isinstance(t, torch.Tensor):
        return t
    if t.numel() <= 8 and t.device.type == "cpu" and t.dtype in _NP_DTYPES:
        try:
            return t.detach().resolve_conj().resolve_neg().numpy()
        except RuntimeError:  # "Cannot access data pointer of Tensor that doesn't have storage"
            pass
    return _zeros_view(tuple(t.shape), _np_dtype(t.dtype))


_ZERO = np.zeros(16, np.uint8)  # one element of any dtype up to complex128


def _zeros_view(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """A zero-stride array of ``shape`` over one zero element: a shape-and-dtype stand-in
    for the checks, in ~1 µs (``as_strided`` takes ~5, a cost paid on every torch call)."""
    return np.ndarray(shape, dtype, buffer=_ZERO, strides=(0,) * len(shape))


def _torch_dtype(dt: np.dtype) -> torch.dtype:
    return getattr(torch, dt.name)


def conv1x1(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    layout: str = "NHWC",
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    groups: int = 1,
    activation: str | None = None,
    residual: torch.Tensor | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """1×1 convolution of torch tensors; see :func:`pointwise.conv1x1` for every argument.

    ``residual``, a tensor of the output's shape and dtype in ``layout``, is added before
    the activation: ``activation(conv(x) + bias + residual)``, a residual block's shortcut
    fused into the conv's epilogue.

    Autograd flows to ``x``, ``weight``, ``bias`` and ``residual``. The result is a torch
    tensor on the input's device, in ``layout``; for NCHW/CHW it keeps the input's memory
    format.

    Unlike torch, the default layout is NHWC with HWIO weights, as in the NumPy core; pass
    ``layout="NCHW"`` for torch's convention.

    >>> import torch
    >>> from pointwise.nn.functional import conv1x1
    >>> x = torch.arange(6.0).reshape(1, 2, 1, 3)            # NCHW: 2 channels, 3 pixels
    >>> conv1x1(x, torch.tensor([[1.0, 2.0]]), layout="NCHW").flatten().tolist()
    [6.0, 9.0, 12.0]
    """
    device = next((a.device for a in (x, weight, bias) if isinstance(a, torch.Tensor)), None)
    xt, wt, bt, rt = (_as_tensor(a, name, device) for a, name in
                      ((x, "x"), (weight, "weight"), (bias, "bias"), (residual, "residual")))
    capture = _is_graph_capture()
    p: Problem | None = None
    if capture:  # shapes may be symbolic: trust the graph's own checks
        channels_last = layout in ("NHWC", "HWC")
        batched = layout in ("NHWC", "NCHW")
        dtype = xt.dtype
    else:
        key = None if out is not None else _signature(
            xt, wt, bt, layout, stride, padding, groups, activation)
        checked = _CHECKED.get(key) if key is not None else None
        if checked is None:
            p = check_forward(
                _stand_in(xt), _stand_in(wt), _stand_in(bt), layout=layout, stride=stride,
                padding=padding, groups=groups, activation=activation,
            )
            checked = _Checked(p.channels_last, p.batched, p.dtype, tuple(p.out_shape), p.layout)
            if key is not None and len(_CHECKED) < _CHECKED_MAX:
                _CHECKED[key] = checked
        channels_last, batched, dtype = (checked.channels_last, checked.batched,
                                         _torch_dtype(checked.dtype))
        if rt is not None:
            _check_residual(rt, checked)
    x4 = _cast(_to_nchw(xt, channels_last, batched), dtype)  # (N, C, H, W) view
    w4 = _cast(_weight_oihw(wt, channels_last), dtype)  # (F, C/G, 1, 1)
    b = None if bt is None else _cast(bt, dtype)
    r4 = None if rt is None else _to_nchw(rt, channels_last, batched)  # (N, F, Ho, Wo) view
    st, pd = _pair(stride), _pair(padding)
    grad = torch.is_grad_enabled() and any(
        isinstance(t, torch.Tensor) and t.requires_grad for t in (xt, wt, bt, rt))
    if not capture and (x4.numel() == 0 or w4.numel() == 0):  # conv2d refuses F = 0, H = 0 and
        y4 = _sums_nothing(x4, w4, b, st, pd, activation, r4)  # drops F when C = 0
    else:
        kernel = "conv2d" if capture else choose_kernel(x4, w4, b, st, pd, groups, grad=grad)
        y4 = _run(kernel, x4, w4, b, st, pd, groups, activation, r4)  # (N, F, Ho, Wo)
    y = _from_nchw(y4, channels_last, batched)
    if out is None:
        return y
    return _write_out(out, y, p, (xt, wt, bt, rt))


def _sums_nothing(x4: torch.Tensor, w4: torch.Tensor, b: torch.Tensor | None,
                  stride: tuple[int, int], padding: tuple[int, int], activation: str | None,
                  residual: torch.Tensor | None) -> torch.Tensor:
    """The conv of an empty x or weight, (N, F, Ho, Wo): with C = 0 every output sums no
    products, so it is act(bias + residual), as in the NumPy core; with N, F or Ho·Wo = 0
    the output is empty. Still differentiable in every input."""
    n, _, h, w = x4.shape
    f = w4.shape[0]
    ho, wo = ((size + 2 * p - 1) // s + 1 for size, p, s in
                zip((h, w), padding, stride, strict=True))
    z = torch.zeros((n, f, ho, wo), dtype=x4.dtype, device=x4.device)
    if x4.requires_grad or w4.requires_grad:  # zero gradients, as an empty sum has
        z = z + (x4.sum() + w4.sum()) * 0
    if b is not None:
        z = z + b.view(1, f, 1, 1)  # (N, F, Ho, Wo) + (1, F, 1, 1)
    if residual is not None:
        z = z + residual
    return ACTIVATIONS[activation](z)


class _Checked(NamedTuple):
    """What conv1x1 keeps of a validated call (check_forward's Problem)."""

    channels_last: bool
    batched: bool
    dtype: np.dtype  # the result's
    out_shape: tuple[int, ...]
    layout: str


# Calls validated before, by signature: check_forward depends on the shapes, dtypes and
# options alone, and takes ~25 µs of a ~65 µs call; a network calls each layer's signature
# again and again. Bounded; calls beyond it are checked every time.
_CHECKED: dict[tuple, _Checked] = {}
_CHECKED_MAX = 1024


def _signature(x: Any, w: Any, b: Any, layout: Any, stride: Any, padding: Any, groups: Any,
               activation: Any) -> tuple | None:
    """A hashable key of everything check_forward looks at, or None (not cacheable)."""
    if not (isinstance(x, torch.Tensor) and isinstance(w, torch.Tensor)
            and (b is None or isinstance(b, torch.Tensor))):
        return None
    opts = tuple(tuple(v) if isinstance(v, list) else v
                 for v in (layout, stride, padding, groups, activation))
    key = (tuple(x.shape), x.dtype, tuple(w.shape), w.dtype,
           None if b is None else (tuple(b.shape), b.dtype), opts)
    try:
        hash(key)
    except TypeError:
        return None
    return key


def _check_residual(r: torch.Tensor, p: _Checked) -> None:
    """A residual must be exactly what it is added to: the output's shape and dtype."""
    shape = tuple(p.out_shape)
    if tuple(r.shape) != shape:
        raise ValueError(
            f"expected residual of shape {shape} (the output's, layout {p.layout}), but got "
            f"shape {tuple(r.shape)}"
        )
    if _np_dtype(r.dtype) != p.dtype:
        raise TypeError(
            f"expected residual of dtype {p.dtype} (the output's), but got {r.dtype}; "
            f"cast it with .to()"
        )


def _as_tensor(a: Any, name: str, device: torch.device | None) -> Any:
    """Lists and NumPy arrays passed along with tensors become tensors; None stays None."""
    if a is None or isinstance(a, torch.Tensor):
        return a
    return torch.as_tensor(as_array(a, name), device=device)


def _cast(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return t if t.dtype == dtype else t.to(dtype)  # integers mixed with floats only


def _pair(v: Any) -> tuple[int, int]:
    return (int(v), int(v)) if not isinstance(v, (tuple, list)) else (int(v[0]), int(v[1]))


def _to_nchw(x: torch.Tensor, channels_last: bool, batched: bool) -> torch.Tensor:
    x4 = x if batched else x.unsqueeze(0)  # (N, ·, ·, ·)
    return x4.permute(0, 3, 1, 2) if channels_last else x4  # (N, H, W, C) -> (N, C, H, W)


def _from_nchw(y4: torch.Tensor, channels_last: bool, batched: bool) -> torch.Tensor:
    y = y4.permute(0, 2, 3, 1) if channels_last else y4  # (N, F, Ho, Wo) -> (N, Ho, Wo, F)
    return y if batched else y.squeeze(0)


def _weight_oihw(w: torch.Tensor, channels_last: bool) -> torch.Tensor:
    if channels_last:
        w2 = w[0, 0] if w.dim() == 4 else w  # (C/G, F)
        return w2.t()[:, :, None, None]  # (F, C/G, 1, 1)
    return w if w.dim() == 4 else w[:, :, None, None]  # (F, C/G, 1, 1)


def _write_out(
    out: Any, y: torch.Tensor, p: Problem | None, inputs: tuple[Any, ...]
) -> torch.Tensor:
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"expected out to be a torch.Tensor, but got {type(out).__name__}")
    if p is not None:  # same shape/dtype message as the NumPy core
        check_out(_zeros_view(tuple(out.shape), _np_dtype(out.dtype)), p, ())
    if torch.is_grad_enabled() and any(
        isinstance(t, torch.Tensor) and t.requires_grad for t in inputs
    ):
        raise RuntimeError(
            "expected out=None when x, weight or bias requires grad, but got an out tensor; "
            "out= does not support automatic differentiation (as in torch)"
        )
    return out.copy_(y)  # y was computed in full first, so out may alias the inputs


# The k×k convolution's torch backend lives in its own module; pointwise.conv2d finds it here.
from pointwise.nn._conv2d_torch import conv2d  # noqa: E402

__all__ += ["conv2d"]
