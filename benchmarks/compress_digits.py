"""Train the small digits models, compress their 1×1 convs at several energies, tabulate.

Each step is the command line itself in a fresh process, as a user would run it:
``pointwise train MODEL --data digits --seed S --out DIR --quiet`` (default settings), then
``pointwise compress DIR/checkpoint.pt --energy E --json -`` for every energy. The table
gives, per model, seed and energy, the 1×1 convs' MACs per image before and after, the
share saved, and the held-out accuracy before and after (450 test images of digits).

``--asymmetric`` compresses each again with ``--asymmetric`` (the same k, each pair
refitted to the inputs the compressed model gives it) and adds its accuracy to the row.
``--per-layer`` adds, per model and seed, the bound on those savings: for every 1×1 layer, C
and F, the largest k whose C→k→F pair saves MACs (``C·k + k·F < C·F``: k < C·F/(C + F)),
the share of the response variance kept at that k, and the k each energy asks for, all
from the spectrum of the layer's responses that ``compress --json`` reports; then the 1×1
MACs each energy saves (every layer replaced where its k saves) and the highest energy, to
0.001, at which they reach 30%.

    python benchmarks/compress_digits.py                         # both models, seed 0
    python benchmarks/compress_digits.py --seeds 0 1 2 --json results.json
    python benchmarks/compress_digits.py --per-layer             # the bound, layer by layer
    python benchmarks/compress_digits.py --asymmetric            # and the asymmetric fit
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from dataclasses import fields
from pathlib import Path
from typing import Any

from pointwise.nn.report import LayerCompression

ENERGIES = (0.9, 0.95, 0.99, 0.999)
TARGET = 0.30  # the share of the 1×1 MACs the target asks to save


def pointwise(*argv: str) -> str:
    cmd = [sys.executable, "-m", "pointwise", *argv]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def layers_of(result: dict[str, Any]) -> list[LayerCompression]:
    """The report's layers, rebuilt from ``compress --json``'s ``layers``."""
    names = {f.name for f in fields(LayerCompression)}
    return [LayerCompression(**{k: v for k, v in la.items() if k in names})
            for la in result["layers"]]


def saved_at(layers: list[LayerCompression], energy: float) -> float:
    """The share of the 1×1 MACs that ``energy`` saves, each layer replaced where k saves."""
    before = sum(la.macs_before for la in layers)
    after = sum(la.macs_at(k) if (k := la.rank_at(energy)) <= la.break_even else
                la.macs_before for la in layers)
    return 1 - after / before


def per_layer(model: str, seed: int, layers: list[LayerCompression],
              energies: list[float]) -> list[str]:
    """The bound as markdown: one row per layer, then what each energy saves."""
    head = " | ".join(f"k at {e:g}" for e in energies)
    lines = [f"{model}, seed {seed}:", "",
             f"| layer | C → F | 1×1 MACs | saves if k ≤ | energy kept there | {head} |",
             "|---|---|---|---|---|" + "---|" * len(energies)]
    for la in layers:
        ks = " | ".join(str(la.rank_at(e)) for e in energies)
        lines.append(f"| {la.name} | {la.in_channels} → {la.out_channels} | "
                     f"{la.macs_before:,} | {la.break_even} | "
                     f"{la.energy_at(la.break_even):.4f} | {ks} |")
    grid = [round(0.9 + i / 1000, 3) for i in range(100)]  # 0.900 … 0.999
    reach = [e for e in grid if saved_at(layers, e) >= TARGET]
    lines += ["", "1×1 MACs saved: " + ", ".join(f"{100 * saved_at(layers, e):.1f}% at {e:g}"
                                                  for e in energies),
              f"highest energy saving ≥ {TARGET:.0%}: "
              + (f"{max(reach):.3f}" if reach else "none from 0.900 up"), ""]
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["nin_digits", "resnet_digits"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--energies", nargs="+", type=float, default=list(ENERGIES))
    p.add_argument("--json", metavar="PATH", help="also write the rows here")
    p.add_argument("--asymmetric", action="store_true",
                   help="also compress with --asymmetric (each pair refitted to the "
                   "compressed model's inputs: same k) and give its accuracy beside")
    p.add_argument("--per-layer", action="store_true",
                   help="also tabulate each layer's break-even k and the k of each energy")
    args = p.parse_args()
    rows, bounds = [], []
    more = (" asymmetric: after | Δ points |", "---|---|") if args.asymmetric else ("", "")
    print("| model | seed | energy | 1×1 MACs before → after | saved | accuracy before → after "
          "| Δ points |" + more[0])
    print("|---|---|---|---|---|---|---|" + more[1])
    for model in args.models:
        for seed in args.seeds:
            with tempfile.TemporaryDirectory() as out:
                pointwise("train", model, "--data", "digits", "--seed", str(seed), "--out",
                          out, "--quiet")
                for energy in args.energies:
                    def run(*extra: str, energy: float = energy) -> dict[str, Any]:
                        return json.loads(pointwise(
                            "compress", str(Path(out) / "checkpoint.pt"), "--energy",
                            str(energy), "--json", "-", *extra))

                    r = run()
                    (m0, m1), (a0, a1) = r["macs_1x1"], r["accuracy"]
                    row = {"model": model, "seed": seed, "energy": energy, "macs_1x1": [m0, m1],
                           "saved": 1 - m1 / m0, "accuracy": [a0, a1],
                           "ranks": {la["name"]: la["rank"] for la in r["layers"]},
                           "replaced": [la["name"] for la in r["layers"] if la["replaced"]]}
                    tail = ""
                    if args.asymmetric:
                        ra = run("--asymmetric")
                        assert ra["macs_1x1"] == r["macs_1x1"]  # the same k: only weights change
                        a2 = ra["accuracy"][1]
                        row["accuracy_asymmetric"] = a2
                        tail = f" {100 * a2:.2f}% | {100 * (a2 - a0):+.2f} |"
                    rows.append(row)
                    if args.per_layer and energy == args.energies[0]:  # one spectrum per fit
                        row["layers"] = r["layers"]
                        bounds += per_layer(model, seed, layers_of(r), args.energies)
                    print(f"| {model} | {seed} | {energy:g} | {m0:,} → {m1:,} | "
                          f"{100 * row['saved']:.1f}% | {100 * a0:.2f}% → {100 * a1:.2f}% | "
                          f"{100 * (a1 - a0):+.2f} |{tail}", flush=True)
    if bounds:
        print("", *bounds, sep="\n")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
