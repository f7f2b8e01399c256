"""Frozen weights: a converted model's convs read their weights packed once, not per call.

By default the kernels pack a conv's weight from torch's own memory on every call, so an
edit made any way at all (``.data``, a NumPy view) is seen by the next call. At batch 1 that
packing is a large part of a layer: a 7×7 512→512 3×3 conv reads 9.4 MB of weights to do
0.23 GFLOP, and each thread packs the panels it uses before using them. onnxruntime, like
any engine that takes a model in, reorders its weights once when the session is made.

:func:`freeze` gives a model the same: every ``Conv1x1`` and ``Conv2d`` of it that runs on the
taps kernels, and every fused MobileNet block, reads copies of its weights made the first time
it runs, in the layouts the kernels read (one more copy of the weights in memory; torch's stay
as they are, for ``state_dict`` and training). ``convert()``ed, frozen against not (2 threads,
one process, the variants taking turns forward by forward; ``benchmarks/bench_frozen.py``):
ResNet-18 at N=1 22.8 against 25.3 ms, ResNet-50 49.8 against 54.2, and at N=8 365 against 372;
MobileNetV2 at N=1 6.92 against 7.46, MobileNet v1 8.91 against 9.98, and at N=8 64.4 against
68.4 (MobileNetV2 at N=8: level). The 1×1s with weights under 1 MB
(:data:`pointwise.nn._native_torch.TAPS_1X1_MIN_WEIGHTS`) stay on the rows driver, which packs
them per call from L2: moving them to packed taps calls measured no faster. The copy is packed
again whenever the weight's storage or torch's version counter of it has moved:
``load_state_dict``, an optimizer step, any in-place torch op (``with torch.no_grad():
w.mul_(2)``), a new ``Parameter`` or ``.data =``. What torch cannot see, a write through
``w.data`` or a NumPy view of it, is not seen either: call :func:`refresh` after such an edit,
or :func:`thaw` the model. Copies, pickles and ``deepcopy`` of a module carry the flag, never
the packed copy, whose layout depends on the instruction set in use.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any, NamedTuple

import torch
from torch import nn

from pointwise.kernels import native as _native

__all__ = ["freeze", "refresh", "thaw"]


class _Packed(NamedTuple):
    key: tuple  # what the packed copies were made from
    sources: tuple  # aliases of the tensors packed: their storages stay alive
    arrays: tuple  # the packed copies (np.ndarray), in the kernels' layouts
    addresses: tuple[int, ...]  # where each copy's data starts (0 for None)


#: module -> its packed weight; weak, so a module's copy goes with it, and never into a
#: deepcopy or a pickle of it
_PACKS: weakref.WeakKeyDictionary[nn.Module, _Packed] = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def _frozen_modules(model: nn.Module) -> list[nn.Module]:
    """The modules whose planned calls read :func:`packed`: ``Conv1x1`` and ``Conv2d`` say
    so with a class attribute (importing them here would close an import circle)."""
    return [m for m in model.modules() if getattr(type(m), "_freezable", False) is True]


def freeze(model: nn.Module) -> nn.Module:
    """Make every ``Conv1x1`` and ``Conv2d`` of ``model`` (itself included) read its weight
    packed once (see the module's docstring); returns ``model``. ``convert(model,
    freeze=True)`` does this for the converted model."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"freeze expects an nn.Module, got {type(model).__name__}")
    for m in _frozen_modules(model):
        m.__dict__["_frozen"] = True
    return model


def thaw(model: nn.Module) -> nn.Module:
    """Undo :func:`freeze`: the convs of ``model`` pack their weights on every call again,
    and their packed copies are dropped; returns ``model``."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"thaw expects an nn.Module, got {type(model).__name__}")
    for m in _frozen_modules(model):
        m.__dict__.pop("_frozen", None)
        with _LOCK:
            _PACKS.pop(m, None)
    return model


def refresh(model: nn.Module) -> nn.Module:
    """Drop the packed copies of ``model``'s frozen convs, so each packs its weight again on
    its next call: after a write torch's version counter does not see (through ``.data`` or
    a NumPy view). Returns ``model``."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"refresh expects an nn.Module, got {type(model).__name__}")
    for m in _frozen_modules(model):
        with _LOCK:
            _PACKS.pop(m, None)
    return model


def is_frozen(m: nn.Module) -> bool:
    return m.__dict__.get("_frozen", False) is True


def _hwio(w: torch.Tensor) -> Any:
    """torch's (F, C, kh, kw) weight packed for the taps kernels (HWIO's K = kh·kw·C rows)."""
    with torch.no_grad():
        return _native.pack_taps(w.detach().permute(2, 3, 1, 0).numpy())  # (kh, kw, C, F)


def _dw(w: torch.Tensor) -> Any:
    """A depthwise (E, 1, 3, 3) weight as the block kernel reads it: (3, 3, E), contiguous."""
    with torch.no_grad():
        return w.detach().reshape(w.shape[0], 9).t().contiguous().numpy()  # (9, E)


def _packs(m: nn.Module, ts: tuple[torch.Tensor | None, ...], how: tuple[Any, ...]
           ) -> _Packed | None:
    """``m``'s tensors ``ts`` each made by ``how`` into the layout its kernel reads, kept
    while the tensors' storages, torch's version counts of them and the instruction set stay
    as they were (the caller holds the result while the kernels read it: another thread may
    pack newer copies meanwhile); None where ``m`` is not frozen or a copy can't be kept (an
    inference tensor, whose version torch does not count; kernels off)."""
    kernels = _native._kernel
    if not is_frozen(m) or kernels is None:
        return None
    if any(t is not None and (t.is_inference() or t.dtype != torch.float32
                              or t.device.type != "cpu") for t in ts):
        return None
    key = (kernels.isa(), *(None if t is None else (t.data_ptr(), t._version, tuple(t.shape),
                                                      t.stride()) for t in ts))
    entry = _PACKS.get(m)
    if entry is not None and entry.key == key:
        return entry
    arrays = tuple(None if t is None else make(t) for t, make in zip(ts, how, strict=True))
    if any(a is None for a, t in zip(arrays, ts, strict=True) if t is not None):
        return None
    entry = _Packed(key, tuple(None if t is None else t.detach() for t in ts), arrays,
                    tuple(0 if a is None else int(a.ctypes.data) for a in arrays))
    with _LOCK:
        _PACKS[m] = entry
    return entry


def packed(m: nn.Module) -> _Packed | None:
    """A frozen conv's weight packed for the taps kernels (``addresses[0]``), packed now if
    it moved since (:func:`_packs`)."""
    if not is_frozen(m):  # every planned call asks: answer before nn.Module's __getattr__
        return None
    w: torch.Tensor = m.weight  # type: ignore[assignment]
    return _packs(m, (w,), (_hwio,))


def packed_block(m: nn.Module, we: torch.Tensor | None, wd: torch.Tensor | None,
                 wp: torch.Tensor | None) -> _Packed | None:
    """A frozen fused block's weights as ``block_at(..., packed=True)`` reads them: the
    expansion's and projection's packed for the taps kernels, the depthwise one as (3, 3, E)
    (``addresses``: we or 0, wd, wp), packed now if one moved since (:func:`_packs`)."""
    return _packs(m, (we, wd, wp), (_hwio, _dw, _hwio))
