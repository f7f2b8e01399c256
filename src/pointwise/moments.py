"""Running mean and covariance of channel vectors, in float64, in one pass on every core.

:class:`ChannelMoments` is what :func:`pointwise.fit_reduction` and
:func:`pointwise.nn.compress` accumulate: the count, mean and scatter of the pixel vectors of
arrays or batches, however many, in memory of one block per core.

Two paths compute a segment's scatter about its shift, ``(X − s)ᵀ (X − s)``. Where the
compiled kernels run (:mod:`pointwise.kernels.native`) and the data is float32 or float64,
``csrc/moments.c`` computes only its lower triangle (half a GEMM's FLOPs), converting each
block of rows to float64 once as it packs it. Elsewhere (``POINTWISE_NATIVE=0``, integer or
half data, no kernels) NumPy copies each block into a float64 buffer, less the shift, and
``np.matmul(b.T, b)`` (which OpenBLAS runs as a SYRK, also one triangle) takes its product.
Both sum the same float64 products; they differ by rounding only.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import numpy as np

from pointwise.kernels import native
from pointwise.kernels.blas import parallel_rows

__all__ = ["ChannelMoments"]

# One core's float64 block: BLOCK_BYTES, clamped to MIN_ROWS..MAX_ROWS pixel vectors. On the
# README's 2-core Zen 4 (`benchmarks/bench_reduction.py --blocks`: 256 MiB of float32, the
# covariance's GFLOP/s for blocks of 0.25 … 8 MiB), C = 128 was best at 1–2 MiB (73 and 71;
# 4 MiB 67, 0.25 MiB 52), C = 512 at 4–8 MiB, i.e. 1024–2048 rows (105, 112; 1 MiB 85), and
# C = 32 flat (27–32) up to 4 MiB: 1 MiB but at least 1024 rows suits all three.
BLOCK_BYTES = 1 << 20
MIN_ROWS = 1024
MAX_ROWS = 8192
# The kernel's block: rows packed into float64 panels at a time, KERNEL_BLOCK_BYTES of them
# (C rounded up to 8 channels), clamped to KERNEL_MIN_ROWS..KERNEL_MAX_ROWS. On the README's
# Zen 4 (`benchmarks/bench_reduction.py --blocks`: 256 MiB of float32, GFLOP/s counting
# 2·P·C², medians of 5), C = 128 was flat from 128 KiB to 1 MiB (153–154; 32 KiB 135, 2 MiB
# 138, 8 MiB 129), C = 512 best at 512 KiB (161; 1–2 MiB 156, 128 KiB 138, 8 MiB 118), and
# C = 32 at 32 KiB (117; 256–512 KiB 104–106, 8 MiB 62): 512 KiB suits them.
KERNEL_BLOCK_BYTES = 512 << 10
KERNEL_MIN_ROWS = 128
KERNEL_MAX_ROWS = 8192
# A segment's blocks share one shift (the mean of its first block): the drift of the mean
# within SEGMENT_BLOCKS blocks bounds the cancellation in Σ d dᵀ − n d̄ d̄ᵀ.
SEGMENT_BLOCKS = 16


class ChannelMoments:
    """Running count, mean and scatter ``Σ (x − μ)(x − μ)ᵀ`` of C-channel vectors, in float64.

    :meth:`add` takes (M, C) pixel vectors, shares them among the cores, and merges what each
    core gathered. A core takes a block of its rows in float64, less a shift (the mean of the
    segment's first block); ``(X − s)ᵀ (X − s)`` gives the block's scatter about the shift
    and ``1ᵀ (X − s)`` its sums: in the compiled kernel (one triangle, the whole pass in C,
    one call per :meth:`add`) or, on the NumPy path, a SYRK and a GEMV per block. A
    segment's totals become a mean and a scatter about that mean, and segments and cores are
    merged with Chan, Golub and LeVeque's pairwise update. The shift keeps the cancellation
    in ``Σ d dᵀ − n d̄ d̄ᵀ`` to the drift of the mean within one segment.
    """

    def __init__(self, channels: int) -> None:
        self.channels = channels
        self.count = 0
        self.mean = np.zeros(channels)
        self.scatter = np.zeros((channels, channels))
        self.block_rows = min(MAX_ROWS, max(MIN_ROWS, BLOCK_BYTES // (8 * max(1, channels))))
        padded = -(-max(1, channels) // 8) * 8  # the kernel's panels hold 8 channels each
        self.kernel_rows = min(KERNEL_MAX_ROWS,
                               max(KERNEL_MIN_ROWS, KERNEL_BLOCK_BYTES // (8 * padded)))
        self._buffers: dict[int, np.ndarray] = {}  # thread id -> its (rows, C) block

    @property
    def covariance(self) -> np.ndarray:
        """(C, C): the scatter over the count (ddof 0)."""
        return self.scatter / max(1, self.count)

    @property
    def second_moment(self) -> np.ndarray:
        """(C, C): ``mean(x xᵀ)``, the uncentred covariance."""
        return self.covariance + np.outer(self.mean, self.mean)  # (C, 1)·(1, C)

    def add_images(self, x: np.ndarray, channels_last: bool) -> None:
        """Accumulate every pixel of a 4-D batch, (N, H, W, C) or (N, C, H, W)."""
        if channels_last and x.size and not _is_rows(x):
            self._add_strided(x)
            return
        if not channels_last and x.size:  # the kernel takes all the images in one call
            try:
                images = np.reshape(x, (x.shape[0], x.shape[1], -1), copy=False)  # (N, C, H·W)
            except ValueError:  # H and W not one run: image by image, below
                images = None
            if images is not None and self._add_native(images):
                return
        for rows in _pixel_rows(x, channels_last):
            self.add(rows)

    def _add_strided(self, x: np.ndarray) -> None:
        """A channels-last batch whose pixels are not one (N·H·W, C) view (a crop): the
        kernel takes it whole as N·H runs of W pixels, through the (N, H, C, W) view; a
        copy of one image at a time only where the kernel declines."""
        if self._add_native(x.transpose(0, 1, 3, 2)):  # (N, H, C, W), a view
            return
        for image in x:
            self.add(image.reshape(-1, x.shape[3]))  # (H·W, C): one image, a copy

    def add(self, rows: np.ndarray) -> None:
        """Accumulate the (M, C) pixel vectors ``rows`` (any real dtype, any strides)."""
        if rows.shape[0] == 0 or self._add_native(rows):
            return
        shares: dict[int, ChannelMoments] = {}  # first row -> what that core gathered

        def work(r0: int, r1: int) -> None:
            shares[r0] = self._gather(rows[r0:r1])

        if not parallel_rows(rows.shape[0], work, min_rows=self.block_rows // 2):
            shares[0] = self._gather(rows)
        for r0 in sorted(shares):  # in row order, so the result does not depend on timing
            self.merge_from(shares[r0])

    def _add_native(self, rows: np.ndarray) -> bool:
        """Accumulate the pixel vectors ``rows`` (M, C), or of channels-first images
        (N, C, P), on the compiled kernel (the cores share them there); False, having added
        nothing, where it can't."""
        if not native.ENABLED or rows.dtype not in (np.float32, np.float64):
            return False
        c = self.channels
        mean, scatter = np.empty(c), np.empty((c, c))
        if not native.moments(rows, mean, scatter, self.block_rows * SEGMENT_BLOCKS,
                              self.kernel_rows):
            return False
        with np.errstate(invalid="ignore", over="ignore"):  # NaN: reported by the caller
            self.merge(rows.size // c, mean, scatter)
        return True

    def _gather(self, rows: np.ndarray) -> ChannelMoments:
        buf = self._buffers.get(threading.get_ident())
        if buf is None:
            buf = np.empty((self.block_rows, self.channels))  # (rows, C)
            self._buffers[threading.get_ident()] = buf
        part = ChannelMoments(self.channels)
        with np.errstate(invalid="ignore", over="ignore"):  # NaN and inf are reported once,
            self._gather_into(part, rows, buf)                 # by the caller
        return part

    def _gather_into(self, part: ChannelMoments, rows: np.ndarray, buf: np.ndarray) -> None:
        c, step = self.channels, self.block_rows
        gram, sums, ones = np.empty((c, c)), np.empty(c), np.ones(step)
        for seg in range(0, rows.shape[0], step * SEGMENT_BLOCKS):
            segment = rows[seg:seg + step * SEGMENT_BLOCKS]
            shift = segment[:step].mean(axis=0, dtype=np.float64)  # (C,)
            scatter, total = np.zeros((c, c)), np.zeros(c)
            for start in range(0, segment.shape[0], step):
                block = segment[start:start + step]
                m = block.shape[0]
                b = buf[:m]  # (M, C)
                np.subtract(block, shift, out=b, casting="unsafe")
                np.matmul(b.T, b, out=gram)  # (C, M) @ (M, C)
                np.matmul(ones[:m], b, out=sums)  # (M,) @ (M, C): a GEMV, not a pass of sum()
                scatter += gram
                total += sums
            n = segment.shape[0]
            d = total / n  # (C,): the mean of x − shift
            part.merge(n, shift + d, scatter - n * np.outer(d, d))  # (C, 1)·(1, C)

    def merge(self, count: int, mean: np.ndarray, scatter: np.ndarray) -> None:
        """Merge another set's count, mean and scatter (Chan, Golub and LeVeque, 1979)."""
        if count == 0:
            return
        total = self.count + count
        delta = mean - self.mean  # (C,)
        self.scatter += scatter
        self.scatter += np.outer(delta, delta) * (self.count * count / total)  # (C, C)
        self.mean += delta * (count / total)
        self.count = total

    def merge_from(self, other: ChannelMoments) -> None:
        self.merge(other.count, other.mean, other.scatter)


def _is_rows(x: np.ndarray) -> bool:
    """Whether the pixels of a channels-last batch form one (N·H·W, C) view."""
    try:
        np.reshape(x, (-1, x.shape[3]), copy=False)
    except ValueError:
        return False
    return True


def _pixel_rows(x: np.ndarray, channels_last: bool) -> Iterator[np.ndarray]:
    """(M, C) views of the pixel vectors of a 4-D batch, without copying the batch."""
    if channels_last:  # (N, H, W, C)
        try:
            yield np.reshape(x, (-1, x.shape[3]), copy=False)  # (N·H·W, C)
            return
        except ValueError:  # strided: one image at a time (a copy of at most one image)
            for image in x:
                yield image.reshape(-1, x.shape[3])  # (H·W, C)
    else:  # (N, C, H, W): per image, the transposed (C, H·W) matrix
        for image in x:
            yield image.reshape(x.shape[1], -1).T  # (H·W, C), a transposed view
