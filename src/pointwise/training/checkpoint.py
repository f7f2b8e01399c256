"""Checkpoints that survive a crash at any moment and never unpickle arbitrary objects.

A checkpoint is one ``torch.save`` file holding only tensors and primitive containers
(dict, list, str, int, float, bool, None): model and optimizer state_dicts, the
scheduler's, the epoch, the RNG states (as tensors and lists), the config and the data
split. So :func:`load` can use ``torch.load(..., weights_only=True)``, which refuses any
other object instead of running its pickle code.

Writing goes through :func:`pointwise.files.atomic_write`: a temporary file in the same
folder, fsync, ``os.replace``, then an fsync of the folder so the rename itself is on disk.
A SIGKILL or power cut at any moment therefore leaves the previous checkpoint or the new
one, never a torn file; the worst case is a stale ``.NAME.*.tmp`` beside it, which
:func:`remove_stale_temps` clears when training starts again.

A torn write is not the only way a file goes bad: a flipped bit on disk or in a copy leaves
a file that loads, with one weight changed. torch's zip reader does not check the entries'
CRCs, so :func:`save` records a SHA-256 of the whole state (every tensor's dtype, shape and
bytes, every primitive, in order) under ``"sha256"`` and :func:`load` refuses a file whose
state no longer matches it. (The checksum finds damage, not forgery: whoever edits a file
can recompute it. Version 1 files predate it and load unchecked.)
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import random
import struct
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pointwise.files import atomic_write

__all__ = ["CHECKSUM", "FORMAT", "VERSION", "digest", "get_rng_state", "load",
           "remove_stale_temps", "save", "set_rng_state"]

FORMAT = "pointwise.training.checkpoint"
VERSION = 2
CHECKSUM = "sha256"


def save(path: str | os.PathLike[str], state: dict[str, Any]) -> None:
    """Write ``state`` (tensors and primitives only) atomically to ``path``, with a
    checksum of it."""
    path = Path(path)
    full = {"format": FORMAT, "version": VERSION, **state}
    full.pop(CHECKSUM, None)  # a state loaded earlier carries its old one
    full[CHECKSUM] = digest(full)
    with atomic_write(path) as fh:
        torch.save(full, fh)


def load(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save`.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is truncated or corrupted, holds objects other than tensors
            and primitives, or is not a pointwise checkpoint (another program's file).
    """
    path = Path(path)
    if not path.is_file():
        why = "is a folder" if path.is_dir() else "does not exist"
        raise FileNotFoundError(f"expected a checkpoint file, but {str(path)!r} {why}")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip; never try the legacy loader
        raise ValueError(f"expected a complete checkpoint in {str(path)!r}, but it is "
                         f"truncated or corrupted, or not a torch.save file at all; resume "
                         f"from an earlier copy or start again")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # weights_only refused an object: never run it
        # (torch's own message suggests weights_only=False, which must never be followed)
        what = ("holds other Python objects than tensors and primitives, which pointwise "
                "never loads (loading them could run code)" if zipfile.is_zipfile(path)
                else "is not a torch.save file")
        raise ValueError(f"expected a pointwise checkpoint in {str(path)!r}, but it "
                         f"{what}; checkpoints come from `pointwise train --out DIR`") from None
    except Exception as e:  # a damaged archive fails anywhere in torch's reader
        raise ValueError(f"expected a complete checkpoint in {str(path)!r}, but it is "
                         f"truncated or corrupted ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''}); resume from an "
                         f"earlier copy or start again") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        got = (f"keys {sorted(map(str, state))[:6]}" if isinstance(state, dict)
               else type(state).__name__)
        raise ValueError(f"expected a pointwise checkpoint (format {FORMAT!r}) in "
                         f"{str(path)!r}, but got {got}; checkpoints come from "
                         f"`pointwise train --out DIR`")
    version = state.get("version")
    if type(version) is not int or version not in (1, VERSION):
        raise ValueError(f"expected checkpoint version {VERSION}, but got {version!r} in "
                         f"{str(path)!r}")
    if version == VERSION:
        recorded = state.pop(CHECKSUM, None)
        if digest(state) != recorded:
            raise ValueError(f"expected the checkpoint in {str(path)!r} to match its "
                             f"recorded checksum, but it does not: the file was damaged or "
                             f"edited after it was written; resume from an earlier copy or "
                             f"start again")
    return state


def digest(state: Any) -> str:
    """SHA-256 of a state of tensors and primitives: types, values and order, so any change
    to a tensor's bytes, dtype or shape, or to any primitive, changes it.

    >>> digest({"w": torch.zeros(2), "epoch": 3}) == digest({"w": torch.zeros(2), "epoch": 3})
    True
    >>> digest({"w": torch.zeros(2)}) == digest({"w": torch.zeros(2, dtype=torch.float64)})
    False

    Raises:
        ValueError: ``state`` holds something other than tensors and primitives.
    """
    h = hashlib.sha256()
    _feed(h, state)
    return h.hexdigest()


def _feed(h: Any, v: Any) -> None:
    """Write ``v`` into ``h`` unambiguously: a tag, then a length or the value."""
    if v is None:
        h.update(b"N")
    elif isinstance(v, bool):  # before int: bool is an int
        h.update(b"B1" if v else b"B0")
    elif isinstance(v, int):
        h.update(b"I%d;" % v)
    elif isinstance(v, float):
        h.update(b"F" + struct.pack("<d", v))
    elif isinstance(v, str):
        raw = v.encode("utf-8", "surrogatepass")
        h.update(b"S%d:" % len(raw) + raw)
    elif isinstance(v, (list, tuple)):
        h.update(b"L%d:" % len(v))
        for item in v:
            _feed(h, item)
    elif isinstance(v, dict):
        h.update(b"D%d:" % len(v))
        for key, item in v.items():
            _feed(h, key)
            _feed(h, item)
    elif isinstance(v, torch.Tensor) and v.layout == torch.strided and not v.is_quantized:
        t = v.detach().cpu().resolve_conj().resolve_neg().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}:".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy())  # the raw bytes, (numel·size,)
    else:
        raise ValueError(f"expected only tensors and primitives in a checkpoint, but got "
                         f"{type(v).__name__}")


def remove_stale_temps(path: str | os.PathLike[str]) -> list[Path]:
    """Delete ``.NAME.*.tmp`` files left beside ``path`` by a writer that was killed."""
    path = Path(path)
    stale = sorted(path.parent.glob(f".{path.name}.*.tmp"))
    for p in stale:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
    return stale


def get_rng_state(loader: torch.Generator | None = None) -> dict[str, Any]:
    """Every RNG a training step may draw from, as tensors and lists (weights_only-safe)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)  # MT19937 tuple
    version, py_state, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(np.asarray(keys, np.int64)),
                  "pos": int(pos), "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": {"version": int(version), "state": torch.tensor(py_state, dtype=torch.int64),
                   "gauss": py_gauss},
    }
    if loader is not None:
        state["loader"] = loader.get_state()
    return state


def set_rng_state(state: dict[str, Any], loader: torch.Generator | None = None) -> None:
    """Restore what :func:`get_rng_state` returned."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), p["gauss"]))
    if loader is not None and "loader" in state:
        loader.set_state(state["loader"])
