"""pointwise.conv1x1 against every importable peer on the 1×1 shapes: ``pointwise bench``.

A thin wrapper: the harness (roofs, peers, verification, interleaved timing, tables, JSON,
PNG) lives in :mod:`pointwise.bench`, shared with the command line. The thread count is
exported before NumPy and torch load, then pinned again in-process.

    .venv/bin/python benchmarks/bench_conv.py                    # the full ops suite
    .venv/bin/python benchmarks/bench_conv.py --quick            # a smoke run, seconds
    .venv/bin/python benchmarks/bench_conv.py --shapes resnet50 --json results/ --png r.png
    .venv/bin/python benchmarks/bench_conv.py --suite models
"""

from __future__ import annotations

import os
import sys


def _threads(argv: list[str]) -> str | None:
    """--threads T as given (the command line checks it), or None: torch's default."""
    for i, a in enumerate(argv):
        if a == "--threads" and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--threads="):
            return a.split("=", 1)[1]
    return None


if __name__ == "__main__":
    n = _threads(sys.argv[1:])
    if n is not None and n.isdigit() and int(n) >= 1:
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = n  # before NumPy and torch load their runtimes

    from pointwise.cli import bench as bench_cli

    sys.exit(bench_cli.main(["bench", *sys.argv[1:]]))
