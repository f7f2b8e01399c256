"""Run a function in a forked child and get its answer: the thread pools must survive fork."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from typing import Any


def _reply(conn: Any, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    conn.send(fn(*args))


def answer_from_forked_child(fn: Callable[..., Any], *args: Any, timeout: float = 30) -> Any:
    """``fn(*args)`` computed in a forked child, or None when the child hung or died."""
    ctx = multiprocessing.get_context("fork")
    parent_end, child_end = ctx.Pipe()
    proc = ctx.Process(target=_reply, args=(child_end, fn, args))
    proc.start()
    answer = parent_end.recv() if parent_end.poll(timeout) else None
    proc.join(5)
    if proc.is_alive():
        proc.kill()
    return answer
