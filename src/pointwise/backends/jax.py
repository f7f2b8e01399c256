"""``conv1x1`` on JAX arrays, with ``jax.numpy``: the NumPy core's signature and semantics.

``pointwise.conv1x1`` routes JAX arrays here and nowhere else imports this module, so JAX is
loaded only for a caller who already uses it (and this module imports it lazily even then).
Arguments are checked by :func:`pointwise.layout.check_forward` on shape-only stand-ins, so
the error messages are the NumPy core's. The computation is differentiable with
``jax.grad`` and traceable with ``jax.jit`` (shapes are static under jit).

Unlike the NumPy core, ``out=`` is refused: JAX arrays are immutable.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pointwise.layout import check_forward

__all__ = ["conv1x1"]


def _stand_in(a: Any) -> Any:
    """``a`` for check_forward: its values when tiny and concrete (an error may quote them),
    else a zero-stride NumPy array of its shape and dtype: no device transfer."""
    if a is None:
        return None
    if a.size <= 8:
        try:
            return np.asarray(a)
        except Exception:  # a tracer under jax.jit has no values
            pass
    return np.lib.stride_tricks.as_strided(
        np.zeros(1, np.dtype(a.dtype)), shape=tuple(a.shape), strides=(0,) * a.ndim
    )


def _activate(jnp: Any, jax_nn: Any, z: Any, activation: str | None) -> Any:
    if activation is None:
        return z
    if activation == "relu":
        return jnp.maximum(z, 0)
    if activation == "relu6":
        return jnp.minimum(jnp.maximum(z, 0), 6)
    if activation == "silu":
        return jax_nn.silu(z)
    if activation == "hardswish":
        return jax_nn.hard_swish(z)  # z · relu6(z + 3) / 6, as in torch
    raise AssertionError(activation)


def conv1x1(
    x: Any,
    weight: Any,
    bias: Any = None,
    *,
    layout: str = "NHWC",
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    groups: int = 1,
    activation: str | None = None,
    out: Any = None,
) -> Any:
    """1×1 convolution of JAX arrays; see :func:`pointwise.conv1x1` for every argument."""
    import jax.nn as jax_nn
    import jax.numpy as jnp

    if out is not None:
        raise TypeError(
            "expected out=None for JAX arrays, but got an out array; JAX arrays are immutable, "
            "so use the returned array"
        )
    xa = jnp.asarray(x)
    wa = jnp.asarray(weight)
    ba = None if bias is None else jnp.asarray(bias)
    p = check_forward(
        _stand_in(xa), _stand_in(wa), _stand_in(ba), layout=layout, stride=stride,
        padding=padding, groups=groups, activation=activation,
    )
    cd = p.compute_dtype  # float32 for half types, as in the core
    x4 = xa if p.batched else xa[None]  # (N, ·, ·, ·)
    if not p.channels_last:
        x4 = jnp.transpose(x4, (0, 2, 3, 1))  # (N, C, H, W) -> (N, H, W, C)
    if p.channels_last:
        w2 = wa[0, 0] if wa.ndim == 4 else wa  # (C/G, F)
    else:
        w2 = (wa[:, :, 0, 0] if wa.ndim == 4 else wa).T  # (F, C/G) -> (C/G, F)
    x4 = x4.astype(cd)
    w2 = w2.astype(cd)

    # Zero padding then subsampling: padded pixels see x = 0, so they give act(bias).
    ho_, wo_ = p.rows.out, p.cols.out  # output size per axis, from the core's geometry
    (sh, sw), (pad_h, pad_w) = (p.rows.stride, p.cols.stride), _pair(padding)
    xp = jnp.pad(x4, ((0, 0), (pad_h, pad_h), (pad_w, pad_w), (0, 0)))  # (N, H+2p, W+2p, C)
    xs = xp[:, : (ho_ - 1) * sh + 1 : sh, : (wo_ - 1) * sw + 1 : sw]  # (N, Ho, Wo, C)
    n, ho, wo, _ = xs.shape
    g = p.groups
    cg, f = w2.shape
    xg = xs.reshape(n, ho, wo, g, cg)  # (N, Ho, Wo, C) -> (N, Ho, Wo, G, Cg)
    wg = w2.reshape(cg, g, f // g)  # (Cg, F) -> (Cg, G, Fg)
    # (N, Ho, Wo, G, Cg) · (Cg, G, Fg) -> (N, Ho, Wo, G, Fg) -> (N, Ho, Wo, F)
    y = jnp.einsum("nhwgc,cgf->nhwgf", xg, wg).reshape(n, ho, wo, f)
    if ba is not None:
        y = y + ba.astype(cd)  # (N, Ho, Wo, F) + (F,)
    y = _activate(jnp, jax_nn, y, p.activation).astype(p.dtype)
    if not p.channels_last:
        y = jnp.transpose(y, (0, 3, 1, 2))  # (N, Ho, Wo, F) -> (N, F, Ho, Wo)
    return y if p.batched else y[0]


def _pair(v: Any) -> tuple[int, int]:
    return (int(v[0]), int(v[1])) if isinstance(v, (tuple, list)) else (int(v), int(v))
