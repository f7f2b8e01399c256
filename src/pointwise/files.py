"""File writes that appear whole or not at all, only where a file belongs; JSON that strict
parsers accept.

Every file pointwise writes (checkpoints, ``--onnx``, ``--png``, ``--json`` results) goes
through :func:`atomic_write`. What is at the path decides what happens:

* nothing, or a regular file: a temporary file is written beside it, fsynced and renamed
  over it (``os.replace`` within one folder is atomic), then the folder is fsynced so the
  rename itself is on disk. A file replaced keeps its permission bits; a new one is 0o644.
* a symbolic link: the same, at the file it points to (followed to the end), so the link
  stays a link and its target gets the new content, as ``open(path, "w")`` would do.
* a folder, FIFO, device node or socket: refused before anything is written. Renaming over
  one would replace it (``--png /dev/full`` used to turn the device into a PNG), and
  writing into one is not a file that appears whole.
* a read-only file, or a folder without write permission: refused with ``PermissionError``.
  A file with no write bit at all is refused even for root, who could otherwise replace
  it: its owner marked it as not to be changed.

What stays open: the path is checked and then replaced, so a process that swaps a FIFO in
between those two steps wins the race; the rename still never writes into it.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_write", "strict_json", "writable_target"]

_KINDS = {stat.S_ISFIFO: "a FIFO (named pipe)", stat.S_ISCHR: "a character device",
          stat.S_ISBLK: "a block device", stat.S_ISSOCK: "a socket",
          stat.S_ISLNK: "a symbolic link that never reaches a file (a loop)"}


def writable_target(path: str | os.PathLike[str]) -> tuple[Path, os.stat_result | None]:
    """The file a write to ``path`` lands in (symbolic links followed), and its stat (None
    when it does not exist yet).

    Raises:
        FileNotFoundError: the folder it would go in does not exist.
        IsADirectoryError: ``path`` is a folder.
        PermissionError: the file or its folder is read-only.
        ValueError: ``path`` is empty, or a FIFO, device node, socket or link loop.
    """
    name = os.fspath(path)
    if not isinstance(name, str) or not name or "\0" in name:
        raise ValueError(f"expected a file path, but got {name!r}")
    target = Path(os.path.realpath(name))
    shown = repr(name) + (f" (a link to {str(target)!r})" if str(target) != os.path.abspath(name)
                          else "")
    try:
        st: os.stat_result | None = os.lstat(target)
    except FileNotFoundError:
        st = None
    except NotADirectoryError:  # a file where a folder of the path should be
        raise FileNotFoundError(f"expected an existing folder for {shown}, but a part of the "
                                f"path is a file") from None
    if st is not None:
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(f"expected a file path, but {shown} is a folder; name a "
                                    f"file inside it")
        if not stat.S_ISREG(st.st_mode):
            kind = next((k for test, k in _KINDS.items() if test(st.st_mode)), "not a file")
            raise ValueError(f"expected a regular file or a new path, but {shown} is {kind}; "
                             f"pointwise writes only regular files: choose another path")
        if not st.st_mode & 0o222 or not os.access(target, os.W_OK):
            raise PermissionError(f"expected a writable file, but {shown} is read-only (mode "
                                  f"{stat.S_IMODE(st.st_mode):#o}); make it writable "
                                  f"(chmod u+w) or choose another path")
    folder = target.parent
    if not folder.is_dir():
        raise FileNotFoundError(f"expected an existing folder for {shown}, but "
                                f"{str(folder)!r} does not exist")
    fst = folder.stat()
    if not fst.st_mode & 0o222 or not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(f"expected a folder pointwise can write in for {shown}, but "
                              f"{str(folder)!r} is read-only (mode "
                              f"{stat.S_IMODE(fst.st_mode):#o}); choose another path")
    return target, st


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside the file ``path`` names; on success fsync it and rename
    it into place (see the module docstring for links, special files and permissions).

    A crash or an exception at any moment leaves either the old file or the new one, never a
    half-written file.

    >>> import tempfile, pathlib
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "a.txt"
    >>> with atomic_write(out, "w") as fh:
    ...     _ = fh.write("whole")
    >>> out.read_text()
    'whole'
    """
    target, st = writable_target(path)
    folder = target.parent
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
    except PermissionError as e:  # e.g. a read-only file system
        raise PermissionError(f"expected a folder pointwise can write in for {str(path)!r}, "
                              f"but {str(folder)!r} refused a new file ({e.strerror})") from None
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        # mkstemp makes the file private; outputs are meant to be shared, and a file
        # replaced keeps the bits its owner gave it
        os.chmod(tmp, 0o644 if st is None else stat.S_IMODE(st.st_mode))
        writable_target(target)  # still a file (or nothing) just before the rename
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    """Make the rename durable: a folder's entries reach disk only when it is fsynced."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open a folder; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


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
