"""The forward's inner loop: GEMMs on blocks of pixels, each followed by its epilogue.

The caller (:mod:`pointwise.conv`) has already validated everything and cut the interior
out of the input and output; here, ``xi`` and ``yi`` are views with the same pixel grid.
Shapes use one alphabet: N, C (in), F (out), G (groups), M rows of a channels-last block,
P pixels of a channels-first block.

float32 calls with one group and an activation the kernels fuse go to the compiled kernels
(:mod:`pointwise.kernels.native`) when they are built and the CPU has AVX-512 or AVX2. The
rest run on NumPy's BLAS in one of two ways, one rule for plain and fused calls alike (see
``POOL_MIN_MACS``):

* little work: on the calling thread with OpenBLAS's own threads; a plain call is one GEMM
  over all pixels, exactly ``np.matmul``, and a fused one runs its blocks in order;
* more work: the pixels are cut into an equal number of blocks per core
  (:func:`pointwise.kernels.blas.parallel_rows`), each core running single-threaded BLAS on its
  blocks, so the epilogue (bias, activation) runs on every core while its block is still
  in that core's cache, and no OpenBLAS worker spins against the pool. A plain call gets one
  block per core; a fused one gets cache-sized blocks. The epilogue's constant blocks (the
  tiled bias, the zeros) are kept per thread between calls.

Input that cannot be viewed as a matrix (stride, odd strides, a dtype cast) is gathered
once into a contiguous buffer when the output can be; with padding, block by block.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np

from pointwise import activations
from pointwise.kernels import native
from pointwise.kernels.blas import cores, parallel_rows

__all__ = ["forward_channels_first", "forward_channels_last", "view_as"]

# Largest block (its input rows + output rows) on the channels-last path; the channels-first
# path takes twice this, because its blocks are column slices whose rows are short strided
# runs. Blocks are also cut small enough that every core gets one. Chosen by measurement
# (benchmarks/bench_block.py, fused/plain time at N=8): channels-last 1 MiB against 4 MiB,
# 1.07 vs 1.09 at 28² 512→128, 1.32 vs 1.87 at 112² 32→16, 1.55 vs 1.92 at 56² 24→144;
# channels-first 2 MiB against 4 MiB, 1.13 vs 1.14, 1.30 vs 1.29, 1.87 vs 2.30.
BLOCK_BYTES = 1 << 20
MIN_BLOCK_ROWS = 64
# Calls below this many multiply-adds run on OpenBLAS's own threads (fused ones block by
# block, in order): waking the pool's thread costs ~0.1 ms, more than the per-core epilogue
# saves. Calls above it, plain ones too, run on the pool. One rule for both matters: after a
# multi-threaded OpenBLAS call its workers spin for ~0.1 s, and a pool call in that time
# shares the cores with them. A fused layer followed by a plain one took 5.6 ms at 112²
# 32→16→32 when the plain one used OpenBLAS's threads, and 2.9 ms with this rule (19.1 vs
# 13.0 at 56² 64→256→64, 16.0 vs 13.4 at 28² 512→128→512).
POOL_MIN_MACS = 1 << 25

T = TypeVar("T")


def view_as(a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray | None:
    """``a`` reshaped without copying, or None when that needs a copy."""
    try:
        return a.reshape(shape, copy=False)
    except ValueError:
        return None


def _blocks(total: int, c: int, f: int, itemsize: int, budget: int | None,
            units: int = 1) -> int:
    """Length of a block of ``total`` rows (channels-last) or pixels per image
    (channels-first, ``units`` = images), so that the block count is a multiple of the cores.

    Every core then gets the same number of equal blocks (a 3-to-2 split of 5 blocks left one
    core idle for a fifth of the time). ``budget`` caps the bytes of a block's input and output
    rows, so that the fused epilogue finds the block in cache; without an epilogue it is None,
    and each core gets one share.
    """
    n = cores()
    per_unit = 1 if budget is None else -(-total * (c + f) * itemsize // budget)
    per_unit = max(1, min(per_unit, -(-total // MIN_BLOCK_ROWS)))
    k = per_unit
    while (k * units) % n and k < per_unit + n:  # round the count up to a multiple of n
        k += 1
    if (k * units) % n:
        k = per_unit
    return max(1, -(-total // k))


def _run(tasks: Sequence[T], do: Callable[[T], None], macs: int) -> None:
    """Do every task: shared among the cores when the work is big enough, else in order."""

    def share(t0: int, t1: int) -> None:
        for t in tasks[t0:t1]:
            do(t)

    if macs < POOL_MIN_MACS or not parallel_rows(len(tasks), share, 1):
        share(0, len(tasks))


# The epilogue's constant blocks, kept per thread between calls: allocating and filling them
# afresh cost 0.6 ms of a 6.7 ms call at 7² 512→2048 (page faults and a memset). They are
# bounded by one block each (BLOCK_BYTES channels-last, twice that channels-first).
_scratch = threading.local()


def _zeros(shape: tuple[int, int], dtype: np.dtype) -> np.ndarray:
    """A read-only block of zeros of ``shape``, reused by this thread."""
    n = shape[0] * shape[1]
    cache: dict[np.dtype, np.ndarray] = _scratch.__dict__.setdefault("zeros", {})
    z = cache.get(dtype)
    if z is None or z.size < n:
        z = cache[dtype] = np.zeros(n, dtype)
    return z[:n].reshape(shape)


def _bias_tile(b: np.ndarray, shape: tuple[int, int], dtype: np.dtype) -> np.ndarray:
    """``b`` broadcast to ``shape``, contiguous; refilled only when the bias or shape change."""
    key = (dtype, shape, b.shape)
    slot = _scratch.__dict__.get("bias")
    data = b.tobytes()  # bitwise: -0.0 and NaN payloads count as different biases
    if slot is not None and slot[0] == key and slot[1] == data:
        return slot[2]
    tile = slot[2] if slot is not None and slot[0] == key else np.empty(shape, dtype)
    tile[...] = b
    _scratch.bias = (key, data, tile)
    return tile


class _Epilogue:
    """Bias and activation on blocks, with constants built once per call.

    NumPy's ufuncs are several times faster with a full-size second operand than with a
    broadcast one (measured in benchmarks/bench_block.py), so the bias is tiled to the block
    shape once, and ReLU compares against a block of zeros.
    """

    def __init__(self, b: np.ndarray | None, act: str | None, shape: tuple[int, int],
                 bias_axis: int, dtype: np.dtype) -> None:
        self.act = act
        self.bias = None
        if b is not None:  # (Mb, F) tile channels-last, (F, Pb) channels-first
            self.bias = _bias_tile(b if bias_axis == 1 else b[:, None], shape, dtype)
        self.zeros = _zeros(shape, dtype) if act in ("relu", "relu6") else None

    def __call__(self, yb: np.ndarray) -> None:
        rows, cols = yb.shape
        if self.bias is not None:
            np.add(yb, self.bias[:rows, :cols], out=yb)
        if self.zeros is not None:
            np.maximum(yb, self.zeros[:rows, :cols], out=yb)  # propagates NaN, as relu must
            if self.act == "relu6":
                np.minimum(yb, 6, out=yb)
        else:
            activations.apply_(yb, self.act)


# --------------------------------------------------------------------------- channels-last
def _gemm_rows(xb: np.ndarray, wg: np.ndarray, yb: np.ndarray) -> None:
    """yb (M, F) = xb (M, C) @ W, per group."""
    g, cg, fg = wg.shape
    m = xb.shape[0]
    if g == 1:
        np.matmul(xb, wg[0], out=yb)  # (M, C) @ (C, F) -> (M, F)
        return
    xg = xb.reshape(m, g, cg).transpose(1, 0, 2)  # (G, M, Cg)
    yg = yb.reshape(m, g, fg).transpose(1, 0, 2)  # (G, M, Fg)
    np.matmul(xg, wg, out=yg)  # (G, M, Cg) @ (G, Cg, Fg) -> (G, M, Fg)


def forward_channels_last(
    xi: np.ndarray, yi: np.ndarray, wg: np.ndarray, b: np.ndarray | None, act: str | None,
    cd: np.dtype,
) -> None:
    """yi (N, Hi, Wi, F) = act(xi (N, Hi, Wi, C) @ W + b), with W per group (G, Cg, Fg)."""
    n, hi, wi, c = xi.shape
    f = yi.shape[3]
    m = n * hi * wi
    macs = m * c * wg.shape[2]
    fused = b is not None or act is not None
    y2 = view_as(yi, (m, f)) if yi.dtype == cd else None  # (M, F)
    if y2 is not None:
        x2 = view_as(xi, (m, c)) if xi.dtype == cd else None  # (M, C), no copy
        # (M, C) @ (C, F) -> (M, F), epilogue fused, on the compiled kernels; they gather a
        # strided xi (N, Hi, Wi, C) themselves, slab by slab
        if wg.shape[0] == 1 and native.rows(xi if x2 is None else x2, wg[0], y2, b, act):
            return
        if x2 is None:  # strided or cast: the one gather, into a contiguous buffer
            x2 = np.asarray(xi, dtype=cd, order="C").reshape(m, c)  # (M, C)

        if not fused and macs < POOL_MIN_MACS:  # one GEMM on OpenBLAS's own threads
            _gemm_rows(x2, wg, y2)  # (M, C) @ (C, F) -> (M, F)
            return
        rows = _blocks(m, c, f, cd.itemsize, BLOCK_BYTES if fused else None)
        epilogue = _Epilogue(b, act, (rows, f), 1, cd)

        def block(r0: int) -> None:
            yb = y2[r0 : r0 + rows]  # (Mb, F), a view of the output
            _gemm_rows(x2[r0 : r0 + rows], wg, yb)
            epilogue(yb)

        _run(range(0, m, rows), block, macs)
        return

    # Padding or a cast on output: gather whole output rows of one image, compute them, then
    # write them into their place in the output.
    # The gathered copies are working memory: blocks stay within the budget even unfused.
    hb = max(1, _blocks(m, c, f, cd.itemsize, BLOCK_BYTES) // max(1, wi))
    epilogue = _Epilogue(b, act, (hb * wi, f), 1, cd)

    def gathered(task: tuple[int, int]) -> None:
        i, h0 = task
        xs = xi[i, h0 : h0 + hb]  # (hb, Wi, C), strided view
        xb = np.asarray(xs, dtype=cd, order="C").reshape(-1, c)  # (hb·Wi, C)
        ys = yi[i, h0 : h0 + hb]  # (hb, Wi, F)
        direct = view_as(ys, (xb.shape[0], f)) if ys.dtype == cd else None
        tb = direct if direct is not None else np.empty((xb.shape[0], f), cd)  # (hb·Wi, F)
        _gemm_rows(xb, wg, tb)
        epilogue(tb)
        if direct is None:
            ys[...] = tb.reshape(ys.shape)  # (hb·Wi, F) -> (hb, Wi, F)

    _run([(i, h0) for i in range(n) for h0 in range(0, hi, hb)], gathered, macs)


# -------------------------------------------------------------------------- channels-first
def _gemm_cols(wg: np.ndarray, xb: np.ndarray, yb: np.ndarray) -> None:
    """yb (F, P) = W @ xb (C, P), per group."""
    g, fg, cg = wg.shape
    if g == 1:
        np.matmul(wg[0], xb, out=yb)  # (F, C) @ (C, P) -> (F, P)
        return
    pcols = xb.shape[1]
    # (G, Fg, Cg) @ (G, Cg, P) -> (G, Fg, P)
    np.matmul(wg, xb.reshape(g, cg, pcols), out=yb.reshape(g, fg, pcols))


def forward_channels_first(
    xi: np.ndarray, yi: np.ndarray, wg: np.ndarray, b: np.ndarray | None, act: str | None,
    cd: np.dtype,
) -> None:
    """yi (N, F, Hi, Wi) = act(W @ xi (N, C, Hi, Wi) + b), with W per group (G, Fg, Cg)."""
    n, c, hi, wi = xi.shape
    f = yi.shape[1]
    pix = hi * wi
    macs = n * pix * c * wg.shape[1]
    fused = b is not None or act is not None
    y3 = view_as(yi, (n, f, pix)) if yi.dtype == cd else None  # (N, F, P)
    if y3 is not None:
        x3 = view_as(xi, (n, c, pix)) if xi.dtype == cd else None  # (N, C, P), no copy
        if x3 is None:  # strided or cast: the one gather, into a contiguous buffer
            x3 = np.asarray(xi, dtype=cd, order="C").reshape(n, c, pix)  # (N, C, P)

        if wg.shape[0] == 1 and native.cols(wg[0], x3, y3, b, act):
            return  # (F, C) @ (N, C, P) -> (N, F, P), epilogue fused, on the compiled kernels
        if not fused and macs < POOL_MIN_MACS:  # one batched GEMM on OpenBLAS's threads
            g, fg, cg = wg.shape
            # (G, Fg, Cg) @ (N, G, Cg, P) -> (N, G, Fg, P)
            np.matmul(wg, x3.reshape(n, g, cg, pix), out=y3.reshape(n, g, fg, pix))
            return
        cols = _blocks(pix, c, f, cd.itemsize, 2 * BLOCK_BYTES if fused else None, units=n)
        epilogue = _Epilogue(b, act, (f, cols), 0, cd)

        def block(task: tuple[int, int]) -> None:
            i, j0 = task
            yb = y3[i, :, j0 : j0 + cols]  # (F, Pb), row stride P
            _gemm_cols(wg, x3[i, :, j0 : j0 + cols], yb)
            epilogue(yb)

        _run([(i, j0) for i in range(n) for j0 in range(0, pix, cols)], block, macs)
        return

    hb = max(1, _blocks(pix, c, f, cd.itemsize, 2 * BLOCK_BYTES, units=n) // max(1, wi))
    epilogue = _Epilogue(b, act, (f, hb * wi), 0, cd)

    def gathered(task: tuple[int, int]) -> None:
        i, h0 = task
        xs = xi[i, :, h0 : h0 + hb]  # (C, hb, Wi), strided view
        xb = np.asarray(xs, dtype=cd, order="C").reshape(c, -1)  # (C, hb·Wi)
        tb = np.empty((f, xb.shape[1]), cd)  # (F, hb·Wi): this task's working block
        _gemm_cols(wg, xb, tb)
        epilogue(tb)
        yi[i, :, h0 : h0 + hb] = tb.reshape(f, -1, wi)  # (F, hb·Wi) -> (F, hb, Wi)

    _run([(i, h0) for i in range(n) for h0 in range(0, hi, hb)], gathered, macs)
