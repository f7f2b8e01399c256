"""Command-line arguments to values: shapes, counts, conv specs, arrays from files.

Each parser raises ``argparse.ArgumentTypeError`` (as ``type=`` expects) or ``ValueError``
with one line saying what was expected and what came.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from pointwise.layout import as_array

__all__ = ["conv_spec", "dims", "input_shape", "load_array", "parse", "parse_bias", "positive",
           "shape"]


def dims(text: str) -> tuple[int, ...]:
    """``"4x5x3"`` → (4, 5, 3); ``×`` and ``,`` also separate; () when it does not parse."""
    parts = text.lower().replace("×", "x").replace(",", "x").split("x")
    try:
        values = tuple(int(s) for s in parts)
    except ValueError:
        return ()
    return values if min(values) >= 1 else ()


def input_shape(text: str) -> tuple[int, ...]:
    """``"1x3x224x224"`` → (1, 3, 224, 224)."""
    values = dims(text)
    if len(values) < 2:
        raise argparse.ArgumentTypeError(
            f"expected an input shape like 1x3x224x224 (NxCxHxW), but got {text!r}")
    return values


def parse(parser: Callable[[str], Any], text: str, option: str) -> Any:
    """``parser(text)``, its complaint as a ValueError: one line, as every other error."""
    try:
        return parser(text)
    except argparse.ArgumentTypeError as e:
        raise ValueError(f"argument {option}: {e}") from None


def conv_spec(text: str) -> tuple[tuple[int, int], int]:
    """``"5x5:32"`` → ((5, 5), 32); ``"3:64"`` is a 3×3 conv."""
    kernel, _, filters = text.lower().replace("×", "x").partition(":")
    try:
        ks = tuple(int(s) for s in kernel.split("x"))
        f = int(filters)
    except ValueError:
        ks, f = (), 0
    if len(ks) == 1:
        ks = (ks[0], ks[0])
    if len(ks) != 2 or min(ks) < 1 or f < 1:
        raise argparse.ArgumentTypeError(
            f"expected a conv like 5x5:32 (kernel, then output channels), but got {text!r}")
    return (ks[0], ks[1]), f


def load_array(path: str | os.PathLike[str], name: str = "x") -> np.ndarray:
    """Read an array from a ``.npy`` file (pickles refused) or a ``.json`` nested list."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in (".npy", ".json"):
        raise ValueError(f"expected a .npy or .json file for {name}, but got {str(p)!r}")
    if not p.is_file():
        raise FileNotFoundError(f"expected a file {str(p)!r} for {name}, but there is none")
    if suffix == ".json":
        try:
            value = json.loads(p.read_text(encoding="utf-8"))
        except ValueError as e:  # JSONDecodeError and UnicodeDecodeError
            raise ValueError(f"expected {str(p)!r} to hold JSON (a nested list of numbers) "
                             f"for {name}, but could not parse it: {e}") from None
        return as_array(value, name)
    try:
        arr = np.load(p, allow_pickle=False)  # loading a pickle can run any code
    except (ValueError, EOFError, OSError) as e:
        why = f"could not read it: {e}"
        if "pickle" in why.lower() or "object arrays" in why.lower():
            why = "it holds pickled Python objects, which pointwise never loads (they can run code)"
        raise ValueError(
            f"expected {str(p)!r} to be a .npy array file for {name}, but {why}"
        ) from None
    if not isinstance(arr, np.ndarray):  # an .npz archive under a .npy name
        raise ValueError(f"expected one array in {str(p)!r} for {name}, but got an archive")
    return as_array(arr, name)


def parse_bias(text: str, x: Any = None) -> np.ndarray:
    """``"1,-2"`` → ints; ``"0.5,1"`` → floats in ``x``'s float dtype (float64 otherwise).

    Taking ``x``'s dtype lets a typed-in bias join a float32 input without a dtype clash.

    >>> parse_bias("1, -2").tolist(), parse_bias("0.5,1", np.zeros(1, np.float32)).dtype
    ([1, -2], dtype('float32'))
    """
    items = [s.strip() for s in text.split(",")]
    with contextlib.suppress(ValueError):
        return np.array([int(s) for s in items])
    try:
        values = [float(s) for s in items]
    except ValueError:
        raise ValueError(f"expected the bias as comma-separated numbers, e.g. 0.5,-1, "
                         f"but got {text!r}") from None
    xd = None if x is None else as_array(x, "x").dtype
    return np.array(values, dtype=xd if xd is not None and xd.kind not in "iu" else np.float64)


def shape(text: str) -> tuple[int, ...]:
    """``"4x5x3"`` → (4, 5, 3), HxWxC or NxHxWxC."""
    values = dims(text)
    if len(values) not in (3, 4):
        raise argparse.ArgumentTypeError(
            f"expected a shape like 4x5x3 (HxWxC) or 2x4x5x3 (NxHxWxC), but got {text!r}"
        )
    return values


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, but got {text!r}")
    return value
