"""Inputs to explain: the tutorial's worked example, and small random integer arrays."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from pointwise.layout import LAYOUTS, as_array

__all__ = ["AXES", "TUTORIAL_W", "TUTORIAL_X", "random_filter", "random_input",
           "tutorial_example"]

# The tutorial's example, HWC input and HWIO filter; tutorial_example() moves it to a layout.
TUTORIAL_X = [[[1, 2], [3, 4], [5, 6]], [[7, 8], [9, 10], [11, 12]], [[13, 14], [15, 16], [17, 18]]]
TUTORIAL_W = [[[[1], [2]]]]

#: The axes of x in each layout, as the text names them.
AXES = {"HWC": "H, W, C", "NHWC": "N, H, W, C", "CHW": "C, H, W", "NCHW": "N, C, H, W"}


def tutorial_example(layout: str = "HWC") -> tuple[np.ndarray, np.ndarray]:
    """The tutorial's (3, 3, 2) input and 2→1 filter, in ``layout``'s conventions.

    >>> [a.shape for a in tutorial_example("NCHW")]
    [(1, 2, 3, 3), (1, 2, 1, 1)]
    """
    channels_last, batched = LAYOUTS[layout]
    x, w = np.array(TUTORIAL_X), np.array(TUTORIAL_W)  # (H, W, C), (1, 1, C, F) HWIO
    if not channels_last:
        x, w = x.transpose(2, 0, 1), w.transpose(3, 2, 0, 1)  # (C, H, W), (F, C, 1, 1) OIHW
    return (x[None] if batched else x), w


def random_input(shape: Sequence[int], *, layout: str = "HWC", seed: int = 0) -> np.ndarray:
    """A random input of integers 0..9: small enough to add up by eye, and exact.

    ``shape`` is (H, W, C), or (N, H, W, C) for a batched layout, whatever the layout's axis
    order; the array comes back in that order. The same seed gives the same array.

    >>> random_input((2, 3, 4), layout="CHW").shape
    (4, 2, 3)
    """
    channels_last, batched = LAYOUTS[layout]
    dims = tuple(int(s) for s in shape)
    if batched and len(dims) == 3:
        dims = (1, *dims)  # one image
    if len(dims) != 3 + batched or min(dims) < 0:
        want = "NxHxWxC (or HxWxC)" if batched else "HxWxC"
        hint = f"; use layout {'N' + layout!r} for a batch" if len(dims) == 4 else ""
        raise ValueError(f"expected a {want} shape for layout {layout!r}, but got "
                         f"{'x'.join(map(str, dims))}{hint}")
    x = np.random.default_rng(seed).integers(0, 10, size=dims)  # ([N,] H, W, C)
    return x if channels_last else np.moveaxis(x, -1, -3)  # ([N,] C, H, W)


def random_filter(x: Any, filters: int, *, layout: str = "HWC", seed: int = 0,
                  kernel: int = 1) -> np.ndarray:
    """A random filter of integers -3..3 for ``x``: (k, k, C, F) HWIO or (F, C, k, k) OIHW,
    k = ``kernel`` (1 by default).

    Its random stream is independent of :func:`random_input`'s for the same seed.

    >>> random_filter(random_input((2, 2, 3)), 4).shape
    (1, 1, 3, 4)
    >>> random_filter(random_input((2, 2, 3), layout="CHW"), 4, layout="CHW", kernel=3).shape
    (4, 3, 3, 3)
    """
    channels_last, batched = LAYOUTS[layout]
    xa = as_array(x, "x")
    if xa.ndim != 3 + batched:
        raise ValueError(f"expected a {3 + batched}-D x ({AXES[layout]}) for layout "
                         f"{layout!r}, but got x of shape {xa.shape}")
    if filters < 1 or kernel < 1:
        raise ValueError(f"expected at least 1 filter of at least 1×1, but got {filters} "
                         f"filters of {kernel}×{kernel}")
    c = xa.shape[-1 if channels_last else -3]
    rng = np.random.default_rng([seed, 1])
    if kernel == 1:  # the 1×1 filter's draws, as they always were
        w = rng.integers(-3, 4, size=(c, filters))  # (C, F)
        return w[None, None] if channels_last else w.T[:, :, None, None]  # HWIO or OIHW
    w4 = rng.integers(-3, 4, size=(kernel, kernel, c, filters))  # (k, k, C, F) HWIO
    return w4 if channels_last else w4.transpose(3, 2, 0, 1)  # HWIO or OIHW
