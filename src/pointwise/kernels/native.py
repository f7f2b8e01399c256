"""The compiled float32 kernels (``csrc/``): what they take, and the switch that turns
them off.

The kernels compute ``act(A @ B + bias)`` with bias and ReLU/ReLU6 applied to each output
tile in registers, so the output is written once; OpenBLAS's GEMM followed by NumPy's epilogue
writes it, then reads and writes it again. They read the large operand in place (no packing
pass over the activations) and split the work over a small spinning thread pool of their own,
which hands work over in about a microsecond where a sleeping thread needs ~60 µs.

They are built when the package is installed, for x86-64 CPUs, in two instruction sets
(:data:`ISA`): AVX-512 where the CPU has it, else AVX2 with FMA (Zen 3, Haswell and later).
The networks' fused kernels (``convert()``: k×k convs, fused blocks, the head) exist only
here, so an AVX2-only CPU runs them too rather than falling back to torch's kernels.
``POINTWISE_NATIVE=avx2`` asks for AVX2 on an AVX-512 CPU; ``POINTWISE_NATIVE=0`` switches
the kernels off; any other value gets a warning naming the accepted ones (:data:`CHOICES`)
and the default. Where they are off or missing (no compiler at install time, another CPU),
:data:`ENABLED` is False and every call runs on NumPy's BLAS, with the same results to
rounding.

One pool for two libraries: from the first call that uses the pool on, OpenBLAS's threaded
work (NumPy's matmul) runs on the kernels' pool too (:func:`share_blas`), so that a script
mixing the two never has two pools spinning on the same cores.

:func:`rows` and :func:`cols` take only what the kernels address directly: float32 in native
byte order, aligned, non-negative strides with unit stride on the last axis, no zero size,
an output that overlaps no input (by bounds, as ``np.may_share_memory``), and an activation
the kernel fuses. The checks run in C, in well under a microsecond; for anything else the
functions return False, having done nothing, and the caller computes the block its usual way.
"""

from __future__ import annotations

import os
import sys
import warnings
from types import ModuleType

import numpy as np

from pointwise.kernels.blas import openblas, wanted

__all__ = ["CHOICES", "ENABLED", "ISA", "block", "cols", "depthwise", "host_openmp", "moments",
           "on_host_team", "pack_taps", "rows", "share_blas", "taps"]

#: The values of POINTWISE_NATIVE, and what each asks for.
CHOICES = {"": "unset: AVX-512 where the CPU has it, else AVX2", "0": "off: NumPy's BLAS",
           "avx512": "the AVX-512 kernels", "avx2": "the AVX2 kernels"}


def _choice() -> str:
    choice = os.environ.get("POINTWISE_NATIVE", "")
    if choice not in CHOICES:
        accepted = "; ".join(f"{k!r} ({v})" for k, v in CHOICES.items())
        warnings.warn(f"expected POINTWISE_NATIVE to be one of {accepted}, but got {choice!r}; "
                      "using the default (AVX-512 where the CPU has it, else AVX2)", UserWarning,
                      stacklevel=2)
        return ""
    return choice


def _load() -> ModuleType | None:
    choice = _choice()
    if choice == "0":
        return None
    try:
        from pointwise.kernels import _kernel
    except ImportError:  # not built: no C compiler at install time, or another platform
        return None
    if choice in ("avx512", "avx2") and not _kernel.select(choice):
        return None  # asked for an instruction set this CPU lacks: NumPy, not a surprise
    return _kernel if _kernel.isa() is not None else None


_kernel = _load()
ENABLED = _kernel is not None
#: The kernels' instruction set, ``"avx512"`` or ``"avx2"``; None when they are off.
ISA: str | None = None if _kernel is None else _kernel.isa()

#: The activations the kernels fuse, by their code in csrc/pointwise.h.
ACTIVATIONS = {None: 0, "relu": 1, "relu6": 2}

def threads(macs: int) -> int:
    """Threads to offer the kernels for a call of ``macs`` multiply-adds: below their own
    ``PARALLEL_MIN_MACS`` they run on one thread, so the thread count (a call into
    OpenBLAS, a third of a tiny call) is not asked for."""
    if _kernel is None or macs < _kernel.PARALLEL_MIN_MACS:
        return 1
    n = wanted()  # the kernels clamp it to the CPUs this thread may use
    if n > 1 and _shared is None:  # the pool's first call: OpenBLAS's work joins it
        share_blas()
    return n


def rows(x: np.ndarray, w: np.ndarray, y: np.ndarray, b: np.ndarray | None,
         act: str | None, residual: np.ndarray | None = None, team: int = 0) -> bool:
    """``y (M, F) = act(x (M, C) @ w (C, F) + b + residual)`` on the kernels; False if they
    can't.

    ``x`` may also be an (N, Ho, Wo, C) view with any strides (a strided conv's input): its
    pixels, in order, are the M rows, gathered a cache-sized slab at a time. ``residual``,
    (M, F) like ``y``, is added before the activation (ResNet's shortcut). ``team`` > 0 runs
    the call on that many threads of the host's OpenMP team (see :func:`host_openmp`)
    instead of the kernels' own pool.
    """
    code = ACTIVATIONS.get(act, -1)
    if _kernel is None or code < 0:
        return False
    n = team if team > 0 else threads(x.size * w.shape[-1])
    return _kernel.rows(n, x, w, y, b, code, residual, team > 0 or (n > 1 and on_host_team()))


def cols(w: np.ndarray, x: np.ndarray, y: np.ndarray, b: np.ndarray | None,
         act: str | None, team: int = 0) -> bool:
    """``y[n] (F, P) = act(w (F, C) @ x[n] (C, P) + b)`` for every image n on the kernels;
    False if they can't. ``team`` as for :func:`rows`."""
    code = ACTIVATIONS.get(act, -1)
    if _kernel is None or code < 0:
        return False
    n = team if team > 0 else threads(x.size * w.shape[0])
    return _kernel.cols(n, w, x, y, b, code, team > 0 or (n > 1 and on_host_team()))


_shared: bool | None = None


def share_blas(on: bool = True) -> bool:
    """Run OpenBLAS's threaded work (NumPy's matmul and friends) on the kernels' pool
    (``on``), or give it back to OpenBLAS's own threads; True when the pool has it.

    The first call that uses the pool does this by itself. OpenBLAS's workers spin ~0.1 s
    after each call and the pool's for a while after its own: with two pools, a script that
    mixes ``np.matmul`` and pointwise calls ran both at about half speed; with one, both kept
    their speed alone (see ``csrc/openblas.c``). Needs OpenBLAS 0.3.27 or later (its
    ``openblas_set_threads_callback_function``); False otherwise, nothing changed.

    >>> import numpy as np
    >>> a = np.ones((400, 400))
    >>> share_blas(False), float((a @ a)[0, 0])  # OpenBLAS's own threads
    (False, 400.0)
    >>> _ = share_blas(True); float((a @ a)[0, 0])  # on the kernels' threads, where it can
    400.0
    """
    global _shared
    blas = openblas()
    if _kernel is None or blas is None or not blas.callback_setter:
        _shared = False
        return False
    _kernel.share_blas(blas.callback_setter, on)
    _shared = on
    return on


def taps(x: np.ndarray, w: np.ndarray, y: np.ndarray, b: np.ndarray | None, act: str | None,
         residual: np.ndarray | None, geometry: tuple[int, ...], *, packed: bool = False,
         team: int = 0) -> bool:
    """The k×k convolution ``y (M, F) = act(Σ_taps shifted x @ w[tap] + b + residual)`` on
    the kernels; False if they can't.

    ``x`` is an (N, H, W, C) view with any non-negative strides and unit channel stride;
    ``y`` and ``residual`` are (M, F) with M = N·Ho·Wo, rows evenly spaced. ``geometry`` is
    ``(KH, KW, sy, sx, py, px, dy, dx, Ho, Wo)``, with the padding at the top and left (the
    bottom and right follow from Ho and Wo). ``w`` is the (KH, KW, C, F) HWIO weight, packed
    for this call, or with ``packed`` one made by :func:`pack_taps` (the nn path packs once).
    ``team`` as for :func:`rows`.
    """
    code = ACTIVATIONS.get(act, -1)
    if _kernel is None or code < 0:
        return False
    kh, kw = geometry[0], geometry[1]
    n = team if team > 0 else threads(y.size * kh * kw * x.shape[-1])
    return _kernel.taps(n, x, w, y, b, code, residual, geometry, packed,
                        team > 0 or (n > 1 and on_host_team()))


def depthwise(x: np.ndarray, w: np.ndarray, y: np.ndarray, b: np.ndarray | None,
              act: str | None, stride: int, team: int = 0) -> bool:
    """The depthwise 3×3 convolution, padding 1, ``y (M, C) = act(Σ_taps shifted x · w[tap]
    + b)`` channel by channel on the kernels; False if they can't.

    ``x`` is an (N, H, W, C) view with any non-negative strides and unit channel stride,
    ``w`` the (3, 3, C) weight, contiguous, ``y`` (M, C) with M = N·Ho·Wo, rows evenly
    spaced; ``stride`` 1 or 2. ``team`` as for :func:`rows`.
    """
    code = ACTIVATIONS.get(act, -1)
    if _kernel is None or code < 0:
        return False
    n = team if team > 0 else threads(y.size * 9)
    return _kernel.depthwise(n, x, w, y, b, code, stride, team > 0 or (n > 1 and on_host_team()))


def block(x: np.ndarray, we: np.ndarray | None, be: np.ndarray | None, wd: np.ndarray,
          bd: np.ndarray | None, wp: np.ndarray, bp: np.ndarray | None, y: np.ndarray,
          acts: tuple[str | None, str | None, str | None], stride: int, residual: bool, *,
          transposed: bool = False, team: int = 0) -> bool:
    """A fused block, ``y (M, F) = act_p(act_d(dw3x3(act_e(x @ we + be)) + bd) @ wp + bp
    [+ x])``, in one pass over bands of rows on the kernels; False if they can't.

    ``x`` (N, H, W, C) with unit channel stride (each image's rows one run of pixels when
    ``residual``), ``we`` (C, E) or None (no expansion: E = C), ``wd`` (3, 3, E) contiguous,
    ``wp`` (E, F); ``y`` (M, F) with M = N·Ho·Wo, rows evenly spaced; padding 1, ``stride``
    1 or 2; ``acts`` the three activations. ``transposed``: ``we`` (E, C) and ``wp`` (F, E),
    torch's storage of the 1×1 weights, read transposed as they are packed for the call.
    ``team`` as for :func:`rows`.
    """
    codes = tuple(ACTIVATIONS.get(a, -1) for a in acts)
    if _kernel is None or min(codes) < 0:
        return False
    e, f = wd.shape[2], y.shape[1]
    macs = y.shape[0] * (e * f + 9 * e) + (0 if we is None else x.size * e)
    n = team if team > 0 else threads(macs)
    return _kernel.block(n, x, we, be, wd, bd, wp, bp, y, codes, stride, residual, transposed,
                         team > 0 or (n > 1 and on_host_team()))


def moments(x: np.ndarray, mean: np.ndarray, scatter: np.ndarray, segment: int, block: int,
            path: int = -1) -> bool:
    """``mean (C,)`` and ``scatter (C, C) = (x − mean)ᵀ (x − mean)`` of the pixel vectors
    ``x (M, C)``, of channels-first images ``x (N, C, P)`` (their N·P pixels), or of
    ``x (N, H, C, P)`` (N·H runs of P pixels: a channels-last crop, transposed), in
    float64, on the kernels; False if they can't.

    ``x`` is float32 or float64 with any non-negative strides; ``mean`` and ``scatter`` are
    float64 with unit stride along their last axis. Each run of ``segment`` rows is taken
    about one shift (the mean of its first block), ``block`` rows at a time, computing only
    the lower triangle of the scatter, and the runs are merged (``csrc/moments.c``).
    ``path``: -1 the kernels' instruction set, 0 portable C, 1 AVX2, 2 AVX-512 (False where
    the CPU lacks it).
    """
    if _kernel is None:
        return False
    if x.ndim not in (2, 3, 4):
        return False
    c = x.shape[2 if x.ndim == 4 else 1]
    n = threads(x.size * (c + 1) // 2)
    return _kernel.moments(n, x, mean, scatter, segment, block, path,
                           n > 1 and on_host_team())


def pack_taps(w: np.ndarray) -> np.ndarray | None:
    """The (KH, KW, C, F) float32 weight packed for :func:`taps` (``packed=True``), or None
    where the kernels are off. The layout depends on the instruction set in use and on the
    kernel's taps (KH·KW)."""
    if _kernel is None or w.dtype != np.float32:
        return None
    kh, kw, c, f = w.shape
    size = _kernel.taps_packed_size(kh * kw * c, f)
    if size is None:
        return None
    out = np.empty(size, np.float32)
    w2 = np.ascontiguousarray(w).reshape(kh * kw * c, f)  # (K, F), rows in HWIO's (i, j, c)
    return out if _kernel.taps_pack(w2, out, kh * kw) else None


_host_openmp: bool | None = None
#: The libgomp the kernels run on when asked to (see host_openmp), once bound.
OPENMP_PATH: str | None = None


def host_openmp(prefer: str | None = None) -> bool:
    """Whether the kernels can run on the OpenMP team of a libgomp this process has loaded
    (torch's), binding them to it on the first call.

    ``prefer``: a folder whose libgomp is tried first, torch's own (scikit-learn, for one,
    loads another copy, whose team would compete with torch's as our pool does).

    Between torch ops the kernels' own pool and torch's OpenMP team would take turns on the
    same cores, each spinning for a while after its work, so every hand-over runs two busy
    threads per core. On torch's own team the threads that finished the previous layer start
    the next one. False where no libgomp is loaded (torch built with another runtime, another
    OS) or the kernels are off; the caller then keeps to torch's kernels.
    """
    global _host_openmp, OPENMP_PATH
    if _host_openmp is None:
        paths = sorted(_loaded_libgomp(), key=lambda p: not (prefer and p.startswith(prefer)))
        OPENMP_PATH = next((p for p in paths if _kernel is not None and _kernel.openmp(p)), None)
        _host_openmp = OPENMP_PATH is not None
    return _host_openmp


def on_host_team() -> bool:
    """Whether calls run on torch's OpenMP team rather than the kernels' own pool: once torch
    is imported and its libgomp bound (:func:`host_openmp`).

    Torch's team spins after each torch op; the pool would then share the cores with it.
    Interleaved without pauses (pointwise, np.matmul and torch's conv2d, N=8), pointwise
    ran at 0.32-0.98x of its speed alone on its own pool after a torch op, and at
    0.91-0.99x on torch's team, with NumPy's work on that team too (``csrc/openblas.c``).
    A forked child runs on the pool (libgomp does not survive fork).
    """
    if _host_openmp is not None:
        return _host_openmp
    where = getattr(sys.modules.get("torch"), "__file__", None)
    if not where:
        return False
    return host_openmp(os.path.join(os.path.dirname(where), "lib"))


def _loaded_libgomp() -> list[str]:
    """Paths of the libgomp copies mapped into this process (Linux; [] elsewhere)."""
    try:
        with open("/proc/self/maps") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    paths = {ln.split(maxsplit=5)[-1] for ln in lines if "libgomp" in ln}
    return sorted(p for p in paths if p.startswith("/"))
