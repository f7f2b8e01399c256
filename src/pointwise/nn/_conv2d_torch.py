"""``conv2d`` on torch tensors: :func:`pointwise.conv2d`'s signature and semantics, computed
by torch, with autograd.

``pointwise.conv2d`` routes torch tensors here (through :mod:`pointwise.nn.functional`).
Arguments are checked by the NumPy core's own :func:`pointwise.layout2d.check_conv2d` on
shape-only stand-ins, so the messages are the same. Floats run ``F.conv2d`` (half types in
float32, as in the core), then the residual and the activation; integer tensors, which
torch cannot convolve on the CPU, run the NumPy core, exactly. The fast inference path for
whole models is the module, :class:`pointwise.nn.Conv2d`, on the taps kernels.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from pointwise.layout2d import check_conv2d
from pointwise.nn.kernels import _epilogue

__all__ = ["conv2d"]

_ZERO = np.zeros(16, np.uint8)  # one element of any dtype up to complex128


def _stand_in(t: Any) -> Any:
    """``t`` for the checks: its values when tiny, else a zero-stride array of its shape."""
    if not isinstance(t, torch.Tensor):
        return t
    if t.numel() <= 8 and t.device.type == "cpu" and t.dtype != torch.bfloat16:
        return t.detach().numpy()
    dt = np.dtype(str(t.dtype).removeprefix("torch.").replace("bfloat16", "float16"))
    return np.ndarray(tuple(t.shape), dt, buffer=_ZERO, strides=(0,) * t.dim())


def _tensor(a: Any, device: torch.device) -> torch.Tensor:
    """Lists and NumPy arrays passed along with tensors become tensors."""
    return a if isinstance(a, torch.Tensor) else torch.as_tensor(np.asarray(a), device=device)


def conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    layout: str = "NHWC",
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] | str = 0,
    dilation: int | tuple[int, int] = 1,
    groups: int = 1,
    activation: str | None = None,
    residual: torch.Tensor | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """k×k convolution of torch tensors; see :func:`pointwise.conv2d` for every argument.

    Autograd flows to ``x``, ``weight``, ``bias`` and ``residual``. The result is a tensor
    on the input's device in ``layout``. Unlike torch, the default layout is NHWC with HWIO
    weights, as in the NumPy core; pass ``layout="NCHW"`` for torch's convention.

    >>> import torch
    >>> from pointwise.nn.functional import conv2d
    >>> x = torch.ones(1, 1, 3, 3)                               # NCHW
    >>> conv2d(x, torch.ones(1, 1, 3, 3), layout="NCHW", padding=1)[0, 0].tolist()
    [[4.0, 6.0, 4.0], [6.0, 9.0, 6.0], [4.0, 6.0, 4.0]]
    """
    device = next(a.device for a in (x, weight, bias) if isinstance(a, torch.Tensor))
    xt, wt = _tensor(x, device), _tensor(weight, device)
    bt = None if bias is None else _tensor(bias, device)
    rt = None if residual is None else _tensor(residual, device)
    if wt.dim() == 2:  # a 1×1 conv's matrix, as the NumPy core takes it
        wt = wt[None, None] if layout in ("NHWC", "HWC") else wt[:, :, None, None]
        padding = 0 if isinstance(padding, str) else padding
    p = check_conv2d(_stand_in(xt), _stand_in(wt), _stand_in(bt), layout=layout,
                     stride=stride, padding=padding, dilation=dilation, groups=groups,
                     activation=activation, residual=_stand_in(rt))
    if (not xt.dtype.is_floating_point and not wt.dtype.is_floating_point
            and xt.device.type == "cpu"):
        from pointwise.conv2d import conv2d as numpy_conv2d  # torch has no integer conv on CPU

        yn = numpy_conv2d(*(None if a is None else a.numpy() for a in (xt, wt, bt)),
                          layout=layout, stride=stride, padding=padding, dilation=dilation,
                          groups=groups, activation=activation,
                          residual=None if rt is None else rt.numpy())
        y = torch.from_numpy(yn)
    else:
        y = _float(p, xt, wt, bt, rt)
    if out is None:
        return y
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"expected out to be a torch.Tensor, but got {type(out).__name__}")
    if tuple(out.shape) != p.out_shape:
        raise ValueError(f"expected out of shape {p.out_shape}, but got {tuple(out.shape)}")
    return out.copy_(y)


def _float(p: Any, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None,
           r: torch.Tensor | None) -> torch.Tensor:
    dtype = getattr(torch, p.dtype.name) if p.dtype.name != "bfloat16" else torch.bfloat16
    cd = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
    x4 = x if p.batched else x.unsqueeze(0)  # (N, ·, ·, ·)
    if p.channels_last:
        x4 = x4.permute(0, 3, 1, 2)  # (N, H, W, C) -> (N, C, H, W) view
        w4 = w.permute(3, 2, 0, 1)  # (kh, kw, C/G, F) -> (F, C/G, kh, kw) view
    else:
        w4 = w
    top, bottom, left, right = p.pad
    if (top, left) != (bottom, right):  # "same" with an even extent: more at the bottom/right
        x4 = F.pad(x4.to(cd), (left, right, top, bottom))
        top = left = 0
    z = F.conv2d(x4.to(cd), w4.to(cd), None if b is None else b.to(cd), stride=p.stride,
                 padding=(top, left), dilation=p.dilation, groups=p.groups)
    r4 = None
    if r is not None:
        r4 = r if p.batched else r.unsqueeze(0)
        r4 = (r4.permute(0, 3, 1, 2) if p.channels_last else r4).to(cd)  # (N, F, Ho, Wo)
    y = _epilogue(z, r4, p.activation).to(dtype)  # (N, F, Ho, Wo)
    if p.channels_last:
        y = y.permute(0, 2, 3, 1)  # -> (N, Ho, Wo, F)
    return y if p.batched else y[0]
