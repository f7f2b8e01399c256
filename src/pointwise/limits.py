"""What a result can hold: exact int64 sums, and the machine's memory.

Both are checked before anything is computed or allocated, so a call that cannot give the
right answer is refused with a clear error instead of wrapping around (integers) or dying
in the allocator (a padding of 10**6).
"""

from __future__ import annotations

import math
import os

import numpy as np

__all__ = ["INT64_MAX", "check_int64_sums", "check_output_fits", "int_bound", "memory_bytes"]


INT64_MAX = 2**63 - 1


def memory_bytes() -> int:
    """This machine's physical memory (2**63 where the OS does not say)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return INT64_MAX


def check_output_fits(shape: tuple[int, ...], itemsize: int, x_shape: tuple[int, ...],
                      padding: tuple[int, int], stride: tuple[int, int]) -> None:
    """Refuse, before allocating, an output larger than the machine's memory: a padding of
    10**6 asks for terabytes, and NumPy's MemoryError would say so only after trying. The
    axes of an empty output count too (as NumPy counts them): (0, 2**32, 2**32, 0) is
    refused by NumPy and by torch alike."""
    nbytes = itemsize * math.prod(max(d, 1) for d in shape)
    total = memory_bytes()
    if nbytes > total:
        raise ValueError(
            f"expected an output that fits in memory, but x of shape {tuple(x_shape)} with "
            f"padding={padding} and stride={stride} gives an output of shape {tuple(shape)}, "
            f"{nbytes / 2**30:.4g} GiB, more than this machine's {total / 2**30:.4g} GiB; "
            f"lower the padding"
        )


def int_bound(a: np.ndarray | None) -> int:
    """``max |a|`` as a Python int (0 for None or an empty array), computed without
    ``np.abs``, which wraps at int64's minimum; one element for a zero-stride stand-in."""
    if a is None or a.size == 0:
        return 0
    if not any(a.strides):  # every element is the first one
        v = int(a.reshape(-1)[0])
        return abs(v)
    return max(abs(int(a.max())), abs(int(a.min())))


def check_int64_sums(what: str, terms: list[tuple[int, int]]) -> None:
    """Integers compute exactly, in int64: refuse a call whose sums could leave int64.

    ``terms`` lists (largest |product|, how many are summed); the bound covers every partial
    sum, so no step of the GEMM can wrap. It is a bound, not the sum: values whose products
    cancel may be refused although their exact sum would fit.
    """
    bound = sum(m * k for m, k in terms)
    if bound > INT64_MAX:
        parts = " + ".join(f"{k} × {m}" for m, k in terms if m)
        raise ValueError(
            f"expected integer inputs whose sums fit in int64 (integers compute exactly, in "
            f"int64), but {what} may reach {parts} = {bound:.4g} (terms × largest |term|), "
            f"beyond 2**63 - 1; cast to float64 to compute with rounding, or use smaller values"
        )
