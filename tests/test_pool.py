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


@pytest.mark.skipif(len(CPUS) < 2, reason="needs two CPUs")
def test_torch_team_runs_the_calls_and_is_left_as_found():
    # Its threads may move off the caller's CPU for our region, never stay bound: torch's
    # own ops would then run on one CPU whenever the caller came to that thread's.
    pytest.importorskip("torch")
    d = run_child(CPUS, "--torch", "--team")
    check_exact(d)
    assert d["team"], "torch imported, yet the calls did not go to its OpenMP team"
    assert d["workers"] and all(w == CPUS for w in d["workers"]), d


def test_pool_and_shared_blas_work_in_a_forked_child():
    rng = np.random.default_rng(4)
    x, w = rng.standard_normal((8, 32, 32, 64), dtype=np.float32), rng.standard_normal(
        (64, 64), dtype=np.float32)
    a = rng.standard_normal((400, 300))
    expected, a_ref = pw.conv1x1(x, w), np.einsum("ij,kj->ik", a, a)  # the pool exists now
    a @ a.T  # and OpenBLAS's work has run on it

    def child():
        ok = np.allclose(pw.conv1x1(x, w), expected, rtol=1e-4, atol=1e-3)
        return bool(ok and np.allclose(a @ a.T, a_ref, rtol=1e-12, atol=1e-9))

    assert answer_from_forked_child(child, timeout=60), "the child hung or got a wrong result"


def test_python_threads_mixing_pointwise_and_numpy_all_get_their_own_result():
    # With OpenBLAS's work on the pool, a matmul waits for the pool instead of sharing it.
    rng = np.random.default_rng(5)
    x, w = rng.standard_normal((2, 40, 40, 96), dtype=np.float32), rng.standard_normal(
        (96, 80), dtype=np.float32)
    a = rng.standard_normal((300, 300))
    y_ref = np.einsum("nhwc,cf->nhwf", x.astype(np.float64), w.astype(np.float64))
    a_ref = np.einsum("ij,jk->ik", a, a)
    errors: list[str] = []

    def work(i: int) -> None:
        for _ in range(15):
            if i % 2 and not np.allclose(a @ a, a_ref, rtol=1e-12, atol=1e-9):
                errors.append(f"thread {i}: wrong matmul")
            if not i % 2 and not np.allclose(pw.conv1x1(x, w), y_ref, rtol=1e-4, atol=1e-3):
                errors.append(f"thread {i}: wrong conv")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and not any(t.is_alive() for t in threads), errors


def test_openblas_work_runs_on_the_pool_and_can_be_given_back():
    found = blas.openblas()
    if found is None or not found.callback_setter:
        pytest.skip("no OpenBLAS with a threads callback (>= 0.3.27) in this process")
    rng = np.random.default_rng(6)
    for shape in ((513, 257, 129), (64, 2000, 3)):
        a, c = rng.standard_normal(shape[:2]), rng.standard_normal(shape[1:])
        ref = np.einsum("ij,jk->ik", a, c)
        assert native.share_blas(True)
        np.testing.assert_allclose(a @ c, ref, rtol=1e-12, atol=1e-10)
        np.testing.assert_allclose(a.astype(np.float32) @ c.astype(np.float32), ref,
                                   rtol=1e-3, atol=1e-3)
        assert not native.share_blas(False)
        np.testing.assert_allclose(a @ c, ref, rtol=1e-12, atol=1e-10)
    assert native.share_blas(True)


@pytest.mark.parametrize("value", ["1", "avx-512", "off"])
def test_an_unknown_pointwise_native_value_is_named_with_the_accepted_ones(value):
    env = {**os.environ, "POINTWISE_NATIVE": value}
    out = subprocess.run([sys.executable, "-c", "from pointwise.kernels import native\n"
                          "print(native.ISA)"], capture_output=True, text=True, env=env,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert f"got {value!r}" in out.stderr and "'avx512'" in out.stderr and "'0'" in out.stderr
    assert out.stdout.strip() == str(native.ISA)  # the default, as if unset
