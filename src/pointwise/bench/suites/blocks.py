"""The ``blocks`` suite: MobileNetV2's 17 inverted residuals, forward, fused and unfused.

Each block (expand 1×1 + ReLU6, depthwise 3×3 + ReLU6, project 1×1, + x where the shapes
allow; BN folded) runs as ``pw.inverted_residual`` (one pass, the expanded tensor kept in
L2), as the same kernels one layer at a time, as ``pointwise.nn.FusedInvertedResidual``,
as torch's modules on channels_last tensors and as onnxruntime on the block's ONNX graph
(:mod:`pointwise.bench.peers_blocks`). Every row is checked against float64 torch (or the
NumPy path in float64). FLOPs come from :func:`pointwise.cost.conv_cost`; bytes are what a
fused block must move: its input, output and weights.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from pointwise.bench import harness as h
from pointwise.bench import peers_blocks
from pointwise.bench.headline import add_vs_onnxruntime, headline
from pointwise.bench.roofs import attainable
from pointwise.bench.suites.common import Settings, measure, pick, rows
from pointwise.cost import conv_cost

__all__ = ["SHAPES", "BlockShape", "headline", "run"]

#: rounds, time per round (ms), warm-up (s) and tolerance of this suite's runs
DEFAULTS = {"repeats": 15, "target_ms": 40.0, "warm_s": 0.3, "rtol": 1e-4}


@dataclass(frozen=True)
class BlockShape:
    index: int  # features.<index> in the zoo's MobileNetV2
    n: int
    h: int
    c: int
    t: int
    f: int
    stride: int

    @property
    def e(self) -> int:
        return self.c * self.t

    @property
    def residual(self) -> bool:
        return self.stride == 1 and self.c == self.f

    @property
    def name(self) -> str:
        s = f"mobilenet_v2.{self.index} {self.h}x{self.h} {self.c}->{self.e}->{self.f}"
        s += f" s{self.stride}" if self.stride > 1 else ""
        return s + (f" N={self.n}" if self.n != 8 else "")


def _v2_blocks(n: int) -> list[BlockShape]:
    """MobileNetV2's blocks at 224×224 (Table 2 of the paper: t, c, repeats, stride)."""
    out: list[BlockShape] = []
    c, h = 32, 112
    for t, f, reps, s in ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                          (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)):
        for i in range(reps):
            st = s if i == 0 else 1
            out.append(BlockShape(len(out) + 1, n, h, c, t, f, st))
            h, c = (h - 1) // st + 1, f
    return out


SHAPES = _v2_blocks(8)
QUICK = (3, 16)  # features.3 (56×56, 24->144->24) and features.16 (7×7, 160->960->160)


def run(st: Settings, roofs: dict[str, Any], say: Callable[[str], None], *,
        shapes: str | None = None, **_: Any) -> list[dict[str, Any]]:
    """The blocks whose name contains one of the comma-separated ``shapes`` (all by
    default; quick: two at N=1)."""
    if shapes:
        picked = pick(shapes, SHAPES)
    elif st.quick:
        picked = [s for s in _v2_blocks(1) if s.index in QUICK]
    else:
        picked = SHAPES
    return run_shapes(picked, st, roofs, say)


def _weights(rng: np.random.Generator, sh: BlockShape) -> peers_blocks.Weights:
    """NHWC weights with |activations| ~ 1: we (C, E) or None, be, wd, bd, wp (E, F), bp."""
    def r(*shape: int, scale: float = 1.0) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    we = r(sh.c, sh.e, scale=1 / np.sqrt(sh.c)) if sh.t != 1 else None
    be = r(sh.e) if sh.t != 1 else None
    return we, be, r(3, 3, sh.e, 1, scale=0.3), r(sh.e), r(sh.e, sh.f, scale=1 / sh.e ** .5), \
        r(sh.f)


def _reference(x: np.ndarray, wts: peers_blocks.Weights, sh: BlockShape) -> np.ndarray:
    """The block in float64 on the NumPy path (the three convs one after the other)."""
    import pointwise as pw

    f64 = [None if a is None else a.astype(np.float64) for a in wts]
    return pw.inverted_residual(x.astype(np.float64), *f64, stride=sh.stride)


def _cost(sh: BlockShape) -> tuple[int, int]:
    """FLOPs, and the bytes a fused block must move (input, output, weights)."""
    ho = (sh.h - 1) // sh.stride + 1
    convs = [conv_cost(sh.e, sh.e, 3, input_size=sh.h, stride=sh.stride, padding=1,
                       groups=sh.e, batch=sh.n),
             conv_cost(sh.e, sh.f, 1, input_size=ho, batch=sh.n)]
    if sh.t != 1:
        convs.append(conv_cost(sh.c, sh.e, 1, input_size=sh.h, batch=sh.n))
    flops = sum(c.flops for c in convs)
    weights = sum(c.weights + c.biases for c in convs)
    return flops, 4 * (sh.n * (sh.h * sh.h * sh.c + ho * ho * sh.f) + weights)


def run_shapes(shapes: list[BlockShape], st: Settings, roofs: dict[str, Any],
               say: Callable[[str], None]) -> list[dict[str, Any]]:
    rng = np.random.default_rng(0)
    out: list[dict[str, Any]] = []
    for sh in shapes:
        x = rng.standard_normal((sh.n, sh.h, sh.h, sh.c), dtype=np.float32)  # (N, H, W, C)
        wts = _weights(rng, sh)
        ref = _reference(x, wts, sh)
        impls = peers_blocks.forward(x, wts, sh.stride, sh.residual, ref, st.threads)
        label = f"{sh.name} | forward"
        foreign = measure(impls, st, say, label)
        flops, nbytes = _cost(sh)
        problem = {"suite": "blocks", "shape": sh.name, "mode": "forward", "problem": label,
                   "flops": flops, "bytes": nbytes, "intensity": flops / nbytes}
        out += rows(impls, problem, flops, nbytes, attainable(roofs, flops / nbytes), foreign)
        say(f"done {label}")
    h.add_ratios(out)
    add_vs_onnxruntime(out)
    return out
