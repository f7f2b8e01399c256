"""Shared plumbing for the benchmark scripts: thread pinning, timing, checks, environment, JSON.

Only the standard library is imported at module level, so a script can import this module,
pin the thread counts, and only then import NumPy and torch (their BLAS/OpenMP runtimes read
the environment once, when they load).

Timing protocol (STYLE.md item 11), shared by every script here:

* each *sample* is ``k`` back-to-back calls timed with one pair of ``time.perf_counter``
  reads, ``k`` chosen so that a sample lasts about ``target_s``; one untimed call precedes it;
* samples of the implementations are taken round-robin, ``repeats`` rounds, and we report the
  median and the quartiles over rounds;
* page faults are ``ru_minflt`` (getrusage, whole process) over the timed calls, per call.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def pin_threads_from_argv(argv: Sequence[str], default: int = 2) -> int:
    """Read ``--threads N`` from argv and export it to the BLAS/OpenMP runtimes.

    Must run before NumPy or torch is imported. argparse parses the same flag later, for
    ``--help`` and validation; this only looks ahead.
    """
    n = default
    for i, a in enumerate(argv):
        if a == "--threads" and i + 1 < len(argv):
            n = int(argv[i + 1])
        elif a.startswith("--threads="):
            n = int(a.split("=", 1)[1])
    for var in THREAD_VARS:
        os.environ[var] = str(n)
    return n


def limit_threads(n: int) -> str:
    """Also pin through threadpoolctl when it is importable; returns how the BLAS was pinned."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return "env " + " ".join(f"{v}={os.environ.get(v)}" for v in THREAD_VARS)
    threadpool_limits(n)
    return f"threadpoolctl({n}) + env"


# ------------------------------------------------------------------------------ environment
def _cpu_model() -> dict[str, Any]:
    info: dict[str, Any] = {"logical_cpus": os.cpu_count()}
    try:
        with open("/proc/cpuinfo") as fh:
            text = fh.read()
    except OSError:
        return info
    for line in text.splitlines():
        key, _, val = line.partition(":")
        key, val = key.strip(), val.strip()
        if key in ("model name", "cpu family", "model", "stepping") and key not in info:
            info[key] = val
        if key == "flags" and "avx" not in info:
            flags = set(val.split())
            info["avx"] = sorted(f for f in flags if f.startswith(("avx", "fma")))
    return info


def _openblas_info() -> dict[str, Any]:
    """OpenBLAS build, kernel and live thread count, read through ctypes (best effort)."""
    import ctypes
    import glob

    import numpy as np

    libs = glob.glob(os.path.join(os.path.dirname(np.__file__) + ".libs", "*openblas*"))
    out: dict[str, Any] = {}
    for path in libs:
        lib = ctypes.CDLL(path)
        for prefix in ("scipy_openblas_", "openblas_"):
            for suffix in ("64_", ""):
                try:
                    cfg = getattr(lib, f"{prefix}get_config{suffix}")
                    core = getattr(lib, f"{prefix}get_corename{suffix}")
                    nth = getattr(lib, f"{prefix}get_num_threads{suffix}")
                except AttributeError:
                    continue
                cfg.restype = core.restype = ctypes.c_char_p
                nth.restype = ctypes.c_int
                return {
                    "library": os.path.basename(path),
                    "config": cfg().decode(),
                    "corename": core().decode(),
                    "num_threads": nth(),
                }
    return out


def environment(threads: int, pinned_by: str, torch_mod: Any = None) -> dict[str, Any]:
    """Everything a reader needs to compare this result file with another one."""
    import numpy as np

    import pointwise

    env: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "argv": sys.argv,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "numpy": np.__version__,
        "pointwise": pointwise.__version__,
        "threads": threads,
        "blas_pinned_by": pinned_by,
        "env": {v: os.environ.get(v) for v in (*THREAD_VARS, "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")},
        "openblas": _openblas_info(),
        "cpu": _cpu_model(),
    }
    if torch_mod is not None:
        env["torch"] = torch_mod.__version__
        env["torch_num_threads"] = torch_mod.get_num_threads()
        env["torch_num_interop_threads"] = torch_mod.get_num_interop_threads()
        env["torch_mkldnn"] = bool(torch_mod.backends.mkldnn.is_available())
    return env


def env_slug(env: dict[str, Any]) -> str:
    """A file-name-safe summary of the environment, as timm names its result files."""
    cpu = str(env["cpu"].get("model name", "cpu")).replace(" ", "-").replace("/", "-")
    return f"{cpu}-{env['threads']}t-np{env['numpy']}-{env['date'][:10]}"


def write_json_atomic(path: str, obj: Any, slug: str = "results", stem: str = "bench") -> str:
    """Write ``obj`` as JSON via a temp file and ``os.replace``; a directory gets a named file."""
    if os.path.isdir(path):
        path = os.path.join(path, f"{stem}-{slug}.json")
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(obj, fh, indent=1)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return path


# ------------------------------------------------------------------------- machine load
class Load:
    """CPU used by *other* processes (and stolen by the hypervisor) while a block ran.

    ``foreign`` is the share of the machine's CPUs busy outside this process; ``steal`` the
    share the hypervisor took. Both come from /proc/stat and os.times(); 0 where unavailable.
    """

    def __init__(self) -> None:
        self.t0, self.busy0, self.steal0, self.self0 = self._read()

    @staticmethod
    def _read() -> tuple[float, float, float, float]:
        hz = os.sysconf("SC_CLK_TCK")
        try:
            with open("/proc/stat") as fh:
                f = [int(v) for v in fh.readline().split()[1:]]
        except (OSError, ValueError):
            f = [0] * 8
        busy = (f[0] + f[1] + f[2] + f[5] + f[6]) / hz  # user nice system irq softirq
        steal = f[7] / hz if len(f) > 7 else 0.0
        t = os.times()
        return time.perf_counter(), busy, steal, t.user + t.system

    def shares(self) -> dict[str, float]:
        t1, busy1, steal1, self1 = self._read()
        cap = max(1e-9, (t1 - self.t0) * (os.cpu_count() or 1))
        foreign = max(0.0, (busy1 - self.busy0) - (self1 - self.self0))
        return {"foreign": foreign / cap, "steal": (steal1 - self.steal0) / cap}


def wait_for_quiet(max_wait_s: float, share: float = 0.1, probe_s: float = 0.5) -> float:
    """Wait (sleeping) until others use < ``share`` of the machine; returns the last share."""
    t0 = time.perf_counter()
    while True:
        load = Load()
        time.sleep(probe_s)
        busy = load.shares()["foreign"]
        if busy < share or time.perf_counter() - t0 > max_wait_s:
            return busy


# ----------------------------------------------------------------------------------- timing
def minflt() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def timed(fn: Callable[[], object], k: int) -> tuple[float, int]:
    """One sample: an untimed call, then ``k`` timed calls. Returns (s per call, faults)."""
    fn()
    f0 = minflt()
    t0 = time.perf_counter()
    for _ in range(k):
        fn()
    t1 = time.perf_counter()
    return (t1 - t0) / k, minflt() - f0


def busy(fn: Callable[[], object], seconds: float) -> tuple[float, int]:
    """Call ``fn`` for at least ``seconds`` (at least once); returns (s per call, calls)."""
    calls = 0
    t0 = time.perf_counter()
    while True:
        fn()
        calls += 1
        t = time.perf_counter() - t0
        if t >= seconds:
            return t / calls, calls


def calls_per_sample(per_call_s: float, target_s: float, cap: int = 100_000) -> int:
    return max(1, min(cap, round(target_s / max(per_call_s, 1e-9))))


def summary(samples: Sequence[float]) -> dict[str, float]:
    """Median and spread of per-call times (seconds in, milliseconds out)."""
    ms = sorted(s * 1e3 for s in samples)
    if len(ms) >= 4:
        q1, _, q3 = statistics.quantiles(ms, n=4)
    else:
        q1, q3 = ms[0], ms[-1]
    med = statistics.median(ms)
    return {
        "median_ms": med,
        "q1_ms": q1,
        "q3_ms": q3,
        "min_ms": ms[0],
        "max_ms": ms[-1],
        "iqr_rel": (q3 - q1) / med if med else 0.0,
    }


def paired_ratio(num: Sequence[float], den: Sequence[float]) -> float:
    """Median over rounds of num[i] / den[i]: samples of one round ran side by side."""
    return statistics.median(a / b for a, b in zip(num, den, strict=True))


# ---------------------------------------------------------------------------------- checks
def rel_err(y: Any, ref: Any) -> float:
    """max |y − ref| / max |ref|, in float64 (0 when ref is all zeros and y equals it)."""
    import numpy as np

    y64 = np.asarray(y, dtype=np.float64)
    if y64.shape != ref.shape:
        return float("inf")
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    err = float(np.max(np.abs(y64 - ref))) if ref.size else 0.0
    if not np.isfinite(err):
        return float("inf")
    return err / scale if scale > 0 else err
