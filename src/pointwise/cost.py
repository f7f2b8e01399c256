"""Parameter and MAC counts of convolution layers: the one source of every count.

Conventions, written once and referenced everywhere else:

* 1 MAC is one multiply-add; FLOPs = 2 × MACs.
* params count every learnable element: weights plus biases.
* Memory traffic is the compulsory minimum: read the input and the weights once, write the
  output once (``Cost.bytes``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

__all__ = ["CONVENTION", "Cost", "conv_cost", "conv_output_size"]

CONVENTION = "1 MAC = one multiply-add; FLOPs = 2 x MACs; params = all learnable elements"


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


def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


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
    kh, kw = _pair(kernel_size)
    sh, sw = _pair(stride)
    ph, pw = _pair(padding)
    h, w = _pair(input_size)
    for name, v in (("in_channels", in_channels), ("out_channels", out_channels)):
        if v < 0:
            raise ValueError(f"expected {name} >= 0, but got {v}")
    if groups < 1 or in_channels % groups or out_channels % groups:
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
