"""The ``kxk`` suite: ResNet-50's 3×3 layers and its 7×7/2 stem, forward with bias + ReLU.

Every row is checked against float64 ``torch.nn.functional.conv2d`` (or a NumPy float64
reference without torch) and compared with the best peer in its layout (``×best``) and with
onnxruntime across layouts (``vs_onnxruntime``, :mod:`pointwise.bench.headline`). FLOPs and
bytes come from :func:`pointwise.cost.conv_cost`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from pointwise.bench import harness as h
from pointwise.bench import peers_kxk
from pointwise.bench.headline import add_vs_onnxruntime, headline
from pointwise.bench.roofs import attainable
from pointwise.bench.suites.common import Settings, measure, pick, rows
from pointwise.cost import conv_cost

__all__ = ["SHAPES", "KxkShape", "headline", "run"]

#: rounds, time per round (ms), warm-up (s) and tolerance of this suite's runs
DEFAULTS = {"repeats": 15, "target_ms": 40.0, "warm_s": 0.3, "rtol": 1e-4}


@dataclass(frozen=True)
class KxkShape:
    net: str
    n: int
    h: int
    c: int
    f: int
    k: int = 3
    stride: int = 1

    @property
    def padding(self) -> int:
        return self.k // 2

    @property
    def name(self) -> str:
        s = f"{self.net} {self.h}x{self.h} {self.k}x{self.k} {self.c}->{self.f}"
        s += f" s{self.stride}" if self.stride > 1 else ""
        return s + (f" N={self.n}" if self.n != 8 else "")


# ResNet-50's 3×3 convs (torchvision's stride placement: the first block of stages 2-4
# strides its 3×3) and the stem, at N=8.
SHAPES = [
    KxkShape("resnet50", 8, 224, 3, 64, k=7, stride=2),
    KxkShape("resnet50", 8, 56, 64, 64),
    KxkShape("resnet50", 8, 56, 128, 128, stride=2),
    KxkShape("resnet50", 8, 28, 128, 128),
    KxkShape("resnet50", 8, 28, 256, 256, stride=2),
    KxkShape("resnet50", 8, 14, 256, 256),
    KxkShape("resnet50", 8, 14, 512, 512, stride=2),
    KxkShape("resnet50", 8, 7, 512, 512),
]
QUICK = ("resnet50 14x14 3x3 256->256", "resnet50 7x7 3x3 512->512")


def run(st: Settings, roofs: dict[str, Any], say: Callable[[str], None], *,
        shapes: str | None = None, **_: Any) -> list[dict[str, Any]]:
    """The shapes whose name contains one of the comma-separated ``shapes`` (all by default;
    quick: two small ones at N=1)."""
    if shapes:
        picked = pick(shapes, SHAPES)
    elif st.quick:
        picked = [KxkShape(s.net, 1, s.h, s.c, s.f, s.k, s.stride) for s in SHAPES
                  if s.name in QUICK]
    else:
        picked = SHAPES
    return run_shapes(picked, st, roofs, say)


def _reference(x: np.ndarray, w: np.ndarray, b: np.ndarray, s: int, p: int) -> np.ndarray:
    """relu(conv2d(x, w) + b) in float64, NHWC: torch's conv2d, else NumPy tap by tap."""
    from pointwise.bench.peers import module

    torch = module("torch")
    if torch is not None:
        fn = torch.nn.functional
        xt = torch.from_numpy(x.transpose(0, 3, 1, 2).astype(np.float64))  # (N, C, H, W)
        wt = torch.from_numpy(w.transpose(3, 2, 0, 1).astype(np.float64))  # (F, C, kh, kw)
        z = fn.conv2d(xt, wt, torch.from_numpy(b.astype(np.float64)), stride=s, padding=p)
        return np.maximum(z.numpy().transpose(0, 2, 3, 1), 0)  # (N, Ho, Wo, F)
    import pointwise as pw

    return pw.conv2d(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64),
                     stride=s, padding=p, activation="relu")


def run_shapes(shapes: list[KxkShape], st: Settings, roofs: dict[str, Any],
               say: Callable[[str], None]) -> list[dict[str, Any]]:
    rng = np.random.default_rng(0)
    out: list[dict[str, Any]] = []
    for sh in shapes:
        x = rng.standard_normal((sh.n, sh.h, sh.h, sh.c), dtype=np.float32)  # (N, H, W, C)
        w = rng.standard_normal((sh.k, sh.k, sh.c, sh.f), dtype=np.float32)  # HWIO
        w *= np.float32(1 / np.sqrt(sh.k * sh.k * sh.c))  # |y| ~ 1 for every C
        b = rng.standard_normal(sh.f, dtype=np.float32)  # (F,)
        ref = _reference(x, w, b, sh.stride, sh.padding)
        impls = peers_kxk.forward(x, w, b, sh.stride, sh.padding, ref, st.threads)
        label = f"{sh.name} | forward+bias+relu"
        foreign = measure(impls, st, say, label)
        cost = conv_cost(sh.c, sh.f, sh.k, input_size=sh.h, stride=sh.stride,
                         padding=sh.padding, bias=True, batch=sh.n)
        flops, nbytes = cost.flops, cost.bytes(4)
        problem = {"suite": "kxk", "shape": sh.name, "mode": "forward+bias+relu",
                   "problem": label, "flops": flops, "bytes": nbytes,
                   "intensity": flops / nbytes}
        out += rows(impls, problem, flops, nbytes, attainable(roofs, flops / nbytes), foreign)
        say(f"done {label}")
    h.add_ratios(out)
    add_vs_onnxruntime(out)
    return out
