"""The asymmetric fit of :func:`pointwise.nn.compress` (``asymmetric=True``).

Zhang, Zou, He and Sun (2015) observe that once the layers before it are approximated, a
layer no longer sees its original inputs x but the compressed model's x̂, and fit it to
those: keep the rank k (chosen as before, from the spectrum of the original responses
``y = W x + b``) and find the rank-k map from x̂ that best reproduces the ORIGINAL responses,

    min over rank-k M, c of  E ‖ y − (M x̂ + c) ‖²

a reduced-rank regression. With the moments of the pixel vectors (x, x̂) read at the same
places (one pass of both models over the data, per layer, in model order):

    M₀ = W + W (Σ_{x x̂} − Σ_{x̂ x̂}) Σ_{x̂ x̂}⁺    (F, C): the least-squares map, any rank
    P  = top-k eigenvectors of M₀ Σ_{x̂ x̂} M₀ᵀ   (F, k): of the fitted responses' covariance
    M  = P Pᵀ M₀,   c = ȳ − M x̂̄

which is the pair reduce: weight PᵀM₀, bias −PᵀM₀ x̂̄; expand: weight P, bias ȳ. M₀ equals
W Σ_{x x̂} Σ_{x̂ x̂}⁺ on the directions x̂ varies in, and keeps W on the others (which the
data cannot decide), so where x̂ = x (the first replaced layer) this is the plain fit
again. The k and the MACs do not change; the error the later layers pass on does (the
README gives the measurements).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pointwise.moments import ChannelMoments
from pointwise.nn.lowrank import LowRankConv1x1
from pointwise.nn.module import Conv1x1
from pointwise.reduction import principal_axes

__all__ = ["read_pixels", "refit"]


def read_pixels(x: torch.Tensor, stride: tuple[int, int],
                padding: tuple[int, int]) -> torch.Tensor:
    """(N, C, Ho, Wo): the input pixels a 1×1 conv reads, its zero padding included."""
    ph, pw = padding
    if ph or pw:
        x = F.pad(x, (pw, pw, ph, ph))  # the pixels the conv reads as zeros
    sh, sw = stride
    return x[:, :, ::sh, ::sw]  # (N, C, Ho, Wo)


def _module(model: nn.Module, name: str) -> nn.Module:
    """The submodule ``name``; the model itself for ``"(model)"``, a model that is one conv."""
    return model if name == "(model)" else model.get_submodule(name)


def _joint_moments(original: nn.Module, small: nn.Module, name: str,
                   batches: Callable[[], Iterable[torch.Tensor]]) -> ChannelMoments:
    """Mean and covariance of the (x, x̂) pixel vectors, 2C channels, of layer ``name``."""
    conv, pair = _module(original, name), _module(small, name)
    assert isinstance(conv, Conv1x1)
    seen: dict[str, torch.Tensor] = {}

    def keep(key: str) -> Callable[[nn.Module, tuple[Any, ...]], None]:
        return lambda module, args: seen.__setitem__(key, args[0].detach())

    moments = ChannelMoments(2 * conv.in_channels)
    handles = [conv.register_forward_pre_hook(keep("x")),
               pair.register_forward_pre_hook(keep("x_hat"))]
    try:
        with torch.no_grad():
            for batch in batches():
                original(batch)
                small(batch)
                both = torch.cat([read_pixels(seen["x"], conv.stride, conv.padding),
                                  read_pixels(seen["x_hat"], conv.stride, conv.padding)],
                                 1)  # (N, 2C, Ho, Wo)
                moments.add_images(both.to(torch.float64).cpu().numpy(), channels_last=False)
    finally:
        for h in handles:
            h.remove()
    return moments


def refit(original: nn.Module, small: nn.Module, names: list[str],
          weights: dict[str, tuple[np.ndarray, np.ndarray]],
          batches: Callable[[], Iterable[torch.Tensor]]) -> None:
    """Refit the pairs ``names`` of ``small`` in order, in place (module docstring).

    ``original`` is the model before any replacement, with the same names; ``weights``
    holds each layer's dense (F, C) weight and (F,) bias in float64; ``batches()`` yields
    the data afresh for each pass.
    """
    for name in names:
        conv, pair = _module(original, name), _module(small, name)
        assert isinstance(conv, Conv1x1) and isinstance(pair, LowRankConv1x1)
        m = _joint_moments(original, small, name, batches)
        w, b = weights[name]  # (F, C), (F,)
        c, k = conv.in_channels, pair.rank
        cross, auto = m.covariance[:c, c:], m.covariance[c:, c:]  # Σ_{x x̂}, Σ_{x̂ x̂}: (C, C)
        inverse = np.linalg.pinv(auto, rcond=1e-12, hermitian=True)  # (C, C)
        m0 = w + w @ (cross - auto) @ inverse  # (F, C) + (F, C) @ (C, C) @ (C, C)
        fitted = m0 @ auto @ m0.T  # (F, C) @ (C, C) @ (C, F)
        _, vectors = principal_axes((fitted + fitted.T) / 2)
        p = vectors[:, :k]  # (F, k)
        mean_y = w @ m.mean[:c] + b  # (F,)
        with torch.no_grad():
            dt = pair.reduce.weight.dtype
            pair.reduce.weight.copy_(torch.from_numpy(p.T @ m0)[:, :, None, None].to(dt))  # (k, C)
            pair.reduce.bias.copy_(torch.from_numpy(-(p.T @ m0 @ m.mean[c:])).to(dt))  # (k,)
            pair.expand.weight.copy_(torch.from_numpy(p)[:, :, None, None].to(dt))  # (F, k)
            pair.expand.bias.copy_(torch.from_numpy(mean_y).to(dt))  # (F,)
