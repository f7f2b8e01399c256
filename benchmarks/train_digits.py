"""Train the small models on digits end to end, as a user would, and record accuracy and time.

Each run is the command line itself in a fresh process (``python -m pointwise.cli.train
train MODEL --data digits``, default settings unless given), so the wall time includes
Python and torch start-up, loading digits and writing a checkpoint every epoch. The figures
go in the issue's note; the quality bar is nin_digits ≥ 97% within 120 s on 2 cores.

    python benchmarks/train_digits.py                       # nin_digits, seeds 0 1 2
    python benchmarks/train_digits.py --models nin_digits resnet_digits \\
        mobilenet_digits --seeds 0 --json results.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time

DONE = re.compile(r"done: .* epoch (\d+)/(\d+), ([\d.]+) s; test accuracy ([\d.]+)%")


def run(model: str, seed: int, extra: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "pointwise.cli.train", "train", model, "--data", "digits",
               "--seed", str(seed), "--out", out, "--quiet", *extra]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - t0
    match = DONE.search(proc.stdout)
    if proc.returncode or not match:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}")
    return {"model": model, "seed": seed, "args": extra, "epochs": int(match[2]),
            "train_s": float(match[3]), "wall_s": round(wall, 2),
            "test_accuracy": float(match[4]) / 100}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["nin_digits"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--json", metavar="PATH", help="also write the results here")
    args, extra = p.parse_known_args()  # the rest goes to `train`, e.g. --threads 1
    import torch  # for the environment record only

    rows = []
    for model in args.models:
        for seed in args.seeds:
            row = run(model, seed, extra)
            rows.append(row)
            print(f"{model:45s} seed {seed}  {100 * row['test_accuracy']:6.2f}%  "
                  f"train {row['train_s']:6.1f} s  wall {row['wall_s']:6.1f} s", flush=True)
    env = {"python": platform.python_version(), "torch": torch.__version__,
           "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
           "load_avg_1m": os.getloadavg()[0], "machine": platform.machine()}
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"environment": env, "results": rows}, fh, indent=2)
    print(json.dumps(env))


if __name__ == "__main__":
    main()
