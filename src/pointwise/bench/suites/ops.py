"""The ``ops`` suite: the 1×1 conv's shapes, forward plain, forward fused and backward.

Every row is a dict (see :func:`pointwise.bench.harness.result`) with the problem it
belongs to; :func:`pointwise.bench.harness.add_ratios` then compares it with the best peer
in its layout. FLOPs and bytes come from :func:`pointwise.cost.conv_cost`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from pointwise.bench import harness as h
from pointwise.bench import peers
from pointwise.bench.roofs import attainable
from pointwise.bench.suites.common import Settings, measure, rows
from pointwise.cost import Cost, conv_cost

__all__ = ["MODES", "SHAPES", "Shape", "run", "select"]

#: rounds, time per round (ms), warm-up (s) and tolerance of this suite's runs
DEFAULTS = {"repeats": 15, "target_ms": 20.0, "warm_s": 0.2, "rtol": 1e-4}


@dataclass(frozen=True)
class Shape:
    net: str
    n: int
    h: int
    c: int
    f: int
    stride: int = 1

    @property
    def name(self) -> str:
        s = f"{self.net} {self.h}x{self.h} {self.c}->{self.f}"
        s += f" s{self.stride}" if self.stride > 1 else ""
        return s + (f" N={self.n}" if self.n != 8 else "")

    def cost(self, bias: bool) -> Cost:
        return conv_cost(self.c, self.f, 1, input_size=self.h, stride=self.stride, bias=bias,
                         batch=self.n)


# The 18 1×1 shapes of the core issue (ResNet-50, MobileNetV2, GoogLeNet 3a; N=8) and the
# tutorial's toy example.
SHAPES = [
    Shape("resnet50", 8, 56, 64, 256), Shape("resnet50", 8, 56, 256, 64),
    Shape("resnet50", 8, 28, 512, 128), Shape("resnet50", 8, 28, 128, 512),
    Shape("resnet50", 8, 14, 1024, 256), Shape("resnet50", 8, 14, 256, 1024),
    Shape("resnet50", 8, 7, 2048, 512), Shape("resnet50", 8, 7, 512, 2048),
    Shape("resnet50", 8, 56, 256, 512, stride=2),
    Shape("mobilenetv2", 8, 112, 32, 16), Shape("mobilenetv2", 8, 56, 24, 144),
    Shape("mobilenetv2", 8, 56, 144, 24), Shape("mobilenetv2", 8, 28, 192, 32),
    Shape("mobilenetv2", 8, 14, 384, 64), Shape("mobilenetv2", 8, 7, 960, 320),
    Shape("googlenet3a", 8, 28, 192, 64), Shape("googlenet3a", 8, 28, 192, 96),
    Shape("googlenet3a", 8, 28, 192, 16),
    Shape("toy", 1, 3, 2, 1),
]
QUICK = ("mobilenetv2 7x7 960->320", "googlenet3a 28x28 192->16", "toy")
#: the rows of every shape, by the name ``--modes`` takes
MODES = {"forward": "forward", "fused": "forward+bias+relu", "backward": "backward"}


def select(spec: str | None, quick: bool) -> list[Shape]:
    """Shapes whose name contains one of the comma-separated substrings of ``spec``."""
    if spec:
        subs = [t.strip().lower() for t in spec.split(",") if t.strip()]
        return [s for s in SHAPES if any(t in s.name.lower() for t in subs)]
    return [s for s in SHAPES if not quick or s.name.startswith(QUICK)]


def run(st: Settings, roofs: dict[str, Any], say: Callable[[str], None], *,
        shapes: str | None = None, modes: tuple[str, ...] | None = None,
        **_: Any) -> list[dict[str, Any]]:
    """The shapes named by ``shapes`` (substrings, comma-separated; all by default), in the
    ``modes`` given (values of :data:`MODES`; all three by default)."""
    picked = select(shapes, st.quick)
    if not picked:
        raise ValueError(f"expected --shapes to match one of {[s.name for s in SHAPES]}, "
                         f"but {shapes!r} matches none")
    return run_shapes(picked, st, roofs, say, modes or tuple(MODES.values()))


def run_shapes(shapes: list[Shape], st: Settings, roofs: dict[str, Any],
               say: Callable[[str], None],
               modes: tuple[str, ...] = tuple(MODES.values())) -> list[dict[str, Any]]:
    """Forward plain, forward fused (bias + ReLU) and backward (those in ``modes``), for
    every shape."""
    rng = np.random.default_rng(0)
    out: list[dict[str, Any]] = []
    for sh in shapes:
        s = sh.stride
        x = rng.standard_normal((sh.n, sh.h, sh.h, sh.c), dtype=np.float32)  # (N, H, W, C)
        w = rng.standard_normal((sh.c, sh.f), dtype=np.float32)  # (C, F)
        w *= np.float32(1 / np.sqrt(sh.c))  # |y| ~ 1 for every C
        b = rng.standard_normal(sh.f, dtype=np.float32)  # (F,)
        xs64 = x[:, ::s, ::s, :].astype(np.float64)  # (N, Ho, Wo, C)
        w64 = w.astype(np.float64)
        ref = np.einsum("nhwc,cf->nhwf", xs64, w64, optimize=True)  # (N, Ho, Wo, F)
        ref_br = np.maximum(ref + b, 0.0)
        gy = rng.standard_normal(ref.shape, dtype=np.float32)  # (N, Ho, Wo, F)
        gx = np.zeros(x.shape)
        gx[:, ::s, ::s, :] = np.einsum("nhwf,cf->nhwc", gy.astype(np.float64), w64,
                                       optimize=True)
        gw = np.einsum("nhwc,nhwf->cf", xs64, gy.astype(np.float64), optimize=True)
        gb = gy.astype(np.float64).sum(axis=(0, 1, 2))
        for mode in modes:
            if mode == "backward":
                cost = sh.cost(bias=True)
                # grad_x and grad_w: two GEMMs of the forward's size
                flops = 2 * cost.flops
                nbytes = 4 * (2 * cost.input_elems + cost.output_elems + 2 * cost.params)
                impls = peers.backward(x, w, gy, s, (gx, gw, gb))
            else:
                fused = mode != "forward"
                cost = sh.cost(bias=fused)
                flops, nbytes = cost.flops, cost.bytes(4)
                impls = peers.forward(x, w, b if fused else None, s,
                                      ref_br if fused else ref, st.threads)
            label = f"{sh.name} | {mode}"
            foreign = measure(impls, st, say, label)
            roof = attainable(roofs, flops / nbytes)
            problem = {"suite": "ops", "shape": sh.name, "mode": mode, "problem": label,
                       "flops": flops, "bytes": nbytes, "intensity": flops / nbytes}
            out += rows(impls, problem, flops, nbytes, roof, foreign)
            say(f"done {label}")
    h.add_ratios(out)
    return out
