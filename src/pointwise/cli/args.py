"""Command-line arguments to values, one convention for each kind of option.

The conventions every command follows (``pointwise --help`` states them too):

* ``--input FILE`` is an input file; a tensor's size is ``--input-size``, always in PyTorch's
  order, ``CxHxW`` or ``NxCxHxW`` (:func:`size`), whatever ``--layout`` says of memory.
* ``--json PATH``, ``--csv PATH``, ``--png PATH``: write that format to PATH (``-`` for
  stdout, in place of the text), creating its folder; JSON is strict (:func:`strict_json`,
  no ``NaN``).
* ``--threads T`` defaults to torch's own default (:func:`default_threads`).
* ``--quiet``: no progress (a live bar only on a terminal, else one line per epoch or
  problem).
* Files are checked before any work (:func:`input_file`, :func:`output_path`), and an array
  whose size would not fit in memory is refused before it is allocated (:func:`check_fits`).

Each value parser raises ``argparse.ArgumentTypeError`` (as ``type=`` expects) or
``ValueError``/:class:`~pointwise.cli.errors.CliError` with one line saying what was
expected and what came.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from pointwise.cli.errors import EXIT, CliError
from pointwise.files import strict_json
from pointwise.layout import as_array

__all__ = ["check_fits", "conv_spec", "default_threads", "device", "dims", "input_file",
           "load_array", "output_path", "parse", "parse_bias", "positive", "size",
           "strict_json", "threads", "write_output"]

def dims(text: str) -> tuple[int, ...]:
    """``"4x5x3"`` → (4, 5, 3); ``×`` and ``,`` also separate; () when it does not parse."""
    parts = text.lower().replace("×", "x").replace(",", "x").split("x")
    try:
        values = tuple(int(s) for s in parts)
    except ValueError:
        return ()
    return values if min(values) >= 1 else ()


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


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, but got {text!r}")
    return value


def seconds(text: str) -> float:
    """A finite number of seconds, 0 or more (argparse type)."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected seconds, a number 0 or more, but got {text!r}")
    return value


def size(text: str) -> tuple[int, ...]:
    """A tensor size in PyTorch's order: ``"3x224x224"`` (CxHxW) or ``"1x3x224x224"``.

    >>> size("192x28x28"), size("2x3x8x8")
    ((192, 28, 28), (2, 3, 8, 8))
    """
    values = dims(text)
    if len(values) not in (3, 4):
        raise argparse.ArgumentTypeError(
            f"expected a size like 3x224x224 (CxHxW, PyTorch's order) or 1x3x224x224 "
            f"(NxCxHxW), but got {text!r}")
    return values


def threads(text: str) -> int:
    """``--threads T``: a positive count."""
    return positive(text)


def default_threads() -> int:
    """torch's own default: ``OMP_NUM_THREADS`` when set, else the cores this process may
    use. (``torchrun`` sets ``OMP_NUM_THREADS=1`` for each of several processes.)"""
    with contextlib.suppress(KeyError, ValueError):
        n = int(os.environ["OMP_NUM_THREADS"])
        if n >= 1:
            return n
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


# ---------------------------------------------------------------------------------- files
def input_file(text: str, what: str, *, suffixes: tuple[str, ...] = (),
               folder_hint: str | None = None) -> Path:
    """``text`` as a path to an existing, readable regular file, or one clear error.

    ``suffixes``: the accepted endings (lower case), if only some are. ``folder_hint``: a
    file name to suggest inside ``text`` when it is a folder (``checkpoint.pt``).
    """
    p = Path(text)
    if suffixes and p.suffix.lower() not in suffixes:
        raise CliError(f"expected {' or '.join(suffixes)} file for {what}, but got {text!r}")
    if p.is_dir():
        inside = p / folder_hint if folder_hint else None
        raise CliError(f"expected a file for {what}, but {text!r} is a folder",
                       hint=f"did you mean {str(inside)!r}?" if inside and inside.is_file()
                       else None)
    if not p.exists():
        raise CliError(f"expected a file for {what}, but {text!r} does not exist")
    if not p.is_file():
        raise CliError(f"expected a regular file for {what}, but {text!r} is not one "
                       f"(a device, FIFO or socket)")
    if not os.access(p, os.R_OK):
        raise CliError(f"expected a readable file for {what}, but {text!r} cannot be read "
                       f"(permissions)")
    return p


def output_path(text: str | None, what: str, *, stdout: bool = True,
                folder: bool = False) -> str | None:
    """Check an output path before the work: it is no folder itself (unless ``folder``), and
    its folder exists or is created, as ``mkdir -p`` would. ``-`` is stdout where ``stdout``
    allows it. None stays None."""
    if text is None:
        return None
    if text == "-":
        if not stdout:
            raise CliError(f"expected a file for {what}, but got '-' (stdout holds text only)")
        return text
    p = Path(text)
    if p.is_dir() and not folder:
        raise CliError(f"expected a file name for {what}, but {text!r} is a folder")
    parent = p if folder and (p.is_dir() or text.endswith(("/", os.sep))) else p.parent
    blocker = next((q for q in (parent, *parent.parents) if q.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise CliError(f"expected a folder for {what}, but {str(blocker)!r} is a file")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CliError(f"expected a folder {str(parent)!r} for {what}, but it cannot be "
                       f"created: {e.strerror or e}") from None
    return text


def write_output(path: str, text: str, what: str = "") -> None:
    """``text`` to ``path`` atomically (``-``: stdout), saying so on stderr."""
    from pointwise.files import atomic_write

    if path == "-":
        print(text, end="" if text.endswith("\n") else "\n")
        return
    with atomic_write(path, "w") as fh:
        fh.write(text if text.endswith("\n") else text + "\n")
    print(f"wrote {path}" + (f" ({what})" if what else ""), file=sys.stderr)


# ------------------------------------------------------------------------- arrays, memory
MAX_JSON_BYTES = 256 << 20  # a JSON array file this big would take ~10x as much as lists


def available_memory() -> int:
    """Bytes this machine can still hand out (MemAvailable; total memory elsewhere)."""
    with contextlib.suppress(OSError, ValueError, StopIteration):
        with open("/proc/meminfo", encoding="ascii") as fh:
            line = next(s for s in fh if s.startswith("MemAvailable:"))
        return int(line.split()[1]) * 1024
    with contextlib.suppress(ValueError, OSError, AttributeError):
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return 1 << 62


def check_fits(shape: tuple[int, ...], itemsize: int, what: str, copies: int = 1) -> None:
    """Refuse, before allocating, an array of ``shape`` that would not fit in memory
    (``copies`` arrays of its size are needed), naming the size."""
    count = math.prod(shape)
    need = count * itemsize * copies
    have = available_memory()
    if need > have:
        raise CliError(f"expected {what} to fit in memory, but {'x'.join(map(str, shape))} "
                       f"needs {_bytes(need)} and this machine has {_bytes(have)} available",
                       hint="ask for a smaller size", code=EXIT["missing"])


def _bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"


def load_array(path: str | os.PathLike[str], name: str = "x") -> np.ndarray:
    """Read an array from a ``.npy`` file (pickles refused) or a ``.json`` nested list.

    An ``.npy`` header is read first: a file shorter than its header says, or an array that
    would not fit in memory, is refused before anything is allocated.
    """
    what = f"{name} (.npy or .json)"
    p = input_file(str(path), what, suffixes=(".npy", ".json"))
    if p.suffix.lower() == ".json":
        return _load_json(p, name)
    try:
        with open(p, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                      else np.lib.format.read_array_header_2_0)
            shape, _, dtype = header(fh, max_header_size=10_000)
            data_bytes = os.fstat(fh.fileno()).st_size - fh.tell()
    except Exception as e:  # NumPy's header parser raises whatever its tokenizer meets
        with open(p, "rb") as fh:
            start = fh.read(4)
        why = ("it holds pickled Python objects, which pointwise never loads (they can run "
               "code)" if start[:1] == b"\x80" else
               "it is a zip archive (.npz?), not one array" if start == b"PK\x03\x04" else
               f"could not read its header: {e}")
        raise ValueError(f"expected {str(p)!r} to be a .npy array file for {name}, but "
                         f"{why}") from None
    if dtype.hasobject:
        raise ValueError(f"expected {str(p)!r} to be a .npy array file for {name}, but it "
                         f"holds pickled Python objects, which pointwise never loads "
                         f"(they can run code)")
    need = math.prod(shape) * dtype.itemsize
    if need > data_bytes:
        raise ValueError(f"expected {str(p)!r} to hold the {_bytes(need)} of data its header "
                         f"announces for a {'x'.join(map(str, shape)) or 'scalar'} "
                         f"{dtype} array, but it holds {_bytes(data_bytes)}: the file is "
                         f"truncated or corrupted")
    check_fits(tuple(shape), dtype.itemsize, f"{name} from {str(p)!r}")
    try:
        arr = np.load(p, allow_pickle=False)  # loading a pickle can run any code
    except (ValueError, EOFError, OSError) as e:
        raise ValueError(f"expected {str(p)!r} to be a .npy array file for {name}, but "
                         f"could not read it: {e}") from None
    return as_array(arr, name)


def _load_json(p: Path, name: str) -> np.ndarray:
    if p.stat().st_size > MAX_JSON_BYTES:
        raise CliError(f"expected a JSON file for {name} of at most {_bytes(MAX_JSON_BYTES)}, "
                       f"but {str(p)!r} holds {_bytes(p.stat().st_size)}",
                       hint="save large arrays as .npy (numpy.save)")
    try:
        value = json.loads(p.read_text(encoding="utf-8"))
    except RecursionError:
        raise ValueError(f"expected {str(p)!r} to hold a nested list of numbers for {name}, "
                         f"but it is nested too deeply to read") from None
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError
        raise ValueError(f"expected {str(p)!r} to hold JSON (a nested list of numbers) "
                         f"for {name}, but could not parse it: {e}") from None
    try:
        return as_array(value, name)
    except RecursionError:
        raise ValueError(f"expected {str(p)!r} to hold a nested list of numbers for {name}, "
                         f"but it is nested too deeply to read") from None


# -------------------------------------------------------------------------------- devices
def device(text: str) -> str:
    """``--device``: a torch device that exists here, or one clear error (torch imported)."""
    import torch

    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError, TypeError):
        raise CliError(f"expected --device like cpu, cuda, cuda:1 or mps, but got {text!r}"
                       ) from None
    kind = dev.type
    if kind == "cpu":
        return text
    backend = {"cuda": torch.cuda, "xpu": getattr(torch, "xpu", None),
               "mps": getattr(torch.backends, "mps", None)}.get(kind)
    if backend is None:
        raise CliError(f"expected --device cpu, cuda, xpu or mps, but got {text!r}",
                       hint="use --device cpu")
    try:
        available = bool(backend.is_available())
        count = int(backend.device_count()) if hasattr(backend, "device_count") else 1
    except Exception:  # a broken driver install counts as no device
        available, count = False, 0
    if not available:
        raise CliError(f"expected a {kind.upper()} device for --device {text}, but this torch "
                       f"({torch.__version__}) finds none", hint="use --device cpu",
                       code=EXIT["missing"])
    if dev.index is not None and dev.index >= count:
        raise CliError(f"expected --device {text} among the {count} {kind} device(s) here, "
                       f"but there is no index {dev.index}", hint=f"use --device {kind}:0",
                       code=EXIT["missing"])
    return text
