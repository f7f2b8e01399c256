"""Timing, interleaving, verification and the environment record of ``pointwise bench``.

Timing protocol (STYLE.md item 11):

* every implementation's output is checked against a float64 reference first; one that
  fails (or raises) is reported as FAILED and never timed;
* each implementation is warmed up, then ``repeats`` rounds are taken; in a round every
  implementation gives one *sample*: one untimed call, then ``k`` calls timed together with
  ``time.perf_counter`` (``k`` chosen so that a sample lasts about ``target_s``);
* implementations are grouped by thread runtime (OpenBLAS, torch, onnxruntime, ...); the
  groups alternate order from round to round, and after each switch the first member runs
  ``settle_s`` seconds untimed, because OpenBLAS workers keep spinning ~0.1 s after a call
  and would slow the next library down; with ``idle_s`` (``pointwise bench --after-idle``)
  the process first sleeps that long, so every library's threads have gone to sleep and
  each group starts as a script's call after a pause does;
* page faults are ``ru_minflt`` over the timed calls, per call; the CPU share other
  processes used while a block ran comes from /proc/stat (``Load``); a problem measured
  while other processes took more than ``BUSY`` of the machine is measured again, up to
  ``RETRIES`` times (none with ``--quick``), and the quietest attempt is kept;
* peak extra memory is measured for the implementations that allocate through NumPy
  (ours and the numpy peer): ``tracemalloc`` sees NumPy's array buffers, so the peak of
  one call above what was allocated before it is every temporary the call made, and the
  result when the call returns a new array. Torch, onnxruntime and JAX allocate outside
  its view, so they get no figure rather than a wrong one.
"""

from __future__ import annotations

import datetime
import os
import platform
import resource
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
BUSY = 0.10  # share of the machine other processes may take before a problem is re-run
RETRIES = 2
NUMPY_RUNTIMES = ("openblas", "pointwise")  # runtimes whose allocations tracemalloc sees


# ----------------------------------------------------------------------------- threads
def pin_threads(n: int) -> str:
    """Pin every thread pool we can reach to ``n`` threads; returns how it was done.

    The environment variables reach runtimes loaded later (and subprocesses); threadpoolctl
    (or OpenBLAS's own setter) reaches the OpenBLAS NumPy already loaded; torch is pinned by
    :func:`pin_torch` when it is imported.
    """
    for var in THREAD_VARS:
        os.environ[var] = str(n)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        from pointwise.kernels import blas as _blas

        blas = _blas.openblas()
        if blas is None:
            return "env only"
        blas.set_threads(n)
        return "openblas_set_num_threads + env"
    threadpool_limits(n)
    return "threadpoolctl + env"


def pin_torch(n: int) -> Any:
    """Import torch, pin its intra-op threads to ``n``; returns the module."""
    import torch

    torch.set_num_threads(n)
    return torch


# ------------------------------------------------------------------------- environment
def _cpu() -> dict[str, Any]:
    info: dict[str, Any] = {"logical_cpus": os.cpu_count(),
                            "usable_cpus": len(os.sched_getaffinity(0))}
    try:
        with open("/proc/cpuinfo") as fh:
            text = fh.read()
    except OSError:
        return info
    for line in text.splitlines():
        key, _, val = line.partition(":")
        key, val = key.strip(), val.strip()
        if key == "model name" and "model" not in info:
            info["model"] = val
        if key == "flags" and "simd" not in info:
            info["simd"] = sorted(f for f in val.split() if f.startswith(("avx", "fma")))
    return info


def _blas_info() -> dict[str, Any]:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return {}
    return {f"{d.get('internal_api')}#{i}": {k: d.get(k) for k in
                                             ("version", "num_threads", "architecture",
                                              "filepath")}
            for i, d in enumerate(threadpool_info())}


def versions(libs: Sequence[str]) -> dict[str, str]:
    """Versions of the libraries already imported (never imports one)."""
    out = {"python": platform.python_version()}
    for name in libs:
        mod = sys.modules.get(name)
        if mod is not None:
            out[name] = str(getattr(mod, "__version__", "?"))
    return out


def environment(threads: int, pinned_by: str) -> dict[str, Any]:
    """Everything a reader needs to compare one result file with another."""
    torch = sys.modules.get("torch")
    env: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "argv": sys.argv,
        "platform": platform.platform(),
        "versions": versions(("pointwise", "numpy", "torch", "onnx", "onnxruntime", "jax",
                              "tensorflow", "matplotlib")),
        "threads": threads,
        "pinned_by": pinned_by,
        "env": {v: os.environ.get(v) for v in THREAD_VARS},
        "blas": _blas_info(),
        "kernels": _kernels(),
        "cpu": _cpu(),
    }
    if torch is not None:
        env["torch_threads"] = torch.get_num_threads()
        env["torch_interop_threads"] = torch.get_num_interop_threads()
    return env


def _kernels() -> str | None:
    """The instruction set of pointwise's compiled float32 kernels, or None where they are
    off (then its float32 rows are NumPy's BLAS)."""
    from pointwise.kernels import native as _native

    return _native.ISA


def env_slug(env: dict[str, Any]) -> str:
    """A file-name-safe summary of the environment (timm names its result files this way)."""
    cpu = "".join(ch if ch.isalnum() else "-" for ch in str(env["cpu"].get("model", "cpu")))
    while "--" in cpu:
        cpu = cpu.replace("--", "-")
    np_v = env["versions"].get("numpy", "?")
    return f"{cpu.strip('-')}-{env['threads']}t-np{np_v}-{env['date'][:10]}"


# ------------------------------------------------------------------------ machine load
class Load:
    """Share of the machine's CPUs that *other* processes used since construction."""

    def __init__(self) -> None:
        self.t0, self.busy0, self.self0 = self._read()

    @staticmethod
    def _read() -> tuple[float, float, float]:
        hz = os.sysconf("SC_CLK_TCK")
        try:
            with open("/proc/stat") as fh:
                f = [int(v) for v in fh.readline().split()[1:]]
        except (OSError, ValueError):
            f = [0] * 8
        busy = (f[0] + f[1] + f[2] + f[5] + f[6]) / hz  # user nice system irq softirq
        t = os.times()
        return time.perf_counter(), busy, t.user + t.system

    def foreign(self) -> float:
        t1, busy1, self1 = self._read()
        cap = max(1e-9, (t1 - self.t0) * (os.cpu_count() or 1))
        return max(0.0, (busy1 - self.busy0) - (self1 - self.self0)) / cap


# ------------------------------------------------------------------------------ timing
def minflt() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def busy(fn: Callable[[], object], seconds: float) -> float:
    """Call ``fn`` for at least ``seconds`` (at least once); returns seconds per call."""
    calls, t0 = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        t = time.perf_counter() - t0
        if t >= seconds:
            return t / calls


def timed(fn: Callable[[], object], k: int) -> tuple[float, int]:
    """One sample: an untimed call, then ``k`` timed calls. Returns (s per call, faults)."""
    fn()
    f0 = minflt()
    t0 = time.perf_counter()
    for _ in range(k):
        fn()
    t1 = time.perf_counter()
    return (t1 - t0) / k, minflt() - f0


def summary(samples: Sequence[float]) -> dict[str, float]:
    """Median, min and max of per-call times (seconds in, milliseconds out)."""
    ms = sorted(s * 1e3 for s in samples)
    return {"median_ms": statistics.median(ms), "min_ms": ms[0], "max_ms": ms[-1]}


def rel_err(y: Any, ref: Any) -> float:
    """max |y − ref| / max |ref| in float64 (inf on a shape mismatch or a non-finite value)."""
    import numpy as np

    y64 = np.asarray(y, dtype=np.float64)
    if y64.shape != ref.shape:
        return float("inf")
    if not ref.size:
        return 0.0
    err = float(np.max(np.abs(y64 - ref)))
    scale = float(np.max(np.abs(ref)))
    if not np.isfinite(err):
        return float("inf")
    return err / scale if scale > 0 else err


# ------------------------------------------------------------------------------ impls
@dataclass
class Impl:
    """One implementation of one problem: a zero-argument call and how to check it.

    ``check(result)`` returns the relative error of ``fn()``'s result against the float64
    reference; ``runtime`` groups implementations that share a thread pool.
    """

    name: str  # e.g. "pointwise", "torch channels_last"
    library: str  # "pointwise" for ours, else the peer's library
    layout: str  # "NHWC" or "NCHW": peers are compared within one layout
    runtime: str  # "openblas", "torch", "onnxruntime", ...
    fn: Callable[[], Any]
    check: Callable[[Any], float]
    ok: bool = False
    err: float = float("nan")
    error: str = ""
    k: int = 1
    samples: list[float] = field(default_factory=list)
    faults: int = 0
    peak_bytes: int | None = None

    @property
    def ours(self) -> bool:
        return self.library == "pointwise"


def verify(impls: Sequence[Impl], rtol: float) -> list[str]:
    """Check every output before any timing; returns one note per failure."""
    notes = []
    for im in impls:
        try:
            im.err = float(im.check(im.fn()))
            im.ok = im.err <= rtol
            if not im.ok:
                im.error = f"max|y-ref|/max|ref| = {im.err:.2e} > {rtol:.0e}"
        except Exception as e:  # a crash is a failure to report, not a reason to stop
            im.ok, im.err, im.error = False, float("inf"), f"{type(e).__name__}: {e}"[:300]
        if not im.ok:
            notes.append(f"{im.name} [{im.layout}]: FAILED ({im.error})")
    return notes


def peak_bytes(fn: Callable[[], object]) -> int:
    """The most NumPy memory one call of ``fn`` held above what was allocated before it
    (temporaries, and a returned result). A first, unmeasured call sets up caches and pools."""
    fn()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        fn()
        return tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()


def peak_memory(impls: Sequence[Impl]) -> None:
    """Set ``peak_bytes`` of each verified NumPy-allocating implementation (:func:`peak_bytes`)."""
    for im in impls:
        if im.ok and im.runtime in NUMPY_RUNTIMES:
            im.peak_bytes = peak_bytes(im.fn)


def measure(impls: Sequence[Impl], repeats: int, target_s: float, warm_s: float,
            settle_s: float, retries: int = RETRIES, idle_s: float = 0.0) -> float:
    """Sample the verified implementations (:func:`sample`); while other processes keep more
    than ``BUSY`` of the machine, sample again, up to ``retries`` times, and keep the quietest
    attempt. Returns that attempt's foreign load."""
    best: tuple[float, list[tuple[list[float], int]]] | None = None
    for _ in range(1 + retries):
        foreign = sample(impls, repeats, target_s, warm_s, settle_s, idle_s)
        if best is None or foreign < best[0]:
            best = (foreign, [(im.samples, im.faults) for im in impls])
        if foreign <= BUSY:
            break
    assert best is not None
    for im, (samples, faults) in zip(impls, best[1], strict=True):
        im.samples, im.faults = samples, faults
    return best[0]


def sample(impls: Sequence[Impl], repeats: int, target_s: float, warm_s: float,
           settle_s: float, idle_s: float = 0.0) -> float:
    """Warm up and sample the verified implementations, interleaved; returns the foreign load.
    ``idle_s`` > 0: sleep that long before each switch of runtime (all pools asleep)."""
    live = [im for im in impls if im.ok]
    load = Load()
    for im in live:
        im.samples, im.faults = [], 0
        per_call = busy(im.fn, warm_s)
        im.k = max(1, min(100_000, round(target_s / max(per_call, 1e-9))))
    runtimes = list(dict.fromkeys(im.runtime for im in live))
    groups = [[im for im in live if im.runtime == rt] for rt in runtimes]
    previous = None
    for r in range(repeats):
        for grp in groups if r % 2 == 0 else groups[::-1]:
            if grp[0].runtime != previous:  # let the other runtime's threads go idle
                if idle_s > 0:
                    time.sleep(idle_s)
                busy(grp[0].fn, settle_s)
                previous = grp[0].runtime
            for im in grp:
                t, flt = timed(im.fn, im.k)
                im.samples.append(t)
                im.faults += flt
    return load.foreign()


def result(im: Impl, flops: int, nbytes: int) -> dict[str, Any]:
    """The JSON record of one implementation: verification, times, rates, faults."""
    d: dict[str, Any] = {"impl": im.name, "library": im.library, "layout": im.layout,
                         "verified": im.ok, "rel_err": im.err}
    if not im.ok:
        d["error"] = im.error
    elif im.samples:
        d.update(summary(im.samples))
        sec = d["median_ms"] / 1e3
        d.update(calls_per_sample=im.k, samples=len(im.samples),
                 gflops=flops / sec / 1e9, gbytes_per_s=nbytes / sec / 1e9,
                 faults_per_call=im.faults / (im.k * len(im.samples)))
    if im.peak_bytes is not None:
        d["peak_extra_mib"] = im.peak_bytes / 2**20
    return d


def add_ratios(rows: list[dict[str, Any]]) -> None:
    """``vs_best_peer`` = best peer's median / this row's median, within (problem, layout).

    > 1 means the row is faster than every peer in its layout; peers are all libraries but
    pointwise. Rows must carry ``problem`` (shape and mode) and ``layout``.
    """
    best: dict[tuple[str, str], float] = {}
    for r in rows:
        if r["library"] != "pointwise" and "median_ms" in r:
            key = (r["problem"], r["layout"])
            best[key] = min(best.get(key, float("inf")), r["median_ms"])
    for r in rows:
        b = best.get((r["problem"], r["layout"]))
        if b is not None and "median_ms" in r:
            r["vs_best_peer"] = b / r["median_ms"]
