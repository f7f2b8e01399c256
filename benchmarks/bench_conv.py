"""pointwise.conv1x1 against torch's conv2d on the 1×1 convs of ResNet-50, MobileNetV2, GoogLeNet.

For every shape (fp32, N=8 unless noted) eight implementations run on the same data:

* ours: ``pointwise.conv1x1`` NHWC and NCHW, plain and with ``bias`` + ``activation="relu"``
  (fused), each writing into a preallocated ``out=`` buffer;
* torch: ``F.conv2d`` on an NCHW-contiguous input and on a channels_last input, plain and with
  its bias followed by an in-place ``torch.relu_``. torch allocates its output on every call
  (conv2d has no ``out=``); that cost, and its page faults, are part of its numbers.

Before anything is timed, each implementation's output is checked against a float64
reference (``np.einsum`` on the NHWC view); one that is off by more than ``--rtol`` (relative
to max |ref|) prints FAILED instead of a time, and the script exits non-zero.

Timing: warm-up, then ``--repeats`` rounds; in each round every implementation gives one
sample (an untimed call, then k calls timed together with ``time.perf_counter``). The two
libraries run as two groups inside a round, in alternating order, and the first group after a
switch first runs ``--settle`` seconds untimed. Reason (measured on the 2-core dev box):
OpenBLAS's worker threads keep spinning ~0.1 s after a GEMM returns, and a torch call issued
in that window ran about 2× slower (4.0 → 8–11 ms for 28×28 512→128); the settle period lets
the other runtime's threads go idle so that each library is timed as its users see it.

Rows measured while other processes took more than ``--busy`` of the CPUs (from /proc/stat)
are waited for and redone (``--retries``); the bg% column shows what remained.

GFLOP/s = 2·MACs / median time, MACs from ``pointwise.conv_cost`` (bias and ReLU are not
counted as FLOPs). Ratios are speeds: ``torch_ms / ours_ms`` as a median over rounds (the
samples of one round ran side by side), so > 1 means pointwise is faster.

    .venv/bin/python benchmarks/bench_conv.py                     # full run, ~3 min if quiet
    .venv/bin/python benchmarks/bench_conv.py --quick             # a smoke run, seconds
    .venv/bin/python benchmarks/bench_conv.py --shapes resnet50 --json results/
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _harness import pin_threads_from_argv

if __name__ == "__main__":
    pin_threads_from_argv(sys.argv[1:])  # before NumPy and torch load their runtimes

import argparse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import _harness as h
import numpy as np
import torch
import torch.nn.functional as F

import pointwise as pw


@dataclass(frozen=True)
class Shape:
    net: str
    n: int
    h: int
    w: int
    c: int
    f: int
    stride: int = 1

    @property
    def name(self) -> str:
        s = f"{self.net} {self.h}x{self.w} {self.c}->{self.f}"
        s += f" s{self.stride}" if self.stride > 1 else ""
        return s + (f" N={self.n}" if self.n != 8 else "")

    @property
    def target(self) -> bool:
        """The issue's target rows: C, F >= 128."""
        return self.c >= 128 and self.f >= 128

    def cost(self, bias: bool) -> pw.Cost:
        return pw.conv_cost(
            self.c, self.f, 1, input_size=(self.h, self.w), stride=self.stride, bias=bias,
            batch=self.n,
        )


SHAPES = [
    Shape("resnet50", 8, 56, 56, 64, 256),
    Shape("resnet50", 8, 56, 56, 256, 64),
    Shape("resnet50", 8, 28, 28, 512, 128),
    Shape("resnet50", 8, 28, 28, 128, 512),
    Shape("resnet50", 8, 14, 14, 1024, 256),
    Shape("resnet50", 8, 14, 14, 256, 1024),
    Shape("resnet50", 8, 7, 7, 2048, 512),
    Shape("resnet50", 8, 7, 7, 512, 2048),
    Shape("resnet50", 8, 56, 56, 256, 512, stride=2),
    Shape("mobilenetv2", 8, 112, 112, 32, 16),
    Shape("mobilenetv2", 8, 56, 56, 24, 144),
    Shape("mobilenetv2", 8, 56, 56, 144, 24),
    Shape("mobilenetv2", 8, 28, 28, 192, 32),
    Shape("mobilenetv2", 8, 14, 14, 384, 64),
    Shape("mobilenetv2", 8, 7, 7, 960, 320),
    Shape("googlenet3a", 8, 28, 28, 192, 64),
    Shape("googlenet3a", 8, 28, 28, 192, 96),
    Shape("googlenet3a", 8, 28, 28, 192, 16),
    Shape("toy", 1, 3, 3, 2, 1),  # the tutorial's example; reported in µs
]
QUICK = ("resnet50 7x7 2048->512", "mobilenetv2 7x7 960->320", "toy")

# (key, column title, library, layout, fused)
IMPLS = [
    ("pw_nhwc", "NHWC", "pointwise", "NHWC", False),
    ("pw_nhwc_br", "NHWC+br", "pointwise", "NHWC", True),
    ("pw_nchw", "NCHW", "pointwise", "NCHW", False),
    ("pw_nchw_br", "NCHW+br", "pointwise", "NCHW", True),
    ("th_cl", "th CL", "torch", "channels_last", False),
    ("th_cl_br", "th CL+br", "torch", "channels_last", True),
    ("th_nchw", "th NCHW", "torch", "NCHW", False),
    ("th_nchw_br", "thNCHW+br", "torch", "NCHW", True),
]
# (title, numerator = torch, denominator = ours): speed of ours relative to torch
RATIOS = [
    ("NHWC/CL", "th_cl", "pw_nhwc"),
    ("+br", "th_cl_br", "pw_nhwc_br"),
    ("NCHW/NCHW", "th_nchw", "pw_nchw"),
    ("+br ", "th_nchw_br", "pw_nchw_br"),
]
# (title, fused, plain): fused_ms / plain_ms, same library and layout
OVERHEADS = [
    ("ours NHWC", "pw_nhwc_br", "pw_nhwc"),
    ("ours NCHW", "pw_nchw_br", "pw_nchw"),
    ("th CL", "th_cl_br", "th_cl"),
    ("th NCHW", "th_nchw_br", "th_nchw"),
]


@dataclass
class Impl:
    key: str
    library: str
    fused: bool
    fn: Callable[[], Any]
    result: Callable[[Any], np.ndarray]  # fn's return value as an NHWC array
    layout_ok: bool = True  # torch: output in the input's memory format
    ok: bool = True
    err: float = 0.0
    error: str = ""
    k: int = 1
    samples: list[float] = field(default_factory=list)
    faults: int = 0


def build(shape: Shape, rng: np.random.Generator) -> tuple[list[Impl], np.ndarray, np.ndarray]:
    """Inputs, outputs and the eight implementations for one shape; plus the references."""
    s = shape.stride
    x = rng.standard_normal((shape.n, shape.h, shape.w, shape.c), dtype=np.float32)  # NHWC
    w = rng.standard_normal((shape.c, shape.f), dtype=np.float32)  # (C, F)
    w *= np.float32(1 / np.sqrt(shape.c))  # keep |y| ~ 1 for every C
    b = rng.standard_normal(shape.f, dtype=np.float32)  # (F,)
    x_nchw = np.ascontiguousarray(x.transpose(0, 3, 1, 2))  # (N, C, H, W)
    w_hwio = w.reshape(1, 1, shape.c, shape.f)  # (1, 1, C, F)
    w_oihw = np.ascontiguousarray(w.T).reshape(shape.f, shape.c, 1, 1)  # (F, C, 1, 1)
    ho, wo = pw.output_size(shape.h, 0, s), pw.output_size(shape.w, 0, s)

    ref = np.einsum(
        "nhwc,cf->nhwf", x[:, ::s, ::s, :].astype(np.float64), w.astype(np.float64),
        optimize=True,
    )  # (N, Ho, Wo, F)
    ref_br = np.maximum(ref + b.astype(np.float64), 0.0)

    def out_nhwc() -> np.ndarray:
        return np.full((shape.n, ho, wo, shape.f), np.nan, np.float32)

    def out_nchw() -> np.ndarray:
        return np.full((shape.n, shape.f, ho, wo), np.nan, np.float32)

    y1, y2, y3, y4 = out_nhwc(), out_nhwc(), out_nchw(), out_nchw()
    tx = torch.from_numpy(x_nchw)  # NCHW-contiguous
    tx_cl = tx.contiguous(memory_format=torch.channels_last)
    tw, tb = torch.from_numpy(w_oihw), torch.from_numpy(b)
    def torch_call(xt: torch.Tensor, fused: bool) -> Callable[[], Any]:
        if fused:
            return lambda: torch.relu_(F.conv2d(xt, tw, tb, stride=s))
        return lambda: F.conv2d(xt, tw, stride=s)

    def from_torch(y: torch.Tensor) -> np.ndarray:
        return y.numpy().transpose(0, 2, 3, 1)  # (N, F, Ho, Wo) -> (N, Ho, Wo, F)

    def from_nchw(y: np.ndarray) -> np.ndarray:
        return y.transpose(0, 2, 3, 1)  # (N, F, Ho, Wo) -> (N, Ho, Wo, F)

    def from_nhwc(y: np.ndarray) -> np.ndarray:
        return y

    impls = [
        Impl("pw_nhwc", "pointwise", False,
             lambda: pw.conv1x1(x, w_hwio, stride=s, out=y1), from_nhwc),
        Impl("pw_nhwc_br", "pointwise", True,
             lambda: pw.conv1x1(x, w_hwio, b, stride=s, activation="relu", out=y2), from_nhwc),
        Impl("pw_nchw", "pointwise", False,
             lambda: pw.conv1x1(x_nchw, w_oihw, layout="NCHW", stride=s, out=y3), from_nchw),
        Impl("pw_nchw_br", "pointwise", True,
             lambda: pw.conv1x1(x_nchw, w_oihw, b, layout="NCHW", stride=s,
                                activation="relu", out=y4), from_nchw),
        Impl("th_cl", "torch", False, torch_call(tx_cl, False), from_torch),
        Impl("th_cl_br", "torch", True, torch_call(tx_cl, True), from_torch),
        Impl("th_nchw", "torch", False, torch_call(tx, False), from_torch),
        Impl("th_nchw_br", "torch", True, torch_call(tx, True), from_torch),
    ]
    assert [i.key for i in impls] == [k for k, *_ in IMPLS]
    return impls, ref, ref_br


def verify(impls: list[Impl], ref: np.ndarray, ref_br: np.ndarray, rtol: float) -> list[str]:
    """Check every output before timing; failing implementations are excluded from timing."""
    notes = []
    for im in impls:
        try:
            y = im.fn()
            im.err = h.rel_err(im.result(y), ref_br if im.fused else ref)
            if im.key.startswith("th_cl"):
                im.layout_ok = bool(y.is_contiguous(memory_format=torch.channels_last))
            im.ok = im.err <= rtol
            if not im.ok:
                im.error = f"max|y-ref|/max|ref| = {im.err:.2e} > {rtol:.0e}"
        except Exception as e:  # a crash is a failure to report, not a reason to stop
            im.ok, im.err, im.error = False, float("inf"), f"{type(e).__name__}: {e}"
        if not im.ok:
            notes.append(f"  {im.key}: FAILED ({im.error})")
    return notes


def measure(impls: list[Impl], repeats: int, target_s: float, warm_s: float,
            settle_s: float) -> None:
    live = [im for im in impls if im.ok]
    for im in live:
        im.samples, im.faults = [], 0
    for im in live:  # warm-up, and the calls per sample
        per_call, _ = h.busy(im.fn, warm_s)
        im.k = h.calls_per_sample(per_call, target_s)
    groups = [[im for im in live if im.library == lib] for lib in ("pointwise", "torch")]
    groups = [g for g in groups if g]
    previous = None
    for r in range(repeats):
        for grp in groups if r % 2 == 0 else groups[::-1]:
            if grp[0].library != previous:  # let the other runtime's threads go idle
                h.busy(grp[0].fn, settle_s)
                previous = grp[0].library
            for im in grp:
                t, flt = h.timed(im.fn, im.k)
                im.samples.append(t)
                im.faults += flt


def measure_quietly(shape: Shape, impls: list[Impl], retries: int, busy: float,
                    params: tuple[int, float, float, float]) -> dict[str, Any]:
    """Measure; while other processes took more than ``busy`` of the CPUs, wait and redo.

    Keeps the attempt with the least foreign load; the load is recorded with the result.
    """
    best: dict[str, Any] | None = None
    for attempt in range(retries + 1):
        load = h.Load()
        measure(impls, *params)
        shares = load.shares()
        res = row_result(shape, impls)
        res["load"] = {**shares, "attempt": attempt}
        if best is None or shares["foreign"] < best["load"]["foreign"]:
            best = res
        if shares["foreign"] <= busy or attempt == retries:
            break
        print(f"  {shape.name}: other processes used {100 * shares['foreign']:.0f}% of the "
              f"CPUs; waiting for quiet, then measuring again", file=sys.stderr, flush=True)
        h.wait_for_quiet(60.0, busy)
    assert best is not None
    return best


# ---------------------------------------------------------------------------------- report
def row_result(shape: Shape, impls: list[Impl]) -> dict[str, Any]:
    by = {im.key: im for im in impls}
    res: dict[str, Any] = {
        "name": shape.name, "net": shape.net, "n": shape.n, "h": shape.h, "w": shape.w,
        "c": shape.c, "f": shape.f, "stride": shape.stride, "target_row": shape.target,
        "cost": shape.cost(bias=False).as_dict(),
        "flop_per_byte": shape.cost(bias=False).intensity(4), "impls": {}, "speed_vs_torch": {},
        "fused_over_plain": {},
    }
    for im in impls:
        d: dict[str, Any] = {"library": im.library, "fused": im.fused, "verified": im.ok,
                             "rel_err": im.err, "output_in_input_format": im.layout_ok}
        if not im.ok:
            d["error"] = im.error
        elif im.samples:
            cost = shape.cost(bias=im.fused)
            st = h.summary(im.samples)
            sec = st["median_ms"] / 1e3
            d.update(st, calls_per_sample=im.k, samples_ms=[t * 1e3 for t in im.samples],
                     gflops=cost.flops / sec / 1e9, gbytes_per_s=cost.bytes(4) / sec / 1e9,
                     minflt_per_call=im.faults / (im.k * len(im.samples)))
        res["impls"][im.key] = d

    def usable(*keys: str) -> bool:
        return all(by[k].ok and by[k].samples for k in keys)

    for _, num, den in RATIOS:
        if usable(num, den):
            res["speed_vs_torch"][f"{den}_vs_{num}"] = {
                "paired_median": h.paired_ratio(by[num].samples, by[den].samples),
                "ratio_of_medians": res["impls"][num]["median_ms"]
                / res["impls"][den]["median_ms"],
            }
    for _, fused, plain in OVERHEADS:
        if usable(fused, plain):
            res["fused_over_plain"][fused] = h.paired_ratio(by[fused].samples, by[plain].samples)
    return res


def fmt_table(title: str, header: list[str], rows: list[list[str]], widths: list[int]) -> str:
    lines = [title]

    def fmt_row(cells: list[str]) -> str:
        pairs = enumerate(zip(cells, widths, strict=True))
        return "  ".join(c.ljust(wd) if i == 0 else c.rjust(wd) for i, (c, wd) in pairs)

    lines.append(fmt_row(header))
    lines.append("-" * len(lines[-1]))
    lines += [fmt_row(r) for r in rows]
    return "\n".join(lines)


def cell(res: dict[str, Any], key: str, what: str, scale: float = 1.0, nd: int = 2) -> str:
    d = res["impls"].get(key)
    if d is None:
        return "-"
    if not d["verified"]:
        return "FAILED"
    if what not in d:
        return "-"
    return f"{d[what] * scale:.{nd}f}"


def report(results: list[dict[str, Any]]) -> str:
    big = [r for r in results if r["net"] != "toy"]
    toy = [r for r in results if r["net"] == "toy"]
    namew = max([len(r["name"]) for r in results] + [10]) + 2
    keys = [k for k, *_ in IMPLS]
    titles = [t for _, t, *_ in IMPLS]
    out = []

    def label(r: dict[str, Any]) -> str:
        return ("* " if r["target_row"] else "  ") + r["name"]

    if big:
        rows = []
        for r in big:
            iqrs = [d["iqr_rel"] for d in r["impls"].values() if "iqr_rel" in d]
            spread = f"{100 * max(iqrs):.0f}" if iqrs else "-"
            bg = f"{100 * r['load']['foreign']:.0f}"
            rows.append([label(r), f"{r['cost']['flops'] / 1e6:.0f}", f"{r['flop_per_byte']:.0f}",
                         *[cell(r, k, "median_ms") for k in keys], spread, bg])
        out.append(fmt_table(
            "Median time per call, ms. F/B = FLOP per compulsory byte; IQR% = widest "
            "interquartile range / median in the row;\nbg% = CPU share other processes used "
            "while the row was measured (rows above --busy were waited for and redone)",
            ["shape", "MFLOP", "F/B", *titles, "IQR%", "bg%"], rows,
            [namew, 6, 4] + [9] * len(keys) + [4, 3]))
        rows = [[label(r)] + [cell(r, k, "gflops", nd=0) for k in keys]
                + [cell(r, "pw_nhwc", "gbytes_per_s", nd=1)] for r in big]
        out.append(fmt_table("GFLOP/s (2·MACs from pointwise.conv_cost / median time);"
                             " GB/s = compulsory bytes (Cost.bytes(4)) / time, ours NHWC",
                             ["shape", *titles, "GB/s"], rows, [namew] + [9] * len(keys) + [6]))
        rows = []
        for r in big:
            sp = r["speed_vs_torch"]
            cells = [label(r)]
            for _, num, den in RATIOS:
                v = sp.get(f"{den}_vs_{num}")
                cells.append("-" if v is None else f"{v['paired_median']:.2f}")
            for _, fused, _plain in OVERHEADS:
                v = r["fused_over_plain"].get(fused)
                cells.append("-" if v is None else f"{v:.2f}")
            rows.append(cells)
        out.append(fmt_table(
            "Speed of ours vs torch (torch_ms / ours_ms, >1 = pointwise faster) | fused/plain time",
            ["shape", "NHWC/CL", "CL +br", "NCHW/NCHW", "NCHW +br",
             "ours NHWC", "ours NCHW", "th CL", "th NCHW"], rows, [namew] + [9] * 8))
        rows = [[label(r)] + [cell(r, k, "minflt_per_call", nd=1) for k in keys] for r in big]
        out.append(fmt_table(
            "Minor page faults per call (getrusage ru_minflt over the timed calls)",
            ["shape", *titles], rows, [namew] + [9] * len(keys)))
    for r in toy:
        rows = [[r["name"]] + [cell(r, k, "median_ms", 1e3, 1) for k in keys]]
        out.append(fmt_table("Tutorial toy shape, median µs per call", ["shape", *titles], rows,
                             [namew] + [9] * len(keys)))
    targets = [r for r in big if r["target_row"]]
    if targets:
        lines = ["Targets on * rows (C, F >= 128): plain NHWC >= 0.95x torch channels_last;"
                 " bias+ReLU <= 1.10x plain"]
        for title, key, lim, ok in (
            ("speed NHWC vs torch CL", "pw_nhwc_vs_th_cl", 0.95, lambda v, lim: v >= lim),
            ("speed NCHW vs torch NCHW", "pw_nchw_vs_th_nchw", 0.95, lambda v, lim: v >= lim),
        ):
            vals = [(r["name"], r["speed_vs_torch"].get(key, {}).get("paired_median"))
                    for r in targets]
            miss = [f"{n} " + ("no data" if v is None else f"{v:.2f}")
                    for n, v in vals if v is None or not ok(v, lim)]
            met = sum(1 for _, v in vals if v is not None and ok(v, lim))
            lines.append(f"  {title}: {met}/{len(vals)} meet {lim}"
                         + (f"; misses: {', '.join(miss)}" if miss else ""))
        for title, key in (("fused/plain ours NHWC", "pw_nhwc_br"),
                           ("fused/plain ours NCHW", "pw_nchw_br")):
            vals = [(r["name"], r["fused_over_plain"].get(key)) for r in targets]
            miss = [f"{n} " + ("no data" if v is None else f"{v:.2f}")
                    for n, v in vals if v is None or v > 1.10]
            met = sum(1 for _, v in vals if v is not None and v <= 1.10)
            lines.append(f"  {title}: {met}/{len(vals)} within 1.10"
                         + (f"; misses: {', '.join(miss)}" if miss else ""))
        out.append("\n".join(lines))
    return "\n\n".join(out)


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=None, help="rounds per shape (default 15)")
    ap.add_argument("--threads", type=int, default=2, help="torch and BLAS threads (default 2)")
    ap.add_argument("--shapes", default=None,
                    help="comma-separated substrings; run the shapes whose name contains one")
    ap.add_argument("--json", metavar="PATH", default=None,
                    help="save results (atomically); a directory gets a file named after the "
                         "environment")
    ap.add_argument("--quick", action="store_true", help="a tiny run: 3 shapes, few repeats")
    ap.add_argument("--target-ms", type=float, default=None,
                    help="length of one timed sample (default 20 ms; quick 3 ms)")
    ap.add_argument("--settle", type=float, default=None,
                    help="seconds of untimed calls after switching library (default 0.2)")
    ap.add_argument("--rtol", type=float, default=1e-4,
                    help="allowed max|y-ref| / max|ref| before timing (default 1e-4)")
    ap.add_argument("--busy", type=float, default=0.1,
                    help="redo a shape when other processes used more than this share of the "
                         "CPUs while it ran (default 0.1)")
    ap.add_argument("--retries", type=int, default=None,
                    help="how many times to redo a busy shape (default 2; quick 0)")
    ap.add_argument("--list", action="store_true", help="list the shape names and exit")
    return ap.parse_args(argv)


def select(shapes: list[Shape], spec: str | None, quick: bool) -> list[Shape]:
    if spec:
        subs = [s.strip().lower() for s in spec.split(",") if s.strip()]
        return [s for s in shapes if any(x in s.name.lower() for x in subs)]
    if quick:
        return [s for s in shapes if any(s.name.startswith(q) for q in QUICK)]
    return list(shapes)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.list:
        print("\n".join(("* " if s.target else "  ") + s.name for s in SHAPES))
        return 0
    if os.environ.get("OPENBLAS_NUM_THREADS") != str(args.threads):
        print(f"warning: OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')} was "
              f"set before --threads={args.threads} could apply (imported as a module?)",
              file=sys.stderr)
    pinned = h.limit_threads(args.threads)
    torch.set_num_threads(args.threads)
    repeats = args.repeats or (3 if args.quick else 15)
    target_s = (args.target_ms or (3.0 if args.quick else 20.0)) / 1e3
    warm_s = 0.02 if args.quick else 0.2
    settle_s = args.settle if args.settle is not None else 0.2
    retries = args.retries if args.retries is not None else (0 if args.quick else 2)
    shapes = select(SHAPES, args.shapes, args.quick)
    if not shapes:
        print(f"no shape matches --shapes {args.shapes!r}; try --list", file=sys.stderr)
        return 2
    env = h.environment(args.threads, pinned, torch)
    env.update(repeats=repeats, retries=retries, busy=args.busy, target_ms=target_s * 1e3,
               warm_s=warm_s, settle_s=settle_s, rtol=args.rtol, quick=args.quick, dtype="float32",
               torch_mode="inference_mode; relu_ in place; output allocated per call",
               ours_mode="out= preallocated buffer")
    ob = env["openblas"]
    print(f"pointwise {env['pointwise']} | numpy {env['numpy']} (OpenBLAS "
          f"{ob.get('corename', '?')}, {ob.get('num_threads', '?')} threads) | torch "
          f"{env['torch']} ({env['torch_num_threads']} threads) | "
          f"{env['cpu'].get('model name', '?')}, {env['cpu']['logical_cpus']} CPUs | "
          f"{env['date']}")
    print(f"fp32; {repeats} rounds, ~{target_s * 1e3:g} ms per sample, {settle_s:g} s settle "
          f"per library switch; ours writes into out=, torch allocates its output each call; "
          f"torch +br = conv2d(x, w, b) then torch.relu_ (in place); NHWC/CL = ours NHWC vs "
          f"torch channels_last; * = C, F >= 128", flush=True)

    rng = np.random.default_rng(0)
    results, failed = [], False
    with torch.inference_mode():
        for shape in shapes:
            impls, ref, ref_br = build(shape, rng)
            notes = verify(impls, ref, ref_br, args.rtol)
            if notes:
                failed = True
                print(f"{shape.name}: verification failed\n" + "\n".join(notes), flush=True)
            res = measure_quietly(shape, impls, retries, args.busy,
                                  (repeats, target_s, warm_s, settle_s))
            results.append(res)
            med = " ".join(
                f"{k}={cell(res, k, 'median_ms', 1e3 if shape.net == 'toy' else 1, 3)}"
                for k in ("pw_nhwc", "th_cl")
            )
            print(f"  done {shape.name}: {med}{' µs' if shape.net == 'toy' else ' ms'}",
                  file=sys.stderr, flush=True)
    print()
    print(report(results))
    if args.json:
        path = h.write_json_atomic(args.json, {"environment": env, "results": results},
                                   h.env_slug(env), "bench_conv")
        print(f"\nwrote {path}")
    if failed:
        print("\nFAILED: at least one implementation gave a wrong result (see above)",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
