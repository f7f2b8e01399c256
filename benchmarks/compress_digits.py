"""Train the small digits models, compress their 1×1 convs at several energies, tabulate.

Each step is the command line itself in a fresh process, as a user would run it:
``pointwise train MODEL --data digits --seed S --out DIR --quiet`` (default settings), then
``pointwise compress DIR/checkpoint.pt --energy E --json -`` for every energy. The table
gives, per model, seed and energy, the 1×1 convs' MACs per image before and after, the
share saved, and the held-out accuracy before and after (450 test images of digits).

    python benchmarks/compress_digits.py                         # both models, seed 0
    python benchmarks/compress_digits.py --seeds 0 1 2 --json results.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ENERGIES = (0.9, 0.95, 0.99, 0.999)


def pointwise(*argv: str) -> str:
    cmd = [sys.executable, "-m", "pointwise", *argv]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["nin_digits", "resnet_digits"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--energies", nargs="+", type=float, default=list(ENERGIES))
    p.add_argument("--json", metavar="PATH", help="also write the rows here")
    args = p.parse_args()
    rows = []
    print("| model | seed | energy | 1×1 MACs before → after | saved | accuracy before → after "
          "| Δ points |")
    print("|---|---|---|---|---|---|---|")
    for model in args.models:
        for seed in args.seeds:
            with tempfile.TemporaryDirectory() as out:
                pointwise("train", model, "--data", "digits", "--seed", str(seed), "--out",
                          out, "--quiet")
                for energy in args.energies:
                    r = json.loads(pointwise("compress", str(Path(out) / "checkpoint.pt"),
                                             "--energy", str(energy), "--json", "-"))
                    (m0, m1), (a0, a1) = r["macs_1x1"], r["accuracy"]
                    row = {"model": model, "seed": seed, "energy": energy, "macs_1x1": [m0, m1],
                           "saved": 1 - m1 / m0, "accuracy": [a0, a1],
                           "ranks": {la["name"]: la["rank"] for la in r["layers"]},
                           "replaced": [la["name"] for la in r["layers"] if la["replaced"]]}
                    rows.append(row)
                    print(f"| {model} | {seed} | {energy:g} | {m0:,} → {m1:,} | "
                          f"{100 * row['saved']:.1f}% | {100 * a0:.2f}% → {100 * a1:.2f}% | "
                          f"{100 * (a1 - a0):+.2f} |", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
