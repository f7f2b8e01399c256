"""Published tables, transcribed once as data, beside our own exact counts.

* GoogLeNet, "Going deeper with convolutions" (Szegedy et al., 2014), Table 1. Its params
  column counts weights without biases, K = 1024; its ops column counts MACs, M = 10^6.
* MobileNet v1 (Howard et al., 2017), Table 2: the share of mult-adds and of parameters per
  layer type. Its parameters are conv and FC weights (no biases, no BatchNorm).
* ResNet, "Deep residual learning for image recognition" (He et al., 2015), Table 1, the
  FLOPs row. Its "FLOPs" are multiply-adds; the stride sits on the first 1×1 of a
  downsampling bottleneck (the original placement, ``stride_in_1x1=True``).

The printed cells are strings exactly as printed; every number of ours comes from
:func:`pointwise.analysis.analyze`, hence from :mod:`pointwise.cost`. A figure agrees when
rounding our exact value to the printed digits, to nearest or by truncation, gives the printed
value (:func:`pointwise.analysis.published.agrees`); every other figure is flagged.
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction
from typing import Any

from pointwise.analysis.analyzer import analyze
from pointwise.analysis.published import RULE, Figure, PaperRow, PaperTable
from pointwise.analysis.report import Report
from pointwise.analysis.trace import KIND_1X1, Layer
from pointwise.cost import total_cost

__all__ = ["PAPERS", "googlenet_table1", "mobilenet_table2", "paper_table", "resnet_flops"]

# --------------------------------------------------------------------- GoogLeNet Table 1
GOOGLENET_COLUMNS = ("type", "patch size/stride", "output size", "depth", "#1×1",
                     "#3×3 reduce", "#3×3", "#5×5 reduce", "#5×5", "pool proj", "params", "ops")
# Table 1 as printed, and the children of our googlenet (torchvision's names) each row covers.
GOOGLENET_TABLE1: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = (
    (("convolution", "7×7/2", "112×112×64", "1", "", "", "", "", "", "", "2.7K", "34M"),
     ("conv1",)),
    (("max pool", "3×3/2", "56×56×64", "0", "", "", "", "", "", "", "", ""), ("maxpool1",)),
    (("convolution", "3×3/1", "56×56×192", "2", "", "64", "192", "", "", "", "112K", "360M"),
     ("conv2", "conv3")),
    (("max pool", "3×3/2", "28×28×192", "0", "", "", "", "", "", "", "", ""), ("maxpool2",)),
    (("inception (3a)", "", "28×28×256", "2", "64", "96", "128", "16", "32", "32", "159K",
      "128M"), ("inception3a",)),
    (("inception (3b)", "", "28×28×480", "2", "128", "128", "192", "32", "96", "64", "380K",
      "304M"), ("inception3b",)),
    (("max pool", "3×3/2", "14×14×480", "0", "", "", "", "", "", "", "", ""), ("maxpool3",)),
    (("inception (4a)", "", "14×14×512", "2", "192", "96", "208", "16", "48", "64", "364K",
      "73M"), ("inception4a",)),
    (("inception (4b)", "", "14×14×512", "2", "160", "112", "224", "24", "64", "64", "437K",
      "88M"), ("inception4b",)),
    (("inception (4c)", "", "14×14×512", "2", "128", "128", "256", "24", "64", "64", "463K",
      "100M"), ("inception4c",)),
    (("inception (4d)", "", "14×14×528", "2", "112", "144", "288", "32", "64", "64", "580K",
      "119M"), ("inception4d",)),
    (("inception (4e)", "", "14×14×832", "2", "256", "160", "320", "32", "128", "128", "840K",
      "170M"), ("inception4e",)),
    (("max pool", "3×3/2", "7×7×832", "0", "", "", "", "", "", "", "", ""), ("maxpool4",)),
    (("inception (5a)", "", "7×7×832", "2", "256", "160", "320", "32", "128", "128", "1072K",
      "54M"), ("inception5a",)),
    (("inception (5b)", "", "7×7×1024", "2", "384", "192", "384", "48", "128", "128", "1388K",
      "71M"), ("inception5b",)),
    (("avg pool", "7×7/1", "1×1×1024", "0", "", "", "", "", "", "", "", ""), ("avgpool",)),
    (("dropout (40%)", "", "1×1×1024", "0", "", "", "", "", "", "", "", ""), ("dropout",)),
    (("linear", "", "1×1×1000", "1", "", "", "", "", "", "", "1000K", "1M"), ("fc",)),
    (("softmax", "", "1×1×1000", "0", "", "", "", "", "", "", "", ""), ()),
)
K, M, G = 1024, 10**6, 10**9


def googlenet_table1(report: Report | None = None) -> PaperTable:
    """GoogLeNet's Table 1 beside ``report`` (default: our ``googlenet`` at 1×3×224×224)."""
    r = report or _report("googlenet")
    children = {layer.name.split(".")[0] for layer in r.layers}
    rows = []
    for printed, names in GOOGLENET_TABLE1:
        missing = [n for n in names if n not in children]
        if missing:
            raise ValueError(f"expected a GoogLeNet with torchvision's child names, but "
                             f"{r.model} has no {', '.join(missing)}")
        layers = [la for la in r.layers if la.name.split(".")[0] in names and la.traced]
        figures = _googlenet_structure(r, printed, names, layers)
        weighted = [la for la in layers if la.kind != "norm"]
        cost = total_cost(la.cost for la in weighted)
        if printed[10]:
            figures.append(Figure("params", printed[10][:-1], Fraction(cost.weights, K),
                                  cost.weights, "K"))
        if printed[11]:
            figures.append(Figure("ops", printed[11][:-1], Fraction(cost.macs, M), cost.macs,
                                  "M"))
        rows.append(PaperRow(printed[0], printed, tuple(figures)))
    return PaperTable(
        "googlenet", "GoogLeNet (Szegedy et al. 2014, \"Going deeper with convolutions\"), "
        f"Table 1, beside our {r.model} at {'×'.join(map(str, r.input_shape))}",
        GOOGLENET_COLUMNS, tuple(rows),
        ("params: weights without biases, K = 1024 (ours: conv and linear weights)",
         "ops: multiply-adds (MACs), M = 10^6",
         "the first convolution, 7×7/2 from 3 to 64 channels, has 7·7·3·64 = 9,408 weights "
         "and 112·112·9,408 = 118,013,952 MACs; the printed 2.7K and 34M fit no such conv",
         "two printed ops follow from their wrong params: 364K × 14·14 = 73M (4a), "
         "1072K × 7·7 = 54M (5a)", RULE))


def _googlenet_structure(r: Report, printed: tuple[str, ...], names: tuple[str, ...],
                         layers: list[Layer]) -> list[Figure]:
    """The patch, output-size, depth and channel columns of one row, from our layers."""
    figures: list[Figure] = []
    if not layers:
        return figures
    shape = r.modules.get(names[-1], (None, layers[-1].out_shape))[1]
    if shape is not None:
        _, c, *hw = shape if len(shape) == 4 else (*shape, 1, 1)
        figures.append(Figure("output size", printed[2], f"{hw[0]}×{hw[1]}×{c}"))
    weights = [la for la in layers if la.channels is not None]
    depth = {la.index: 0 for la in layers}
    for la in layers:  # layers come in the order they ran, so sources come first
        up = _upstream_weight(r, la)
        here = int(la.channels is not None)
        depth[la.index] = here + (depth.get(up.index, 0) if up is not None else 0)
    figures.append(Figure("depth", printed[3], max(depth.values())))
    main = next((la for la in layers if la.kernel and la.kernel != (1, 1)), None)
    if printed[1] and main is not None and main.kernel and main.stride:  # not adaptive pools
        figures.append(Figure("patch size/stride", printed[1],
                              f"{main.kernel[0]}×{main.kernel[1]}/{main.stride[0]}"))
    if not any(printed[4:10]):
        return figures
    counts = dict.fromkeys(GOOGLENET_COLUMNS[4:10], 0)
    feeds = {s.reduce.index: s.conv for s in r.savings()}
    members = {la.index for la in layers}
    for la in weights:
        assert la.channels is not None
        f = la.channels[1]
        if la.kind == KIND_1X1:
            up = r.upstream(la)
            fed = feeds[la.index].kernel if la.index in feeds else None
            if fed is not None:
                column = f"#{fed[0]}×{fed[1]} reduce"
            elif up is not None and up.kind == "pool" and up.index in members:
                column = "pool proj"
            else:
                column = "#1×1"
        else:
            column = f"#{la.kernel[0]}×{la.kernel[1]}" if la.kernel else "?"
        counts[column] = counts.get(column, 0) + f
    for i, column in enumerate(GOOGLENET_COLUMNS[4:10], start=4):
        if printed[i] or counts[column]:
            figures.append(Figure(column, printed[i], counts[column] or ""))
    return figures


def _upstream_weight(r: Report, layer: Layer) -> Layer | None:
    """The nearest conv or linear layer upstream of ``layer``, through pools and the like."""
    index, steps = layer.source, 0
    while index is not None and steps < len(r.layers):
        src = r.layers[index]
        if src.channels is not None:
            return src
        index, steps = src.source, steps + 1
    return None


# --------------------------------------------------------------------- MobileNet Table 2
MOBILENET_TABLE2 = (  # type, mult-adds, parameters; and our layer kind
    (("Conv 1×1", "94.86%", "74.59%"), "conv 1×1"),
    (("Conv DW 3×3", "3.06%", "1.06%"), "depthwise"),
    (("Conv 3×3", "1.19%", "0.02%"), "conv 3×3"),
    (("Fully Connected", "0.18%", "24.33%"), "linear"),
)


def mobilenet_table2(report: Report | None = None) -> PaperTable:
    """MobileNet v1's Table 2 (resources per layer type) beside ``report``."""
    r = report or _report("mobilenet_v1")
    kinds = r.by_kind()
    weighted = total_cost(c for k, c in kinds.items() if k != "norm")
    rows = []
    for printed, kind in MOBILENET_TABLE2:
        c = kinds.get(kind)
        macs, weights = (c.macs, c.weights) if c else (0, 0)
        rows.append(PaperRow(printed[0], printed, (
            Figure("Mult-Adds", printed[1][:-1], Fraction(100 * macs, max(1, weighted.macs)),
                   macs, "%"),
            Figure("Parameters", printed[2][:-1],
                   Fraction(100 * weights, max(1, weighted.weights)), weights, "%"))))
    return PaperTable(
        "mobilenet_v1", "MobileNet v1 (Howard et al. 2017), Table 2 \"Resource per layer "
        f"type\", beside our {r.model} at {'×'.join(map(str, r.input_shape))}",
        ("Type", "Mult-Adds", "Parameters"), tuple(rows),
        (f"Mult-Adds: share of all {weighted.macs:,} MACs",
         f"Parameters: share of all {weighted.weights:,} conv and FC weights, without "
         "biases and BatchNorm (as the printed shares count them)",
         "the printed Mult-Adds shares add up to 99.29%; Conv 3×3's 1.19% reads as 1.91% "
         "with two digits swapped, which makes them add up to 100.01%", RULE))


# ------------------------------------------------------------------ ResNet Table 1, FLOPs
RESNET_FLOPS = (("18-layer", "1.8", "resnet18"), ("34-layer", "3.6", "resnet34"),
                ("50-layer", "3.8", "resnet50"), ("101-layer", "7.6", "resnet101"),
                ("152-layer", "11.3", "resnet152"))


def resnet_flops(reports: dict[str, Report] | None = None) -> PaperTable:
    """ResNet's Table 1 FLOPs row beside our five ResNets, the stride on the first 1×1."""
    reports = dict(reports or {})
    figures = []
    for column, printed, name in RESNET_FLOPS:
        if name not in reports:
            kwargs = {} if name in ("resnet18", "resnet34") else {"stride_in_1x1": True}
            reports[name] = _report(name, **kwargs)
        macs = reports[name].macs
        figures.append(Figure(column, printed, Fraction(macs, G), macs, "×10^9"))
    printed_row = ("FLOPs", *(f"{p}×10^9" for _, p, _ in RESNET_FLOPS))
    return PaperTable(
        "resnet", "ResNet (He et al. 2015, \"Deep residual learning for image recognition\"), "
        "Table 1, FLOPs row, beside our resnet18 .. resnet152 at 1×3×224×224",
        ("", *(c for c, _, _ in RESNET_FLOPS)), (PaperRow("FLOPs", printed_row,
                                                          tuple(figures)),),
        ("the paper's FLOPs are multiply-adds (MACs), 10^9 = G",
         "the 50/101/152-layer nets put the downsampling stride on the first 1×1 of a block, "
         "as the paper (stride_in_1x1=True); torchvision's placement costs more", RULE))


PAPERS: dict[str, Callable[..., PaperTable]] = {
    "googlenet": googlenet_table1,
    "mobilenet_v1": mobilenet_table2,
    **{name: resnet_flops for _, _, name in RESNET_FLOPS},
}


def paper_table(name: str, report: Report | None = None) -> PaperTable:
    """The published table for the registered model ``name``, beside our counts.

    ``report`` is used where it is an analysis of that model as the paper builds it.
    """
    make = PAPERS.get(name)
    if make is None:
        raise ValueError(f"expected a model with a published table ({', '.join(PAPERS)}), "
                         f"but got {name!r}")
    if make is resnet_flops:  # always built as the paper: stride on the first 1×1
        return resnet_flops()
    if report is not None and report.input_shape != (1, 3, 224, 224):
        report = None  # the tables are for one 224×224 image
    return make(report)


def _report(name: str, **kwargs: Any) -> Report:
    """Our registered model ``name``, built on the meta device (no init work), analyzed."""
    import torch

    import pointwise.models as pm

    with torch.device("meta"):
        model = pm.create(name, **kwargs)
    return analyze(model, (1, 3, 224, 224), name=name)
