"""``LowRankConv1x1``: a C→F 1×1 conv factored through k channels, as two ``Conv1x1``.

``expand(reduce(x))``, with ``reduce`` a C→k conv (carrying the original stride and padding)
and ``expand`` a k→F conv (carrying the activation and any residual). Per output pixel it
costs ``C·k + k·F`` MACs against ``C/G·F``, so it saves work when ``k < C·F / (G·(C + F))``
(G = groups of the layer it stands in for). :func:`pointwise.nn.compress` fits one from data.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from pointwise.nn.module import Conv1x1

__all__ = ["LowRankConv1x1"]


class LowRankConv1x1(nn.Module):
    r"""Two 1×1 convs in a row, C→k→F: a rank-k stand-in for a C→F ``Conv1x1``.

    ``y = act(W₂ (W₁ x + b₁) + b₂ + residual)``, W₁ (k, C), W₂ (F, k).

    Args:
        in_channels (int): C.
        rank (int): k, the channels in between.
        out_channels (int): F.
        stride, padding: of ``reduce``, as for :class:`Conv1x1`. A padded pixel gives
            ``act(W₂ b₁ + b₂)``.
        activation (str or None): of ``expand``.
        device, dtype: as for every torch module.

    Attributes:
        reduce: ``Conv1x1(C, k, stride, padding)``, with bias.
        expand: ``Conv1x1(k, F, activation=activation)``, with bias.

    Its state_dict keys are ``reduce.weight``, ``reduce.bias``, ``expand.weight`` and
    ``expand.bias``. ``to_conv2d`` turns both halves into ``nn.Conv2d``.

    Examples:
        >>> import torch
        >>> from pointwise.nn.lowrank import LowRankConv1x1
        >>> m = LowRankConv1x1(64, 8, 256, activation="relu")
        >>> m
        LowRankConv1x1(
          64, 8, 256
          (reduce): Conv1x1(64, 8)
          (expand): Conv1x1(8, 256, activation='relu')
        )
        >>> m(torch.randn(2, 64, 7, 7)).shape
        torch.Size([2, 256, 7, 7])
    """

    def __init__(
        self,
        in_channels: int,
        rank: int,
        out_channels: int,
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        activation: str | None = None,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        if rank < 1:
            raise ValueError(f"expected rank >= 1, but got rank={rank}")
        kw = {"device": device, "dtype": dtype}
        self.reduce = Conv1x1(in_channels, rank, stride=stride, padding=padding, **kw)
        self.expand = Conv1x1(rank, out_channels, activation=activation, **kw)
        self.in_channels = in_channels
        self.rank = rank
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """``expand(reduce(x))``; ``residual`` (the output's shape), if given, is added
        before the activation, as :meth:`Conv1x1.forward` does."""
        z = self.reduce(x)  # (N, k, Ho, Wo)
        if residual is None:  # keeps the call plain for an expand that is an nn.Conv2d
            return self.expand(z)
        return self.expand(z, residual=residual)  # (N, F, Ho, Wo)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.rank}, {self.out_channels}"
