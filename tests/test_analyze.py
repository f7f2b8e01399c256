"""The analyzer: exact counts of known layers, the meta-device trace, views and renderers."""

from __future__ import annotations

import csv
import io
import json
import time

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import pointwise.models as pm
from pointwise.analysis import analyze, papers, published
from pointwise.cost import CONVENTION, MAC_SCOPE, reduction_cost
from pointwise.nn import Conv1x1


def small_net() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, stride=2, padding=1),  # 0: 32 -> 16
        nn.BatchNorm2d(16),  # 1
        nn.ReLU(inplace=True),  # 2
        Conv1x1(16, 32, bias=False),  # 3
        nn.Conv2d(32, 32, 3, padding=1, groups=32, bias=False),  # 4: depthwise
        nn.MaxPool2d(2),  # 5: 16 -> 8
        nn.AdaptiveAvgPool2d(1),  # 6
        nn.Flatten(),  # 7
        nn.Dropout(0.5),  # 8
        nn.Linear(32, 10),  # 9
    )


class Inception(nn.Module):
    """GoogLeNet's 3a as a hand-made module: 1×1; 1×1→3×3; 1×1→BN→F.relu→5×5; pool→1×1."""

    def __init__(self) -> None:
        super().__init__()
        self.branch1 = Conv1x1(192, 64)
        self.branch2 = nn.Sequential(Conv1x1(192, 96), nn.ReLU(), nn.Conv2d(96, 128, 3, padding=1))
        self.reduce5 = Conv1x1(192, 16)
        self.bn5 = nn.BatchNorm2d(16)
        self.conv5 = nn.Conv2d(16, 32, 5, padding=2)
        self.pool = nn.MaxPool2d(3, stride=1, padding=1)
        self.proj = Conv1x1(192, 32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.conv5(F.relu(self.bn5(self.reduce5(x))))  # a functional relu, not in place
        return torch.cat([self.branch1(x), self.branch2(x), b3, self.proj(self.pool(x))], 1)


def numel(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ------------------------------------------------------------------ hand-made models
def test_known_layers_exact_counts_kinds_and_shapes():
    r = analyze(small_net(), (2, 3, 32, 32))
    rows = {layer.name: layer for layer in r.layers}
    assert [la.kind for la in r.layers] == ["conv 3×3", "norm", "act", "conv 1×1", "depthwise",
                                            "pool", "pool", "reshape", "dropout", "linear"]
    c = rows["0"]
    assert (c.kernel, c.stride, c.groups, c.channels) == ((3, 3), (2, 2), 1, (3, 16))
    assert c.in_shape == (2, 3, 32, 32) and c.out_shape == (2, 16, 16, 16)
    assert (c.cost.weights, c.cost.biases) == (16 * 3 * 3 * 3, 16)
    assert c.macs == 2 * 16 * 16 * 16 * 3 * 9
    assert rows["1"].params == 2 * 16 and rows["1"].macs == 0
    assert rows["3"].params == 32 * 16 and rows["3"].macs == 2 * 16 * 16 * 32 * 16
    dw = rows["4"]
    assert dw.groups == 32 and dw.params == 32 * 9 and dw.macs == 2 * 16 * 16 * 32 * 9
    assert rows["5"].kernel == (2, 2) and rows["5"].out_shape == (2, 32, 8, 8)
    fc = rows["9"]
    assert fc.params == 32 * 10 + 10 and fc.macs == 2 * 32 * 10 and fc.in_shape == (2, 32)
    assert r.params == numel(small_net())
    assert r.macs == sum(la.macs for la in r.layers) and r.flops == 2 * r.macs


def test_share_held_by_1x1_convs():
    r = analyze(small_net(), (1, 3, 32, 32))
    one = next(la for la in r.layers if la.kind == "conv 1×1")
    share = r.share()
    assert share["params"] == pytest.approx(one.params / r.params)
    assert share["macs"] == pytest.approx(one.macs / r.macs)
    assert 0 < share["macs"] < 1 and r.share("linear")["params"] == pytest.approx(330 / r.params)


def test_every_param_counted_unrun_shared_and_container_params():
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scale = nn.Parameter(torch.ones(8))  # a container's own parameter
            self.block = Conv1x1(8, 8)
            self.aux = nn.Sequential(nn.Conv2d(8, 4, 3), nn.Linear(4, 2))  # train-time only

        def forward(self, x):
            x = self.block(self.block(x))  # one module, two calls
            if self.training:
                x = x + self.aux[0](x).mean()
            return x * self.scale.view(1, -1, 1, 1)

    net = Net().train()
    r = analyze(net, (1, 8, 4, 4))
    assert r.params == numel(net) == 8 + 72 + (4 * 8 * 9 + 4) + 10
    calls = [la for la in r.layers if la.name == "block"]
    assert [la.call for la in calls] == [1, 2]
    assert [la.params for la in calls] == [72, 0]  # params once, MACs per call
    assert [la.macs for la in calls] == [16 * 64, 16 * 64]
    unrun = {la.name: la for la in r.layers if not la.traced}
    assert set(unrun) == {"aux.0", "aux.1"}  # analyze runs eval mode: the aux head is skipped
    assert unrun["aux.0"].kind == "conv 3×3" and unrun["aux.0"].macs == 0
    assert unrun["aux.0"].cost.weights == 4 * 8 * 9 and unrun["aux.0"].cost.biases == 4
    assert any(la.name == "" and la.params == 8 for la in r.layers)
    assert net.training  # the original's mode is left alone


def test_tied_weights_count_once():
    a, b = nn.Linear(6, 6, bias=False), nn.Linear(6, 6, bias=False)
    b.weight = a.weight
    r = analyze(nn.Sequential(a, b), (1, 6))
    assert r.params == 36 == numel(nn.Sequential(a, b))
    assert [la.macs for la in r.layers] == [36, 36]


def test_grouping_by_name_prefix():
    net = nn.Sequential()
    net.add_module("stem", nn.Sequential(nn.Conv2d(3, 192, 3, padding=1), nn.ReLU()))
    net.add_module("inc", Inception())
    r = analyze(net, (1, 3, 28, 28))
    g1 = {g.name: g for g in r.groups(1)}
    assert list(g1) == ["stem", "inc"]
    assert g1["inc"].params == numel(net.inc) and g1["stem"].params == numel(net.stem)
    assert g1["inc"].out_shape == (1, 256, 28, 28)  # the module's own output: the concat
    assert g1["inc"].macs == sum(la.macs for la in r.layers if la.name.startswith("inc."))
    g2 = {g.name for g in r.groups(2)}
    assert {"inc.branch1", "inc.branch2", "inc.reduce5", "inc.proj", "stem.0"} <= g2
    assert sum(g.macs for g in r.groups(2)) == r.macs
    with pytest.raises(ValueError, match="depth >= 1"):
        r.groups(0)


def test_savings_follow_reductions_through_norms_and_functional_ops():
    r = analyze(Inception(), (1, 192, 28, 28))
    pairs = {(s.reduce.name, s.conv.name): s for s in r.savings()}
    assert set(pairs) == {("branch2.0", "branch2.2"), ("reduce5", "conv5")}
    five = pairs[("reduce5", "conv5")].reduction
    ref = reduction_cost(192, 32, 5, 16, input_size=28, bias=True)
    assert five.direct == ref.direct and five.reduce == ref.reduce and five.conv == ref.conv
    assert five.direct.macs == 120_422_400 and five.reduced.macs == 12_443_648
    assert round(five.ratio, 2) == 9.68
    three = pairs[("branch2.0", "branch2.2")].reduction
    assert three.direct.macs == 28 * 28 * 128 * 192 * 9
    by = {g.name: g for g in r.savings_by_group(1)}
    assert set(by) == {"branch2"}  # reduce5 → conv5 cross top-level names: no group
    assert by["branch2"].without.macs == three.direct.macs
    assert by["branch2"].ratio == pytest.approx(three.direct.macs / three.reduced.macs)


def test_no_saving_without_a_1x1_or_for_grouped_kxk():
    net = nn.Sequential(Conv1x1(8, 16), nn.Conv2d(16, 16, 3, groups=16), nn.Conv2d(16, 4, 3))
    assert analyze(net, (1, 8, 9, 9)).savings() == []


def test_dilation_same_padding_and_unbatched_inputs():
    net = nn.Conv2d(4, 8, 3, padding="same", dilation=2)
    r = analyze(net, (4, 10, 12))  # unbatched (C, H, W)
    assert r.layers[0].out_shape == (8, 10, 12)
    assert r.macs == 10 * 12 * 8 * 4 * 9 and r.params == numel(net)
    seq = analyze(nn.Linear(16, 3), (2, 5, 16))
    assert seq.macs == 2 * 5 * 16 * 3


def test_runs_on_meta_without_arithmetic_and_leaves_the_model_alone():
    net = nn.Sequential(nn.Conv2d(1024, 1024, 3, padding=1), Conv1x1(1024, 1024))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    t = time.perf_counter()
    r = analyze(net, (8, 1024, 512, 512))  # ≈ 20 TMACs: hours of real arithmetic
    assert time.perf_counter() - t < 5
    assert r.macs == 8 * 512 * 512 * 1024 * 1024 * 10
    assert all(p.device.type == "cpu" for p in net.parameters())
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in net.modules())

    class MetaOnly(nn.Module):
        def forward(self, x):
            if not x.is_meta:
                raise AssertionError("real data reached the forward")
            return x

    assert analyze(MetaOnly(), (1, 2)).layers[0].kind == "other"


def test_errors_are_clear():
    with pytest.raises(TypeError, match="expected an nn.Module"):
        analyze(lambda x: x, (1, 3))  # type: ignore[arg-type]
    for bad in [(1, 0, 4), ("a", 3), (1.5, 3), ()]:
        with pytest.raises(ValueError, match="expected input_shape"):
            analyze(small_net(), bad)
    with pytest.raises(ValueError, match=r"meta device in '0' \(Conv2d\(3, 16.*given \[1, 4, 32"):
        analyze(small_net(), (1, 4, 32, 32))

    class DataDependent(nn.Module):
        def forward(self, x):
            return x if x.sum() > 0 else -x

    with pytest.raises(ValueError, match="forward failed on the meta device"):
        analyze(DataDependent(), (1, 3))


# ------------------------------------------------------------------------ renderers
def test_text_states_totals_share_and_convention():
    r = analyze(small_net(), (1, 3, 32, 32), name="small")
    text = r.to_text()
    assert text.startswith("small, input 1×3×32×32")
    assert CONVENTION in text and MAC_SCOPE in text
    assert f"{r.params:,} params" in text and f"{r.macs:,} MACs" in text
    assert "1×1 convs:" in text
    lines = text.splitlines()
    assert all(any(line.startswith(f"{la.name} ") for line in lines) for la in r.layers)
    grouped = r.to_text(depth=1, savings=False)
    assert "group" in grouped.splitlines()[2] and len(grouped.splitlines()) == len(lines)
    assert "savings: no 1×1 conv feeds" in r.to_text(savings=True)


def test_json_round_trips():
    r = analyze(Inception(), (1, 192, 28, 28))
    d = json.loads(json.dumps(r.to_dict(depth=1, savings=True)))
    assert d["convention"] == CONVENTION and d["totals"]["params"] == r.params
    assert d["totals"]["macs"] == r.macs and len(d["layers"]) == len(r.layers)
    assert d["layers"][0]["name"] == r.layers[0].name
    assert sum(g["macs"] for g in d["groups"]) == r.macs
    five = next(s for s in d["savings"] if s["conv"] == "conv5")
    assert five["channels"] == [192, 16, 32] and five["direct_macs"] == 120_422_400
    assert d["share_1x1"]["macs"] == pytest.approx(r.share()["macs"])


def test_csv_has_one_row_per_layer_group_or_saving():
    r = analyze(Inception(), (1, 192, 28, 28))
    rows = list(csv.DictReader(io.StringIO(r.to_csv())))
    assert len(rows) == len(r.layers)
    assert sum(int(row["macs"]) for row in rows) == r.macs
    assert rows[0]["input"] == "1×192×28×28"
    groups = list(csv.DictReader(io.StringIO(r.to_csv(depth=1))))
    assert [g["name"] for g in groups] == [g.name for g in r.groups(1)]
    savings = list(csv.DictReader(io.StringIO(r.to_csv(savings=True))))
    assert {s["conv"] for s in savings} == {"conv5", "branch2.2"}


def test_png_is_written_atomically(tmp_path, monkeypatch):
    r = analyze(Inception(), (1, 192, 28, 28))
    path = r.to_png(tmp_path / "chart.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from matplotlib.figure import Figure

    def broken(self, *args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(Figure, "savefig", broken)
    with pytest.raises(RuntimeError):
        r.to_png(tmp_path / "second.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chart.png"]  # no partial file


# --------------------------------------------------------------- registered models
@pytest.mark.parametrize("name", pm.names())
def test_analyzer_params_equal_numel(name):
    model = pm.create(name)
    first = next(m for m in model.modules() if isinstance(m, (nn.Conv2d, Conv1x1)))
    r = analyze(model, (1, first.in_channels, 224, 224), name=name)
    assert r.params == numel(model)
    assert r.macs > 0 and not r.uncounted
    assert all(la.traced for la in r.layers)  # eval mode runs every layer with params


def test_resnet152_takes_about_a_second():
    with torch.device("meta"):
        model = pm.create("resnet152")
    t = time.perf_counter()
    r = analyze(model)
    assert time.perf_counter() - t < 5
    assert r.params == 60_192_808 and r.macs == 11_513_626_624  # torchvision's stride placement


def inception_weights(c, n1, r3, n3, r5, n5, pp):
    return c * n1 + c * r3 + 9 * r3 * n3 + c * r5 + 25 * r5 * n5 + c * pp


@pytest.fixture(scope="module")
def googlenet_table():
    return papers.googlenet_table1()


def test_googlenet_table1_per_module(googlenet_table):
    rows = {row.label: {f.column: f for f in row.figures} for row in googlenet_table.rows}
    widths = {"inception (3a)": (192, 64, 96, 128, 16, 32, 32, 28),
              "inception (4a)": (480, 192, 96, 208, 16, 48, 64, 14),
              "inception (4c)": (512, 128, 128, 256, 24, 64, 64, 14),
              "inception (5b)": (832, 384, 192, 384, 48, 128, 128, 7)}
    for label, (*w, size) in widths.items():
        weights = inception_weights(*w)
        assert rows[label]["params"].exact == weights
        assert rows[label]["ops"].exact == size * size * weights
    assert rows["inception (4a)"]["params"].exact == 375_552  # printed 364K: 366.75K
    assert rows["inception (5b)"]["params"].exact == 1_442_816  # printed 1388K: 1409K
    assert rows["linear"]["params"].exact == 1_024_000
    conv1 = next(r for r in googlenet_table.rows if r.label == "convolution")
    assert {f.column: f.exact for f in conv1.figures if f.exact} == {
        "params": 9_408, "ops": 118_013_952}
    flagged = {(label, f.column) for label, f in googlenet_table.flagged}
    assert flagged == {
        ("convolution", "params"), ("convolution", "ops"),
        ("inception (3b)", "params"), ("inception (4a)", "params"),
        ("inception (4b)", "params"), ("inception (4c)", "params"),
        ("inception (4d)", "params"), ("inception (4e)", "params"),
        ("inception (5a)", "params"), ("inception (5a)", "ops"),
        ("inception (5b)", "params"),
    }
    # every structural column (output size, depth, #1×1 … pool proj) matches the printed one
    structural = [f for row in googlenet_table.rows for f in row.figures if f.exact is None]
    assert len(structural) > 60 and not any(f.flagged for f in structural)


def test_googlenet_table_text_says_its_units(googlenet_table):
    text = googlenet_table.to_text()
    assert "K = 1024" in text and "M = 10^6" in text and "364K!" in text
    assert "159K " in text and "159K!" not in text and "375,552" in text


def test_mobilenet_table2_shares():
    t = papers.mobilenet_table2()
    got = {(row.label, f.column): f for row in t.rows for f in row.figures}
    for (label, column), f in got.items():
        printed = float(f.printed)
        assert abs(float(f.value) - printed) <= 0.005 or (label, column) == (
            "Conv 3×3", "Mult-Adds")
    assert [(label, f.column) for label, f in t.flagged] == [("Conv 3×3", "Mult-Adds")]
    assert round(float(got[("Conv 3×3", "Mult-Adds")].value), 2) == 1.91  # printed 1.19


def test_resnet_flops_row_with_the_original_stride():
    t = papers.resnet_flops()
    (row,) = t.rows
    ours = {f.column: f.exact for f in row.figures}
    assert ours == {"18-layer": 1_814_073_344, "34-layer": 3_663_761_408,
                    "50-layer": 3_857_973_248, "101-layer": 7_570_194_432,
                    "152-layer": 11_282_415_616}
    for f in row.figures:  # within the printed 0.1×10^9
        assert abs(f.exact / 1e9 - float(f.printed)) < 0.1
    assert t.flagged == []
    assert "3.858×10^9" in t.to_text()


def test_agreement_rule():
    from fractions import Fraction

    assert published.agrees("3.8", Fraction(3_857_973_248, 10**9))  # truncated
    assert published.agrees("7.6", Fraction(7_570_194_432, 10**9))  # rounded
    assert not published.agrees("380", Fraction(388_096, 1024))  # 379.0: neither
    assert published.agrees("159", Fraction(163_328, 1024))  # 159.5
    assert not published.agrees("3.6", Fraction(3_700_000_000, 10**9))
    with pytest.raises(ValueError, match="published table"):
        papers.paper_table("squeezenet1_0")

