"""Figures the README quotes outside the bench suites: the tutorial call (nested lists, int64
and float32 arrays) and `analyze` of ResNet-152 (cold, in a fresh process, and the whole
command). Run under the benchmark lock:

    flock -x /tmp/pw-bench.lock .venv/bin/python benchmarks/readme_figures.py
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

import numpy as np

import pointwise as pw

x = [[[1, 2], [3, 4], [5, 6]], [[7, 8], [9, 10], [11, 12]], [[13, 14], [15, 16], [17, 18]]]
w = [[[[1], [2]]]]
xf, wf = np.array(x, np.float32), np.array(w, np.float32)  # (H, W, C), (1, 1, C, F)
xi, wi = np.array(x), np.array(w)


def per_call(f, n=2000, rounds=7):
    """Median, min and max of ``rounds`` means over ``n`` calls, in microseconds."""
    out = []
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(n):
            f()
        out.append((time.perf_counter() - t) / n * 1e6)
    return statistics.median(out), min(out), max(out)


def main() -> None:
    for name, f in [("lists (README snippet)", lambda: pw.conv1x1(x, w, layout="HWC")),
                    ("int64 arrays", lambda: pw.conv1x1(xi, wi, layout="HWC")),
                    ("float32 arrays", lambda: pw.conv1x1(xf, wf, layout="HWC"))]:
        f()
        med, lo, _ = per_call(f)
        print(f"tutorial call, {name}: median {med:.1f} us (min {lo:.1f})")
    # analyze() cold in a fresh process, and the whole CLI
    code = ("import time; t=time.perf_counter(); import torch, pointwise.models as pm; "
            "from pointwise.analysis import analyze; t1=time.perf_counter(); "
            "m=pm.create('resnet152'); t2=time.perf_counter(); analyze(m,(1,3,224,224)); "
            "t3=time.perf_counter(); print(f'{t1-t:.2f} {t2-t1:.2f} {t3-t2:.2f}')")
    for _ in range(3):
        imp, build, an = subprocess.run([sys.executable, "-c", code], capture_output=True,
                                        text=True, check=True).stdout.split()
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "pointwise", "analyze", "resnet152"],
                       capture_output=True, check=True)
        cli = time.perf_counter() - t
        print(f"resnet152: import {imp} s, create {build} s, analyze() {an} s; "
              f"`pointwise analyze resnet152` {cli:.2f} s end to end")


if __name__ == "__main__":
    main()
