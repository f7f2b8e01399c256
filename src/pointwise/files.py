"""File writes that appear whole or not at all, and JSON that strict parsers accept."""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_write", "strict_json"]


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success fsync it and rename it into place.

    A crash or an exception at any moment leaves either the old file or the new one, never a
    half-written file, because ``os.replace`` within one folder is atomic.
    """
    target = Path(path)
    folder = target.parent.resolve()
    if not folder.is_dir():
        raise FileNotFoundError(
            f"expected an existing folder for {str(target)!r}, but {str(folder)!r} does not exist"
        )
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes the file private; outputs are meant to be shared
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def strict_json(obj: Any, **kwargs: Any) -> str:
    """``json.dumps`` that strict parsers accept: NaN and ±Inf (which JSON cannot hold) are
    written as the strings ``"NaN"``, ``"Infinity"`` and ``"-Infinity"``, as protobuf's JSON
    mapping writes them; NumPy scalars and arrays become numbers and lists.

    >>> strict_json({"y": [1.5, float("nan"), -float("inf")]})
    '{"y": [1.5, "NaN", "-Infinity"]}'
    """
    return json.dumps(_finite(obj), allow_nan=False, **kwargs)


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        if math.isfinite(obj):
            return obj
        return "NaN" if math.isnan(obj) else ("Infinity" if obj > 0 else "-Infinity")
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    tolist = getattr(obj, "tolist", None)  # NumPy arrays and scalars, without importing it
    if tolist is not None and type(obj).__module__ == "numpy":
        return _finite(tolist())
    return obj
