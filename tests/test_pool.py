"""The kernels' thread pool where users put it: one CPU, a narrower affinity mask than the
machine, a forked child, several Python threads, beside NumPy's OpenBLAS and torch's team.

Each situation runs in a fresh process with a timeout (a hang fails the test instead of
stalling the suite), and every result is compared with a float64 reference. The pool is
asked for more threads than there are CPUs, so that it is the pool (not OpenBLAS's count)
that must keep to the CPUs it may use.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import pointwise as pw
from forked import answer_from_forked_child
from pointwise.kernels import blas, native

try:
    from pointwise.kernels import _kernel as KERNEL
except ImportError:  # not built: no C compiler when the package was installed
    KERNEL = None

pytestmark = [
    pytest.mark.skipif(KERNEL is None or native.ISA is None, reason="compiled kernels not in use"),
    pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs CPU affinity (Linux)"),
]

CPUS = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [0]

# Run in a child: the pool on rows and cols jobs of 2^21+ multiply-adds (above the
# kernels' PARALLEL_MIN_MACS), asked for 4 threads; prints what the test checks, as JSON.
CHILD = r"""
import json, os, sys, threading
import numpy as np
if "--torch" in sys.argv:
    import torch
    torch.set_num_threads(2)
from pointwise.kernels import _kernel, native

def cpu_of(tid):
    with open(f"/proc/self/task/{tid}/stat") as f:
        s = f.read()
    return int(s[s.rindex(")") + 2:].split()[36])

def allowed(tid):
    with open(f"/proc/self/task/{tid}/status") as f:
        line = next(ln for ln in f if ln.startswith("Cpus_allowed_list"))
    out = set()
    for part in line.split()[-1].split(","):
        lo, _, hi = part.partition("-")
        out.update(range(int(lo), int(hi or lo) + 1))
    return sorted(out)

before = set(os.listdir("/proc/self/task"))
rng = np.random.default_rng(0)
x = rng.standard_normal((3000, 96), dtype=np.float32)       # (M, C)
w = rng.standard_normal((96, 80), dtype=np.float32)         # (C, F)
b = rng.standard_normal(80, dtype=np.float32)
xc = rng.standard_normal((4, 96, 700), dtype=np.float32)    # (N, C, P)
ref_rows = np.maximum(x.astype(np.float64) @ w + b, 0)      # (M, C) @ (C, F) -> (M, F)
ref_cols = np.maximum(np.einsum("fc,ncp->nfp", w.T.astype(np.float64), xc) + b[:, None], 0)
team = "--team" in sys.argv and native.on_host_team()
err, stable = 0.0, None
me = threading.get_native_id()
for i in range(20):
    y = np.empty((3000, 80), np.float32)
    yc = np.empty((4, 80, 700), np.float32)
    start = cpu_of(me)
    assert _kernel.rows(4, x, w, y, b, 1, None, team)
    assert _kernel.cols(4, np.ascontiguousarray(w.T), xc, yc, b, 1, team)
    stable = start if cpu_of(me) == start else None  # the last call began and ended here
    err = max(err, float(np.abs(y - ref_rows).max()), float(np.abs(yc - ref_cols).max()))
new = sorted(set(os.listdir("/proc/self/task")) - before)
workers = [allowed(t) for t in new]
a = rng.standard_normal((300, 400))
m_err = float(np.abs(a @ a.T - np.einsum("ij,kj->ik", a, a)).max())
print(json.dumps({"err": err, "matmul_err": m_err, "caller": sorted(os.sched_getaffinity(0)),
                  "workers": workers, "caller_cpu": stable, "team": team}))
"""


def run_child(cpus: list[int], *args: str, timeout: float = 90) -> dict:
    """CHILD's answer from a fresh process restricted to ``cpus``; fails on a hang."""
    out = subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True, text=True,
                         timeout=timeout, preexec_fn=lambda: os.sched_setaffinity(0, cpus))
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.splitlines()[-1])


def check_exact(d: dict) -> None:
    # float32 sums of 96 unit-variance products: |error| stays well under 1e-3
    assert d["err"] < 1e-3, d
    assert d["matmul_err"] < 1e-9, d


def test_one_cpu_runs_every_part_on_the_caller():
    d = run_child(CPUS[:1])
    check_exact(d)
    assert d["workers"] == [], "a process with one CPU started pool threads"


@pytest.mark.skipif(len(CPUS) < 2, reason="needs two CPUs")
def test_workers_take_cpus_of_the_allowed_set_never_the_callers():
    # A mask narrower than the machine where it has 3+ CPUs; all of a 2-CPU machine else.
    mask = CPUS[:-1] if len(CPUS) >= 3 else CPUS
    d = run_child(mask)
    check_exact(d)
    pinned = [w for w in d["workers"] if len(w) == 1]
    assert 1 <= len(pinned) <= len(mask) - 1, d  # 4 threads asked, at most |mask| used
    assert all(set(w) <= set(mask) for w in d["workers"]), d
    assert len({w[0] for w in pinned}) == len(pinned), "two workers share one CPU"
    # after a call that began and ended on one CPU, no worker is bound to that CPU
    assert all(w[0] != d["caller_cpu"] for w in pinned), d


@pytest.mark.skipif(len(CPUS) < 2, reason="needs two CPUs")
def test_a_mask_narrowed_while_the_pool_runs_is_kept():
    code = CHILD.replace("before = set(", "import pointwise\nbefore = set(") + r"""
one = {sorted(os.sched_getaffinity(0))[-1]}
os.sched_setaffinity(0, one)       # the caller moves: the next call reads its mask again
y = np.empty((3000, 80), np.float32)
assert _kernel.rows(4, x, w, y, b, 1)
assert float(np.abs(y - ref_rows).max()) < 1e-3
print("narrowed ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=90)
    assert out.returncode == 0 and "narrowed ok" in out.stdout, out.stderr[-2000:]
