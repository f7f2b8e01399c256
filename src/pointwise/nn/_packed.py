"""Weights packed once for the taps kernels (:func:`pointwise.kernels.native.pack_taps`).

The taps driver reads its weights as panels of the tile's width; packing them costs a pass
over the weights, which at batch 1 is as long as the conv itself (7×7 2048→512: 9.4 MB).
onnxruntime reorders its weights once per session; these caches do it once per version of
a weight (``load_state_dict``, an optimizer step and BN folding all bump the version) and
instruction set, and drop a weight's pack with the weight.

* :func:`for_conv` — a :class:`pointwise.nn.Conv2d`'s weight, kept on the module;
* :func:`for_1x1` — a 1×1 conv's (F, C, 1, 1) weight, kept here by the tensor's identity:
  ``Conv1x1``'s inference runs the taps kernels (one tap) where the weights are large
  (:data:`TAPS_1X1_MIN_WEIGHTS`), and the rows kernel, which packs per call, elsewhere.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from pointwise.kernels import native as _native

__all__ = ["TAPS_1X1_MIN_WEIGHTS", "for_1x1", "for_conv"]

#: 1×1 convs with at least this many weights (C·F) run on the taps kernels with a packed
#: weight. Interleaved A/B against the rows kernel (which packs its panels per call), 2
#: threads, bias + ReLU: at N=8, 1.03-1.18× at 14×14 and 7×7 (C·F ≥ 2^18: 256→1024,
#: 1024→256, 512→2048, 2048→512) and at the stride-2 shortcuts 512→1024 and 1024→2048,
#: 0.93-0.99× at 56×56 (C·F ≤ 2^14); at N=1, 1.09-1.53× at C·F ≥ 2^18, 0.85-0.98× below.
TAPS_1X1_MIN_WEIGHTS = 1 << 18


def _pack(w: torch.Tensor) -> np.ndarray | None:
    hwio = np.ascontiguousarray(w.detach().permute(2, 3, 1, 0).numpy())  # (kh, kw, C, F)
    return _native.pack_taps(hwio)


def _key(w: torch.Tensor) -> tuple[Any, ...]:
    return (w._version, w.data_ptr(), _native.ISA)


def for_conv(conv: Any) -> np.ndarray | None:
    """``conv.weight`` packed, cached on the module; None for a weight with no version (an
    inference tensor: pack per call) or where the kernels are off."""
    w = conv.weight
    if w.is_inference():
        return None
    hit = conv._taps_packed
    if hit is not None and hit[0] == _key(w):
        return hit[1]
    packed = _pack(w)
    conv._taps_packed = None if packed is None else (_key(w), packed)
    return packed


# id(weight) -> (a weak reference to it, its key when packed, the pack). Keyed by id:
# tensors compare by value.
_CACHE: dict[int, tuple[weakref.ref, tuple[Any, ...], np.ndarray]] = {}


def for_1x1(w: torch.Tensor) -> np.ndarray | None:
    """A 1×1 conv's weight (F, C, 1, 1) packed, cached while the weight lives."""
    if w.is_inference():
        return None
    hit = _CACHE.get(id(w))
    if hit is not None and hit[0]() is w and hit[1] == _key(w):
        return hit[2]
    packed = _pack(w)
    if packed is not None:
        _CACHE[id(w)] = (weakref.ref(w, _forget(id(w))), _key(w), packed)
    return packed


def _forget(ident: int) -> Callable[[weakref.ref], None]:
    def drop(_: weakref.ref) -> None:
        _CACHE.pop(ident, None)
    return drop
