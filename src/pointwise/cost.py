"""Parameter and MAC counts of convolution layers: the one source of every count.

Conventions, written once and referenced everywhere else:

* 1 MAC is one multiply-add; FLOPs = 2 × MACs.
* params count every learnable element: weights plus biases.
* Memory traffic is the compulsory minimum: read the input and the weights once, write the
  output once (``Cost.bytes``).
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable
from dataclasses import asdict, dataclass

__all__ = [
    "CONVENTION",
    "MAC_SCOPE",
    "Cost",
    "Reduction",
    "conv_cost",
    "conv_cost_for_output",
    "conv_output_size",
    "linear_cost",
    "norm_cost",
    "param_cost",
    "reduction_cost",
    "total_cost",
]

CONVENTION = "1 MAC = one multiply-add; FLOPs = 2 x MACs; params = all learnable elements"
# Which layers have MACs at all, as the papers count them: the weight layers. A norm, a pool
# or an activation touches each element once but multiplies no weight into a sum.
MAC_SCOPE = "MACs count conv and linear layers; norms, pools and activations count 0 MACs"


@dataclass(frozen=True)
class Cost:
    """The cost of one layer on one input.

    Attributes:
        weights: weight elements, ``F · C/G · k_h · k_w``.
        biases: bias elements, ``F`` or 0.
        macs: multiply-adds, ``N · H_out · W_out · F · C/G · k_h · k_w``.
        input_elems, output_elems: elements read from the input and written to the output.
    """

    weights: int
    biases: int
    macs: int
    input_elems: int
    output_elems: int

    @property
    def params(self) -> int:
        return self.weights + self.biases

    @property
    def flops(self) -> int:
        return 2 * self.macs

    def bytes(self, itemsize: int = 4) -> int:
        """Compulsory memory traffic: input, weights and bias read once, output written once."""
        return itemsize * (self.input_elems + self.params + self.output_elems)

    def intensity(self, itemsize: int = 4) -> float:
        """Arithmetic intensity, FLOPs per byte of compulsory traffic (for a roofline)."""
        return self.flops / max(1, self.bytes(itemsize))

    def as_dict(self) -> dict[str, int]:
        return {**asdict(self), "params": self.params, "flops": self.flops}


def _int(v: object, name: str, minimum: int) -> int:
    """``v`` as an int of at least ``minimum``; a bool, float or str is a TypeError."""
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise TypeError(f"expected {name} to be an int, but got {v!r}")
    if v < minimum:
        raise ValueError(f"expected {name} >= {minimum}, but got {name}={v!r}")
    return int(v)


def _pair(v: object, name: str = "size", minimum: int = 0) -> tuple[int, int]:
    """An int or an (h, w) pair of ints, each at least ``minimum``."""
    if isinstance(v, (tuple, list)):
        if len(v) != 2:
            raise ValueError(f"expected {name} to be an int or an (h, w) pair, but got {v!r}")
        return _int(v[0], name, minimum), _int(v[1], name, minimum)
    n = _int(v, name, minimum)
    return n, n


def conv_output_size(size: int, kernel: int, stride: int = 1, padding: int = 0) -> int:
    """Output length of one axis: ``(size + 2·padding − kernel) // stride + 1``."""
    return (size + 2 * padding - kernel) // stride + 1


def conv_cost(
    in_channels: int,
    out_channels: int,
    kernel_size: int | tuple[int, int] = 1,
    *,
    input_size: int | tuple[int, int] = 1,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    groups: int = 1,
    bias: bool = True,
    batch: int = 1,
) -> Cost:
    """Params and MACs of a k×k convolution over an input of ``input_size`` pixels.

    >>> c = conv_cost(192, 32, 5, input_size=28, padding=2, bias=False)
    >>> c.macs, c.weights
    (120422400, 153600)
    >>> conv_cost(2, 1, input_size=3).macs   # the tutorial: 9 pixels × 2 channels
    18
    """
    kh, kw = _pair(kernel_size, "kernel_size", 1)
    sh, sw = _pair(stride, "stride", 1)
    ph, pw = _pair(padding, "padding", 0)
    h, w = _pair(input_size, "input_size", 0)
    in_channels = _int(in_channels, "in_channels", 0)
    out_channels = _int(out_channels, "out_channels", 0)
    groups, batch = _int(groups, "groups", 1), _int(batch, "batch", 0)
    if not isinstance(bias, bool):
        raise TypeError(f"expected bias to be True or False, but got {bias!r}")
    if in_channels % groups or out_channels % groups:
        raise ValueError(
            f"expected groups to divide in_channels={in_channels} and "
            f"out_channels={out_channels}, but got groups={groups}"
        )
    ho = conv_output_size(h, kh, sh, ph)
    wo = conv_output_size(w, kw, sw, pw)
    if h + 2 * ph < kh or w + 2 * pw < kw:
        raise ValueError(
            f"expected a {kh}×{kw} kernel to fit the padded {h}×{w} input, but it does not"
        )
    weights = out_channels * (in_channels // groups) * kh * kw
    return Cost(
        weights=weights,
        biases=out_channels if bias else 0,
        macs=batch * ho * wo * weights,
        input_elems=batch * h * w * in_channels,
        output_elems=batch * ho * wo * out_channels,
    )


def conv_cost_for_output(
    in_channels: int,
    out_channels: int,
    kernel_size: int | tuple[int, int] = 1,
    *,
    input_size: int | tuple[int, int] = 1,
    output_size: int | tuple[int, int] = 1,
    groups: int = 1,
    bias: bool = True,
    batch: int = 1,
) -> Cost:
    """:func:`conv_cost` of a conv whose output size is already known (traced).

    For geometry that ``conv_cost``'s arguments do not express: dilation, ``padding="same"``,
    asymmetric padding. The MACs are ``output pixels × conv_cost of one output pixel``.

    >>> conv_cost_for_output(192, 32, 5, input_size=28, output_size=28, bias=False) == (
    ...     conv_cost(192, 32, 5, input_size=28, padding=2, bias=False))
    True
    """
    one = conv_cost(in_channels, out_channels, kernel_size, input_size=kernel_size,
                    groups=groups, bias=bias)  # exactly one output pixel
    h, w = _pair(input_size, "input_size", 0)
    ho, wo = _pair(output_size, "output_size", 0)
    batch = _int(batch, "batch", 0)
    return Cost(
        weights=one.weights,
        biases=one.biases,
        macs=batch * ho * wo * one.macs,
        input_elems=batch * h * w * in_channels,
        output_elems=batch * ho * wo * out_channels,
    )


def linear_cost(in_features: int, out_features: int, *, bias: bool = True, batch: int = 1) -> Cost:
    """Params and MACs of a fully connected layer applied to ``batch`` rows.

    It is a 1×1 conv on a 1×1 image: ``out_features · in_features`` MACs per row.

    >>> c = linear_cost(1024, 1000)
    >>> c.weights, c.biases, c.macs
    (1024000, 1000, 1024000)
    >>> linear_cost(1024, 1000) == conv_cost(1024, 1000)
    True
    """
    return conv_cost(in_features, out_features, 1, input_size=1, bias=bias, batch=batch)


def norm_cost(
    num_features: int, *, affine: bool = True, bias: bool = True, elements: int = 0
) -> Cost:
    """A normalization layer (BatchNorm, GroupNorm, LayerNorm…) over ``elements`` values.

    Its params are the affine scale and shift, ``num_features`` each; its MACs are 0 by
    :data:`MAC_SCOPE` (in inference a BatchNorm folds into the conv before it).

    >>> c = norm_cost(64, elements=64 * 112 * 112)
    >>> c.weights, c.biases, c.params, c.macs
    (64, 64, 128, 0)
    """
    if num_features < 0:
        raise ValueError(f"expected num_features >= 0, but got {num_features}")
    return Cost(
        weights=num_features if affine else 0,
        biases=num_features if affine and bias else 0,
        macs=0,
        input_elems=elements,
        output_elems=elements,
    )


def param_cost(
    numels: Iterable[int] = (), *, input_elems: int = 0, output_elems: int = 0
) -> Cost:
    """A layer whose MACs :data:`MAC_SCOPE` does not count: pool, activation, reshape…

    ``numels`` are the sizes of whatever learnable tensors it holds (PReLU's slopes, say);
    they count as weights.

    >>> param_cost().params, param_cost([64]).params, param_cost([64]).macs
    (0, 64, 0)
    """
    return Cost(weights=sum(int(n) for n in numels), biases=0, macs=0,
                input_elems=input_elems, output_elems=output_elems)


def total_cost(costs: Iterable[Cost]) -> Cost:
    """The sum of several layers' costs, field by field.

    >>> total_cost([conv_cost(192, 16, bias=False), conv_cost(16, 32, 5, bias=False,
    ...             input_size=5)]).weights
    15872
    """
    fields = [0, 0, 0, 0, 0]
    for c in costs:
        for i, v in enumerate((c.weights, c.biases, c.macs, c.input_elems, c.output_elems)):
            fields[i] += v
    return Cost(*fields)


@dataclass(frozen=True)
class Reduction:
    """A k×k conv with a 1×1 reduction in front of it, against the k×k conv alone.

    Attributes:
        direct: the k×k conv on the unreduced input (all ``C`` channels).
        reduce: the 1×1 reduction, ``C → R``.
        conv: the k×k conv on the reduced input, ``R → F``.
    """

    direct: Cost
    reduce: Cost
    conv: Cost

    @property
    def reduced(self) -> Cost:
        """The 1×1 and the k×k together."""
        return total_cost([self.reduce, self.conv])

    @property
    def ratio(self) -> float:
        """How many times fewer MACs the reduction costs: ``direct.macs / reduced.macs``."""
        return self.direct.macs / max(1, self.reduced.macs)

    @property
    def weights_ratio(self) -> float:
        """How many times fewer weights: ``direct.weights / reduced.weights``."""
        return self.direct.weights / max(1, self.reduced.weights)

    @property
    def saved_macs(self) -> int:
        """``direct.macs − reduced.macs``; negative where the "reduction" costs more."""
        return self.direct.macs - self.reduced.macs


def reduction_cost(
    in_channels: int,
    out_channels: int,
    kernel_size: int | tuple[int, int],
    reduce_channels: int,
    *,
    input_size: int | tuple[int, int],
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] | None = None,
    bias: bool = False,
    batch: int = 1,
) -> Reduction:
    """The classic argument for 1×1 reductions (GoogLeNet, section 5): a k×k conv
    ``C → F`` direct, against a 1×1 ``C → R`` followed by the k×k ``R → F``.

    ``padding=None`` is "same" padding, ``k // 2``; ``stride`` applies to the k×k conv.

    >>> r = reduction_cost(192, 32, 5, 16, input_size=28)
    >>> r.direct.macs, r.reduced.macs, round(r.ratio, 2)
    (120422400, 12443648, 9.68)
    >>> r.direct.weights, r.reduce.weights, r.conv.weights
    (153600, 3072, 12800)
    """
    kh, kw = _pair(kernel_size, "kernel_size", 1)
    pad = (kh // 2, kw // 2) if padding is None else _pair(padding, "padding", 0)
    _int(reduce_channels, "reduce_channels", 1)
    return Reduction(
        direct=conv_cost(in_channels, out_channels, (kh, kw), input_size=input_size,
                         stride=stride, padding=pad, bias=bias, batch=batch),
        reduce=conv_cost(in_channels, reduce_channels, 1, input_size=input_size, bias=bias,
                         batch=batch),
        conv=conv_cost(reduce_channels, out_channels, (kh, kw), input_size=input_size,
                       stride=stride, padding=pad, bias=bias, batch=batch),
    )
