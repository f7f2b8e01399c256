"""Frozen weights: a converted model's convs read their weights packed once, not per call.

By default the kernels pack a conv's weight from torch's own memory on every call, so an
edit made any way at all (``.data``, a NumPy view) is seen by the next call. At batch 1 that
packing is a large part of a layer: a 7×7 512→512 3×3 conv reads 9.4 MB of weights to do
0.23 GFLOP, and each thread packs the panels it uses before using them. onnxruntime, like
any engine that takes a model in, reorders its weights once when the session is made.

:func:`freeze` gives a model the same: every ``Conv1x1`` and ``Conv2d`` of it that runs on
the taps kernels reads a copy of its weight packed the first time it runs (one more copy of
the weights in memory; torch's stay as they are, for ``state_dict`` and training). A
``convert()``ed ResNet-18 at N=1 ran in 22.8 ms frozen against 25.3, ResNet-50 in 49.8
against 54.2, and at N=8 in 365 against 372 (2 threads, one process, the variants taking
turns forward by forward). The 1×1s with weights under 1 MB
(:data:`pointwise.nn._native_torch.TAPS_1X1_MIN_WEIGHTS`) stay on the rows driver, which
packs them per call from L2: moving them to packed taps calls measured no faster. The copy
is packed again whenever the weight's storage or torch's version counter of it has moved:
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
    weight: torch.Tensor  # an alias of the weight packed: its storage stays alive
    key: tuple  # what the packed copy was made from
    packed: Any  # np.ndarray (taps_packed_size(K, F),): the weight in taps_pack's layout
    address: int  # where packed's data starts


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


def packed(m: nn.Module) -> _Packed | None:
    """``m``'s weight packed for the taps kernels ((F, C, kh, kw) read as HWIO's
    K = kh·kw·C rows; the caller holds what this returns while the kernels read it, as
    another thread may pack a newer copy meanwhile), packed now if the weight moved since;
    None where ``m`` is not frozen or a packed copy can't be kept (an inference tensor, whose
    version torch does not count; kernels off)."""
    if not is_frozen(m):
        return None
    w: torch.Tensor = m.weight  # type: ignore[assignment]  # nn.Module's __getattr__
    if w.is_inference() or w.dtype != torch.float32 or w.device.type != "cpu":
        return None
    kernels = _native._kernel
    if kernels is None:
        return None
    key = (kernels.isa(), w.data_ptr(), w._version, tuple(w.shape), w.stride())
    entry = _PACKS.get(m)
    if entry is not None and entry.key == key:
        return entry
    with torch.no_grad():
        hwio = w.detach().permute(2, 3, 1, 0).numpy()  # (F, C, kh, kw) -> (kh, kw, C, F)
    out = _native.pack_taps(hwio)
    if out is None:
        return None
    entry = _Packed(w.detach(), key, out, int(out.ctypes.data))
    with _LOCK:
        _PACKS[m] = entry
    return entry
