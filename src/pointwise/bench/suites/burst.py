"""The ``burst`` suite: is every call as fast as the steady state, when a user makes it?

A warm loop hides what users meet: the first calls after a pause, and calls that follow
another library's. Two patterns, for a few shapes (N=8, NHWC, bias + ReLU), each run for
pointwise and beside it, the same way, for its peers (NumPy's matmul + bias + ReLU, and
torch's channels_last conv2d + ReLU when torch imports):

* **bursts after idle**: every round, for each implementation in turn, ``IDLE_S`` of sleep
  (every thread pool in the process goes to sleep), then ``CALLS`` calls back to back, each
  timed; the round's figure is their median. A round below ``FLAG`` of the same
  implementation's best round is flagged, and pointwise's round is also divided by NumPy's
  in the same round (``vs_numpy``);
* **interleaved**: every round, ``CALLS`` cycles of one call of each implementation, no
  pauses (the order reverses every round, so each follows each); the round's figure is each
  one's median, divided by its *steady state*: the median of a warm loop of that
  implementation alone, measured after ``IDLE_S`` of idle. A round below ``FLAG`` of the
  steady state is flagged.

Two yardsticks separate the machine's slowness from ours:

* the **machine** row of the bursts (:mod:`burst_machine`): the same call split over threads
  pinned to the CPUs the kernels use, each doing its share on one kernel thread with no
  wake-up or hand-off, run right after pointwise's burst (``ADJACENT_S`` later, once the
  pool's workers have stopped spinning), so that both see the same window of the host. Its
  slow rounds are rounds in which the machine (the host) was slow; no thread design can
  beat them, and pointwise ÷ the machine in the same round says how much of a slow round
  is ours;
* the **cold** steady state of the interleaved pattern: the warm loop's median again, each
  call after a walk of twice the last-level cache. The other libraries' calls evict the
  data the warm steady state kept in cache; the walk takes milliseconds, so the threads
  that run the call have also gone idle, as between a script's calls. ``÷ cold`` shows how
  much of a flagged round a call after any such pause loses too.

Every output is verified against a float64 reference before anything is timed. A burst
during which the calling thread waited for a CPU (another process had it) shows that wait.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import pointwise as pw
from pointwise.bench import harness as h
from pointwise.bench import peers
from pointwise.bench.suites.burst_machine import PinnedShares, cpus_for
from pointwise.bench.suites.common import Settings, pick
from pointwise.bench.suites.ops import Shape
from pointwise.kernels import blas, native

__all__ = ["CALLS", "FLAG", "IDLE_S", "MACHINE", "SHAPES", "run", "text"]

#: rounds, (unused) time per sample, warm-up before a steady state (s), tolerance
DEFAULTS = {"repeats": 16, "target_ms": 0.0, "warm_s": 0.2, "rtol": 1e-4}
#: the issue's shapes: one compute-bound of each width, one memory-bound
SHAPES = [Shape("googlenet3a", 8, 28, 192, 64), Shape("resnet50", 8, 14, 1024, 256),
          Shape("mobilenetv2", 8, 56, 24, 144)]
CALLS = 15  # calls per burst, and cycles per interleaved round
IDLE_S = 0.3  # longer than OpenBLAS's ~0.1 s of spinning after a call
FLAG = 0.9  # a round below this share of the best round (or of the steady state) is flagged
MACHINE = "machine (pinned shares)"  # the bursts' yardstick row (burst_machine)
#: the gap between pointwise's burst and the machine's: longer than the pool's workers spin
#: after a call (200 us), far shorter than the host's slow windows (tens of ms)
ADJACENT_S = 0.002
Bursts = dict[str, Callable[[int], list[float]]]  # name -> burst(calls) -> call times


def _last_level_cache() -> int:
    """Bytes of the largest CPU cache Linux reports, or 32 MiB where it reports none."""
    best = 0
    for k in range(8):
        try:
            with open(f"/sys/devices/system/cpu/cpu0/cache/index{k}/size") as fh:
                v = fh.read().strip()
        except OSError:
            break
        scale = {"K": 1 << 10, "M": 1 << 20}.get(v[-1:], 1)
        best = max(best, int(v.rstrip("KM")) * scale)
    return best or 32 << 20


def _impls(sh: Shape, rng: np.random.Generator) -> tuple[list[h.Impl], Bursts]:
    """pointwise, NumPy, torch (if it imports) and the machine's yardstick (where it can
    run) on one (N, H, W, C) problem, NHWC; and the implementations whose bursts are not
    timed calls of ``fn`` (the yardstick's), by name."""
    special: Bursts = {}
    x = rng.standard_normal((sh.n, sh.h, sh.h, sh.c), dtype=np.float32)  # (N, H, W, C)
    w = rng.standard_normal((sh.c, sh.f), dtype=np.float32)  # (C, F)
    w *= np.float32(1 / np.sqrt(sh.c))  # |y| ~ 1 for every C
    b = rng.standard_normal(sh.f, dtype=np.float32)  # (F,)
    m = sh.n * sh.h * sh.h
    x2 = x.reshape(m, sh.c)  # (M, C), a view
    # (M, C) @ (C, F) -> (M, F), then bias and ReLU, in float64
    ref = np.maximum(x2.astype(np.float64) @ w.astype(np.float64) + b, 0.0)
    y = np.empty((sh.n, sh.h, sh.h, sh.f), np.float32)
    yn = np.empty((m, sh.f), np.float32)  # (M, F)

    def numpy_call() -> np.ndarray:
        np.matmul(x2, w, out=yn)  # (M, C) @ (C, F) -> (M, F)
        np.add(yn, b, out=yn)
        return np.maximum(yn, 0, out=yn)

    check = (lambda out: h.rel_err(np.asarray(out).reshape(m, sh.f), ref))  # noqa: E731
    impls = [
        h.Impl("pointwise", "pointwise", "NHWC", "pointwise",
               lambda: pw.conv1x1(x, w, b, activation="relu", out=y), check),
        h.Impl("numpy matmul", "numpy", "NHWC", "openblas", numpy_call, check),
    ]
    cpus = cpus_for(blas.wanted())
    if native.ENABLED and len(cpus) >= 2:  # the yardstick: the kernels on, two CPUs to pin
        machine = PinnedShares(x2, w, np.empty((m, sh.f), np.float32), b, "relu", cpus)
        impls.append(h.Impl(MACHINE, "machine", "NHWC", "machine", machine.call, check))
        special[MACHINE] = machine.burst
    torch = peers.module("torch")
    if torch is not None:
        fn = torch.nn.functional
        tx = torch.from_numpy(x).permute(0, 3, 1, 2)  # (N, C, H, W) view, channels_last
        tw = torch.from_numpy(np.ascontiguousarray(w.T)).reshape(sh.f, sh.c, 1, 1)  # (F, C, 1, 1)
        tb = torch.from_numpy(b)
        impls.append(h.Impl(
            "torch channels_last", "torch", "NHWC", "torch",
            lambda: torch.relu_(fn.conv2d(tx, tw, tb)),
            lambda out: h.rel_err(out.permute(0, 2, 3, 1).numpy().reshape(m, sh.f), ref)))
    return impls, special


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _waited() -> float:
    """Seconds the calling thread has spent runnable but waiting for a CPU (Linux), or 0."""
    try:
        with open("/proc/thread-self/schedstat") as fh:
            return int(fh.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


def _bursts(impls: list[h.Impl], rounds: int, idle_s: float,
            special: Bursts) -> tuple[dict[str, list[list[float]]], dict[str, list[float]]]:
    """Per implementation, per round: the CALLS call times of a burst after idle_s, and the
    time the calling thread waited for a CPU meanwhile (another process had it). The
    machine's burst follows pointwise's ADJACENT_S later instead of after its own idle."""
    out: dict[str, list[list[float]]] = {im.name: [] for im in impls}
    waits: dict[str, list[float]] = {im.name: [] for im in impls}
    machine = next((im for im in impls if im.name == MACHINE), None)
    if not any(im.library == "pointwise" for im in impls):
        machine = None  # nothing to follow: the machine's burst gets its own idle
    alone = [im for im in impls if im is not machine]

    def one(im: h.Impl) -> None:
        w0 = _waited()
        burst = special.get(im.name)
        out[im.name].append(burst(CALLS) if burst is not None
                            else [_timed(im.fn) for _ in range(CALLS)])
        waits[im.name].append(_waited() - w0)

    for r in range(rounds):
        for im in alone if r % 2 == 0 else alone[::-1]:
            time.sleep(idle_s)
            one(im)
            if machine is not None and im.library == "pointwise":
                time.sleep(ADJACENT_S)
                one(machine)
    return out, waits


def _steady(im: h.Impl, idle_s: float, warm_s: float) -> float:
    """Median call time of im in a warm loop alone, after idle_s of idle."""
    time.sleep(idle_s)
    h.busy(im.fn, warm_s)
    return statistics.median(_timed(im.fn) for _ in range(2 * CALLS))


def _steady_cold(im: h.Impl, walk: np.ndarray) -> float:
    """Median call time of im when each call follows a read of ``walk`` (twice the last-level
    cache): the steady state of a call whose data other work has evicted."""
    times = []
    for _ in range(2 * CALLS):
        walk.sum()  # reads every line of walk: evicts the previous call's data
        times.append(_timed(im.fn))
    return statistics.median(times)


def _interleaved(impls: list[h.Impl], rounds: int) -> dict[str, list[list[float]]]:
    """Per implementation, per round: the times of its CALLS calls, each after the others'."""
    out: dict[str, list[list[float]]] = {im.name: [] for im in impls}
    for r in range(rounds):
        order = impls if r % 2 == 0 else impls[::-1]
        times: dict[str, list[float]] = {im.name: [] for im in impls}
        for _ in range(CALLS):
            for im in order:
                times[im.name].append(_timed(im.fn))
        for name, ts in times.items():
            out[name].append(ts)
    return out


def run(st: Settings, roofs: dict[str, Any], say: Callable[[str], None], *,
        shapes: str | None = None, **_: Any) -> list[dict[str, Any]]:
    """Both patterns for the shapes named by ``shapes`` (substrings; the three by default)."""
    picked = pick(shapes, SHAPES) if shapes else SHAPES
    if st.quick:
        picked = picked[:1]
    idle_s = IDLE_S / 2 if st.quick else IDLE_S
    walk = np.ones(2 * _last_level_cache() // 8)  # float64: twice the last-level cache
    rng = np.random.default_rng(0)
    rows: list[dict[str, Any]] = []
    for sh in picked:
        impls, special = _impls(sh, rng)
        for note in h.verify(impls, st.rtol):
            say(f"{sh.name}: {note}")
        live = [im for im in impls if im.ok]
        users = [im for im in live if im.name not in special]  # the interleaved pattern's
        flops = sh.cost(bias=True).flops
        base = {"suite": "burst", "shape": sh.name, "flops": flops}
        say(f"{sh.name}: bursts after {idle_s:g} s idle")
        bursts, waits = _bursts(live, st.repeats, idle_s, special)
        say(f"{sh.name}: interleaved, no pauses")
        steady = {im.name: _steady(im, idle_s, st.warm_s) for im in users}
        cold = {im.name: _steady_cold(im, walk) for im in users}
        mixed = _interleaved(users, st.repeats)
        by_mode: dict[str, list[dict[str, Any]]] = {"bursts": [], "interleaved": []}
        for im in impls:
            row = {**base, "impl": im.name, "library": im.library, "layout": im.layout,
                   "verified": im.ok, "rel_err": im.err}
            if not im.ok:
                for m in by_mode if im.name not in special else ["bursts"]:
                    by_mode[m].append({**row, "mode": m, "problem": f"{sh.name} | {m}",
                                       "error": im.error})
                continue
            g = [flops / statistics.median(ts) / 1e9 for ts in bursts[im.name]]
            best = max(g)
            burst = {**row, "mode": "bursts", "problem": f"{sh.name} | bursts", "idle_s": idle_s,
                     "rounds_gflops": g, "first_gflops": [flops / ts[0] / 1e9
                                                          for ts in bursts[im.name]],
                     "best_gflops": best, "waited_ms": [1e3 * v for v in waits[im.name]],
                     "flagged": [i for i, v in enumerate(g) if v < FLAG * best]}
            if im.library == "pointwise":
                for peer, key in (("numpy matmul", "vs_numpy"), (MACHINE, "vs_machine")):
                    if bursts.get(peer):
                        burst[key] = [statistics.median(p) / statistics.median(ts) for p, ts
                                      in zip(bursts[peer], bursts[im.name], strict=True)]
            by_mode["bursts"].append(burst)
            if im.name in special:
                continue
            s = flops / steady[im.name] / 1e9
            ratios = [steady[im.name] / statistics.median(ts) for ts in mixed[im.name]]
            by_mode["interleaved"].append({
                **row, "mode": "interleaved", "problem": f"{sh.name} | interleaved",
                "steady_gflops": s, "rounds_gflops": [s * v for v in ratios],
                "vs_steady": ratios, "flagged": [i for i, v in enumerate(ratios) if v < FLAG],
                "cold_gflops": flops / cold[im.name] / 1e9,
                "vs_cold": [cold[im.name] / statistics.median(ts) for ts in mixed[im.name]]})
        rows += by_mode["bursts"] + by_mode["interleaved"]
        say(f"done {sh.name}")
    return rows


def _round_cells(values: list[float], flagged: list[int], fmt: str) -> str:
    return " ".join(format(v, fmt) + ("!" if i in flagged else " ")
                    for i, v in enumerate(values))


def text(rows: list[dict[str, Any]]) -> str:
    """Per shape and pattern, one line per implementation: every round, '!' after a flagged
    one, and the count of flagged rounds."""
    idle = next((r["idle_s"] for r in rows if "idle_s" in r), IDLE_S)
    out = [f"per round (bursts: GFLOP/s, the median of {CALLS} calls after {idle:g} s idle; "
           f"interleaved: the median of {CALLS} calls, each right after the others', over "
           f"the steady state); '!' = below {FLAG:g}x the best round or the steady state"]
    problem = None
    for r in rows:
        if r["problem"] != problem:
            problem = r["problem"]
            out.append(f"\n{problem}   ({r['flops'] / 1e6:.4g} MFLOP, N=8, NHWC, bias+ReLU)")
        name = f"  {r['impl']:<20}"
        if not r["verified"]:
            out.append(f"{name} FAILED ({r.get('error', '')[:70]})")
            continue
        n, k = len(r["rounds_gflops"]), len(r["flagged"])
        if r["mode"] == "bursts":
            out.append(f"{name} best {r['best_gflops']:5.0f}  flagged {k}/{n}  rounds: "
                       + _round_cells(r["rounds_gflops"], r["flagged"], "4.0f"))
            if any(v >= 1 for v in r.get("waited_ms", [])):
                out.append(f"  {'':<20} waited for a CPU (ms; another process had it): "
                           + _round_cells(r["waited_ms"], [], "4.1f"))
            firsts = r["first_gflops"]
            out.append(f"  {'':<20} first call of each burst: median "
                       f"{statistics.median(firsts):.0f}, min {min(firsts):.0f}")
            for key, peer in (("vs_numpy", "numpy"), ("vs_machine", "the machine")):
                if key in r:
                    where = ", timed right after" if key == "vs_machine" else " in the same round"
                    out.append(f"  {'':<20} ÷ {peer}{where}: "
                               + _round_cells(r[key], [], "4.2f")
                               + f"  (min {min(r[key]):.2f})")
        else:
            out.append(f"{name} steady {r['steady_gflops']:5.0f}  flagged {k}/{n}  "
                       "÷ steady: " + _round_cells(r["vs_steady"], r["flagged"], "4.2f"))
            if "vs_cold" in r:
                out.append(f"  {'':<20} cold   {r['cold_gflops']:5.0f}  ÷ cold steady: "
                           + _round_cells(r["vs_cold"], [], "4.2f"))
    return "\n".join(out)
