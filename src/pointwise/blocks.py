"""MobileNet's blocks as one operator each: the wide tensor between their convs never
written to memory.

    depthwise_separable:  y = act(act(dw3x3_s(x) + b_d) @ W_p + b_p)
    inverted_residual:    y = act(dw3x3_s(act(x @ W_e + b_e)) + b_d) @ W_p + b_p [+ x]

``dw3x3_s`` is a depthwise 3×3 convolution with padding 1 and stride s; ``@`` a 1×1
convolution (a product over channels at every pixel). In an inverted residual the expanded
tensor (E = 6·C channels in MobileNetV2) is the largest in the network: run as three layers,
it is written once and read once by the depthwise conv, whose output is written and read
again by the projection.

How it is computed:

* float32 runs on the compiled fused kernel (:func:`pointwise.kernels.native.block`): bands
  of output rows, each expanded into a per-thread buffer that stays in L2, filtered, and
  projected into the output with the bias, activation and residual applied in registers
  (see ``kernels/csrc/blocks.c``); channels-first inputs are copied to channels-last first;
* everything else (other dtypes, activations the kernel does not fuse, torch tensors, or no
  kernels) runs the three convolutions one after the other with :func:`pointwise.conv2d`,
  exact for integers and float64 to rounding.

Weights follow the layout's convention (the table in ``layout.py``): for ``NCHW``,
PyTorch's OIHW shapes (E, C, 1, 1), (E, 1, 3, 3), (F, E, 1, 1); for ``NHWC``, HWIO
(1, 1, C, E), (3, 3, E, 1) (TensorFlow's depthwise filter; (3, 3, 1, E), conv2d's, too),
(1, 1, E, F). The 1×1 weights may be 2-D: (C, E) and (E, F) channels-last, (E, C) and
(F, E) channels-first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from pointwise.backends import backend_for
from pointwise.conv2d import conv2d
from pointwise.kernels import native
from pointwise.layout import _fmt, as_array, check_activation, check_layout

__all__ = ["depthwise_separable", "inverted_residual"]


def depthwise_separable(x: Any, dw_weight: Any, dw_bias: Any, pw_weight: Any, pw_bias: Any,
                        *, stride: int = 1, activation: str | None = "relu",
                        layout: str = "NHWC") -> Any:
    """MobileNet's block: depthwise 3×3 → activation → 1×1 → activation, in one pass.

    ``y = act(act(dw3x3_s(x) + dw_bias) @ pw_weight + pw_bias)``, the depthwise conv with
    padding 1 and stride ``stride``.

    Args:
        x: (N, H, W, C) for ``NHWC``, (H, W, C), (N, C, H, W) or (C, H, W).
        dw_weight: (3, 3, C, 1) (or (3, 3, 1, C)) channels-last, (C, 1, 3, 3) channels-first.
        dw_bias, pw_bias: (C,) and (F,), or None.
        pw_weight: (1, 1, C, F) or (C, F) channels-last, (F, C, 1, 1) or (F, C)
            channels-first.
        stride: 1 or 2. activation: None, ``"relu"``, ``"relu6"``, ``"silu"``,
            ``"hardswish"``, after both convs. layout: as :func:`pointwise.conv1x1`.

    Shape:
        F channels and ``(H − 1) // s + 1`` pixels per spatial axis, in ``layout``.

    Examples:
        >>> import numpy as np, pointwise as pw
        >>> x = np.ones((1, 4, 4, 2), np.float32)
        >>> y = pw.depthwise_separable(x, np.ones((3, 3, 2, 1), np.float32), None,
        ...                            np.ones((2, 3), np.float32), None)
        >>> y.shape, float(y[0, 0, 0, 0]), float(y[0, 1, 1, 0])  # 4 taps, 9 taps; 2 channels
        ((1, 4, 4, 3), 8.0, 18.0)
    """
    b = _Block.check(x, None, None, dw_weight, dw_bias, pw_weight, pw_bias, stride, activation,
                     False, layout)
    return b.run()


def inverted_residual(x: Any, expand_weight: Any, expand_bias: Any, dw_weight: Any,
                      dw_bias: Any, project_weight: Any, project_bias: Any, *,
                      stride: int = 1, activation: str | None = "relu6",
                      residual: bool | None = None, layout: str = "NHWC") -> Any:
    """MobileNetV2's block: expand 1×1 → act → depthwise 3×3 → act → project 1×1 (+ x).

    ``y = act(dw3x3_s(act(x @ expand_weight + expand_bias)) + dw_bias) @ project_weight
    + project_bias``, plus ``x`` when ``residual``; the projection is linear.

    Args:
        x: (N, H, W, C) for ``NHWC``, (H, W, C), (N, C, H, W) or (C, H, W).
        expand_weight: (1, 1, C, E) or (C, E) channels-last, (E, C, 1, 1) or (E, C)
            channels-first; None for no expansion (E = C, MobileNetV2's first block), with
            ``expand_bias`` None too.
        dw_weight: (3, 3, E, 1) (or (3, 3, 1, E)) channels-last, (E, 1, 3, 3) channels-first.
        project_weight: (1, 1, E, F) or (E, F) channels-last, (F, E, 1, 1) or (F, E).
        expand_bias, dw_bias, project_bias: (E,), (E,), (F,), or None.
        stride: 1 or 2. activation: after the expansion and the depthwise conv.
        residual: add ``x``; None: when ``stride`` is 1 and F = C, as MobileNetV2 does.
        layout: as :func:`pointwise.conv1x1`.

    Shape:
        F channels and ``(H − 1) // s + 1`` pixels per spatial axis, in ``layout``.

    Examples:
        >>> import numpy as np, pointwise as pw
        >>> x = np.ones((1, 3, 3, 2), np.float32)
        >>> y = pw.inverted_residual(x, np.ones((2, 4), np.float32), None,
        ...                          np.full((3, 3, 4, 1), 0.1, np.float32), None,
        ...                          np.ones((4, 2), np.float32), None)
        >>> round(float(y[0, 1, 1, 0]), 4)  # 1 + 4 · relu6(9 · 0.1 · relu6(2))
        8.2
    """
    b = _Block.check(x, expand_weight, expand_bias, dw_weight, dw_bias, project_weight,
                     project_bias, stride, activation, residual, layout, inverted=True)
    return b.run()


@dataclass
class _Block:
    """A checked call, its weights in the layout's 4-D convention for :func:`conv2d`."""

    x: Any
    we: Any
    be: Any
    wd: Any
    bd: Any
    wp: Any
    bp: Any
    stride: int
    acts: tuple[str | None, str | None, str | None]
    residual: bool
    layout: str
    channels_last: bool
    batched: bool
    torch_like: bool
    c: int
    e: int
    f: int

    @classmethod
    def check(cls, x: Any, we: Any, be: Any, wd: Any, bd: Any, wp: Any, bp: Any, stride: Any,
              activation: Any, residual: Any, layout: Any, inverted: bool = False) -> _Block:
        channels_last, batched = check_layout(layout)
        torch_like = backend_for(x, we, be, wd, bd, wp, bp) is not None
        arr = (lambda v, _n: v) if torch_like else as_array
        xa = arr(x, "x")
        if xa.ndim != (4 if batched else 3):
            raise ValueError(f"expected x of {4 if batched else 3} dimensions for layout "
                             f"{layout!r}, but got shape {_fmt(tuple(xa.shape))}")
        c = int(xa.shape[-1] if channels_last else xa.shape[-3])
        if isinstance(stride, bool) or stride not in (1, 2):
            raise ValueError(f"expected stride 1 or 2, but got stride={stride!r}")
        activation = check_activation(activation)
        if we is None:
            if be is not None:
                raise ValueError("expected expand_bias=None with expand_weight=None (no "
                                 "expansion), but got an expand_bias")
            e = c
        else:
            we = _one_by_one(arr(we, "expand_weight"), "expand_weight", c, channels_last)
            e = int(we.shape[3] if channels_last else we.shape[0])
        wd = _depthwise(arr(wd, "dw_weight"), e, channels_last, layout)
        name = "project_weight" if inverted else "pw_weight"
        wp = _one_by_one(arr(wp, name), name, e, channels_last)
        f = int(wp.shape[3] if channels_last else wp.shape[0])
        for bias, n, size in ((be, "expand_bias", e), (bd, "dw_bias", e),
                              (bp, "project_bias" if inverted else "pw_bias", f)):
            if bias is not None and tuple(arr(bias, n).shape) != (size,):
                raise ValueError(f"expected {n} of shape ({size},), but got shape "
                                 f"{_fmt(tuple(arr(bias, n).shape))}")
        if residual is None:
            residual = inverted and stride == 1 and f == c
        elif residual and (stride != 1 or f != c):
            raise ValueError(f"expected stride 1 and as many output channels as input ones "
                             f"for residual=True, but got stride={stride}, C={c}, F={f}; "
                             f"pass residual=False")
        acts = (activation, activation, None) if inverted else (None, activation, activation)
        return cls(x=xa, we=we, be=be, wd=wd, bd=bd, wp=wp, bp=bp, stride=stride, acts=acts,
                   residual=bool(residual), layout=layout, channels_last=channels_last,
                   batched=batched, torch_like=torch_like, c=c, e=e, f=f)

    def run(self) -> Any:
        y = None if self.torch_like else self._fused()
        return self._layers() if y is None else y

    def _layers(self) -> Any:
        """The three convs one after the other (exact for integers, any dtype)."""
        lay = self.layout
        h = self.x
        if self.we is not None:
            h = conv2d(h, self.we, self.be, activation=self.acts[0], layout=lay)
        h = conv2d(h, self.wd, self.bd, stride=self.stride, padding=1, groups=self.e,
                   activation=self.acts[1], layout=lay)
        return conv2d(h, self.wp, self.bp, activation=self.acts[2],
                      residual=self.x if self.residual else None, layout=lay)

    def _fused(self) -> np.ndarray | None:
        """Float32 on the fused kernel; None when it can't take the call."""
        f32 = np.float32
        parts = (self.x, self.we, self.be, self.wd, self.bd, self.wp, self.bp)
        if not native.ENABLED or any(a is not None and np.asarray(a).dtype != f32
                                     for a in parts):
            return None
        if any(a not in native.ACTIVATIONS for a in self.acts):
            return None
        x = self.x if self.batched else self.x[None]
        x4 = x if self.channels_last else x.transpose(0, 2, 3, 1)  # (N, H, W, C) view
        n, h, w, _ = x4.shape
        if n * h * w == 0:
            return None
        if x4.strides[3] != 4 or (self.residual and not x4[0].flags.c_contiguous):
            x4 = np.ascontiguousarray(x4)  # channels unit stride, each image's rows one run
        ho, wo = (h - 1) // self.stride + 1, (w - 1) // self.stride + 1
        we = None if self.we is None else _matrix(self.we, self.channels_last)  # (C, E)
        wd = np.ascontiguousarray(_dw_hwc(self.wd, self.channels_last))  # (3, 3, E)
        wp = _matrix(self.wp, self.channels_last)  # (E, F)
        y = np.empty((n, ho, wo, self.f), f32)
        bias = [None if b is None else np.ascontiguousarray(b, f32)
                for b in (self.be, self.bd, self.bp)]
        if not native.block(x4, we, bias[0], wd, bias[1], wp, bias[2],
                            y.reshape(n * ho * wo, self.f), self.acts, self.stride,
                            self.residual):
            return None
        y = y if self.channels_last else np.ascontiguousarray(y.transpose(0, 3, 1, 2))
        return y if self.batched else y[0]


def _one_by_one(w: Any, name: str, c: int, channels_last: bool) -> Any:
    """A 1×1 weight as 4-D: (1, 1, C, F) channels-last, (F, C, 1, 1) channels-first."""
    shape = tuple(w.shape)
    ok2 = len(shape) == 2 and shape[0 if channels_last else 1] == c
    ok4 = len(shape) == 4 and (shape[:3] == (1, 1, c) if channels_last
                               else shape[1:] == (c, 1, 1))
    if not (ok2 or ok4):
        want = "(1, 1, C, F) or (C, F)" if channels_last else "(F, C, 1, 1) or (F, C)"
        raise ValueError(f"expected {name} of shape {want} with C = {c} (the channels it "
                         f"reads), but got shape {_fmt(shape)}")
    if ok4:
        return w
    return w.reshape(1, 1, *shape) if channels_last else w.reshape(*shape, 1, 1)


def _depthwise(w: Any, e: int, channels_last: bool, layout: str) -> Any:
    """A depthwise weight in conv2d's convention: (3, 3, 1, E) or (E, 1, 3, 3)."""
    shape = tuple(w.shape)
    if channels_last and shape in ((3, 3, e, 1), (3, 3, 1, e)):
        return w.reshape(3, 3, 1, e)  # (3, 3, E, 1) -> (3, 3, 1, E): the same order
    if not channels_last and shape == (e, 1, 3, 3):
        return w
    want = f"(3, 3, {e}, 1)" if channels_last else f"({e}, 1, 3, 3)"
    raise ValueError(f"expected dw_weight of shape {want} for layout {layout!r} ({e} "
                     f"channels), but got shape {_fmt(shape)}")


def _matrix(w: np.ndarray, channels_last: bool) -> np.ndarray:
    """A 1×1 weight as the (in, out) matrix the kernels read."""
    return w[0, 0] if channels_last else w[:, :, 0, 0].T  # (C, F)


def _dw_hwc(w: np.ndarray, channels_last: bool) -> np.ndarray:
    return w[:, :, 0, :] if channels_last else w[:, 0].transpose(1, 2, 0)  # (3, 3, E)
