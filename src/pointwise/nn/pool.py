"""``nn.MaxPool2d`` whose inference on channels-last float32 CPU tensors runs on pointwise's
max-pooling kernel (``csrc/maxpool.c``); :func:`pointwise.nn.convert` swaps it in.

    y[n, c, i, j] = max over the window of x[n, c, i·s − p + a, j·s − p + b]

(the padding never wins; NaN does, as in torch). The pool after ResNet-50's stem
(112×112×64, 3×3/2, padding 1), 2 threads, interleaved: torch's channels_last
``max_pool2d`` 246 µs at N=1 and 3.1 ms at N=8, this kernel 106 µs and 1.6 ms
(onnxruntime's node: 36 µs at N=1, its profile). Anything the kernel does not take (autograd,
``return_indices``, dilation, NCHW-contiguous input, other dtypes and devices, tracing)
runs torch's ``max_pool2d``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.modules.utils import _pair

from pointwise.nn import _native_torch as _nt
from pointwise.nn.kernels import _forward_ad, _is_graph_capture

__all__ = ["MaxPool2d"]


def _size(length: int, k: int, s: int, p: int, ceil: bool) -> int:
    """torch's output size along one axis (dilation 1)."""
    out = (length + 2 * p - k + (s - 1 if ceil else 0)) // s + 1
    if ceil and (out - 1) * s >= length + p:  # the last window must start inside
        out -= 1
    return out


class MaxPool2d(nn.MaxPool2d):
    """``nn.MaxPool2d`` with the same arguments; its inference on a channels_last float32 CPU
    tensor runs on pointwise's kernel, with torch's result.

    Examples:
        >>> import torch
        >>> from pointwise.nn.pool import MaxPool2d
        >>> m = MaxPool2d(3, stride=2, padding=1)
        >>> x = torch.randn(1, 8, 9, 9).to(memory_format=torch.channels_last)
        >>> with torch.inference_mode():
        ...     y = m(x)
        >>> bool(torch.equal(y, torch.nn.functional.max_pool2d(x, 3, 2, 1)))
        True
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (x.requires_grad and torch.is_grad_enabled()) and not _is_graph_capture() \
                and not _forward_ad():
            y = _native(self, x)
            if y is not None:
                return y
        return super().forward(x)

    @classmethod
    def from_maxpool(cls, m: nn.MaxPool2d) -> MaxPool2d:
        """A ``MaxPool2d`` with ``m``'s options."""
        return cls(m.kernel_size, m.stride, m.padding, m.dilation, m.return_indices,
                   m.ceil_mode)

    def to_conv2d(self) -> nn.MaxPool2d:
        """Back to ``nn.MaxPool2d``: torch alone (:func:`pointwise.nn.to_conv2d`)."""
        return nn.MaxPool2d(self.kernel_size, self.stride, self.padding, self.dilation,
                            self.return_indices, self.ceil_mode)


def _native(m: MaxPool2d, x: torch.Tensor) -> torch.Tensor | None:
    """``m(x)`` on the kernel, or None when it can't take it."""
    if (type(x) is not torch.Tensor or x.dim() != 4 or x.dtype != torch.float32
            or x.device.type != "cpu" or m.return_indices or x.numel() == 0):
        return None
    (kh, kw), (sy, sx), (py, px) = _pair(m.kernel_size), _pair(m.stride or m.kernel_size), \
        _pair(m.padding)
    if _pair(m.dilation) != (1, 1) or 2 * py > kh or 2 * px > kw:  # torch refuses the last
        return None
    n, c, h, w = x.shape
    sn, sc, sh, sw = x.stride()
    ho, wo = _size(h, kh, sy, py, m.ceil_mode), _size(w, kw, sx, px, m.ceil_mode)
    if (sc != 1 and c > 1) or ho < 1 or wo < 1 or not _nt.available():
        return None
    kernels: Any = _nt._native._kernel
    ptrs = _nt.addresses(x)
    if ptrs is None:
        return None
    y = _nt.BUFFERS.empty((n, ho, wo, c))  # (N, Ho, Wo, C)
    if not kernels.maxpool_at(torch.get_num_threads(), True, ptrs[0], (n, h, w, c, sn, sh, sw),
                              y.data_ptr(), c, (kh, kw, sy, sx, py, px, ho, wo)):
        return None
    return y.permute(0, 3, 1, 2)  # (N, Ho, Wo, C) -> (N, C, Ho, Wo), channels-last
