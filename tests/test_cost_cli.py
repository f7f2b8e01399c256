"""`pointwise cost`, `pointwise models` and `pointwise analyze`: main(argv) -> int."""

from __future__ import annotations

import csv
import io
import json
import textwrap

import pytest

import pointwise.models as pm
from pointwise.cli import main
from pointwise.cost import CONVENTION, conv_cost, reduction_cost


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, out: str, err: str, *fragments: str) -> None:
    assert code == 2 and out == ""
    lines = err.splitlines()
    assert lines and lines[0].startswith("error: "), err
    assert len(lines) == 1 or (len(lines) == 2 and lines[1].startswith("hint: ")), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, err


# ---------------------------------------------------------------------------------- cost
def test_cost_worked_example(capsys):
    code, out, err = run(capsys, "cost", "--input-size", "192x28x28", "--conv", "5x5:32",
                         "--reduce", "16")
    assert code == 0 and err == ""
    lines = out.splitlines()
    direct = next(line for line in lines if line.startswith("direct"))
    assert "153,600" in direct and direct.endswith("120,422,400")
    total = next(line for line in lines if line.strip().startswith("total"))
    assert "15,872" in total and total.endswith("12,443,648")
    assert any(line.endswith("2,408,448") and "192→16" in line for line in lines)
    assert any(line.endswith("10,035,200") and "16→32" in line for line in lines)
    assert "9.68× fewer MACs" in out and CONVENTION in out


def test_cost_json_round_trips(capsys):
    code, out, _ = run(capsys, "cost", "--input-size", "192x28x28", "--conv", "5x5:32",
                       "--reduce", "16", "--json", "-")
    assert code == 0
    d = json.loads(out)
    ref = reduction_cost(192, 32, 5, 16, input_size=28)
    assert d["direct"] == ref.direct.as_dict() and d["direct"]["macs"] == 120_422_400
    assert d["reduced"]["macs"] == 12_443_648 and d["reduced"]["weights"] == 15_872
    assert d["reduce"] == ref.reduce.as_dict() and d["conv"] == ref.conv.as_dict()
    assert round(d["ratio"], 2) == 9.68 and d["saved_macs"] == 120_422_400 - 12_443_648
    assert d["padding"] == [2, 2] and d["convention"] == CONVENTION


def test_cost_other_shapes(capsys):
    code, out, _ = run(capsys, "cost", "--input-size", "2x512x14x14", "--conv", "3x3:128",
                       "--reduce", "64", "--stride", "2", "--count-bias", "--json", "-")
    assert code == 0
    d = json.loads(out)
    # by formula: 7×7 outputs of a stride-2 3×3 conv, 2 images, biases counted
    assert d["direct"]["macs"] == 2 * 7 * 7 * 128 * 512 * 9
    assert d["direct"]["params"] == 128 * 512 * 9 + 128
    assert d["reduce"]["macs"] == 2 * 14 * 14 * 64 * 512
    assert d["conv"]["macs"] == 2 * 7 * 7 * 128 * 64 * 9
    code, out, _ = run(capsys, "cost", "--input-size", "64x56x56", "--conv", "3:64")
    assert code == 0 and "with reduction" not in out
    assert f"{conv_cost(64, 64, 3, input_size=56, padding=1).macs:,}" in out


@pytest.mark.parametrize("argv, fragment", [
    (("--input-size", "28x28", "--conv", "5x5:32"), "--input-size"),
    (("--input-size", "28x28xq", "--conv", "5x5:32"), "CxHxW"),
    (("--input", "28x28x192", "--conv", "5x5:32"), "--input-size 192x28x28"),
    (("--input-size", "192x28x28", "--conv", "5x5"), "5x5:32"),
    (("--input-size", "192x28x28", "--conv", "0x5:32"), "--conv"),
    (("--input-size", "8x4x4", "--conv", "5x5:0"), "output channels"),
])
def test_cost_errors_are_one_line(capsys, argv, fragment):
    assert_one_line_error(*run(capsys, "cost", *argv), fragment)


# -------------------------------------------------------------------------------- models
def test_models_lists_matching_names(capsys):
    code, out, _ = run(capsys, "models", "*resnet*")
    assert code == 0
    assert out.split() == ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
                           "resnet_digits"]
    code, out, _ = run(capsys, "models")
    assert code == 0 and out.split() == pm.names()
    assert_one_line_error(*run(capsys, "models", "xyz*"), "'xyz*'")


# ------------------------------------------------------------------------------- analyze
def test_analyze_table(capsys):
    code, out, err = run(capsys, "analyze", "squeezenet1_1")
    assert code == 0 and err == ""
    model = pm.create("squeezenet1_1")
    assert f"{sum(p.numel() for p in model.parameters()):,} params" in out
    assert CONVENTION in out and "1×1 convs:" in out and "features.3.squeeze" in out


def test_analyze_json_and_group_depth(capsys):
    code, out, _ = run(capsys, "analyze", "googlenet", "--json", "-", "--group-depth", "1",
                       "--savings")
    assert code == 0
    d = json.loads(out)
    assert d["totals"]["params"] == sum(p.numel() for p in pm.create("googlenet").parameters())
    groups = {g["name"]: g for g in d["groups"]}
    assert groups["inception3a"]["macs"] == 128_049_152
    assert groups["inception3a"]["output"] == [1, 256, 28, 28]
    by = {g["name"]: g for g in d["savings_by_group"]}
    assert by["inception3a"]["macs_without"] > 2 * by["inception3a"]["macs"]
    assert len(d["savings"]) == 19  # conv2 → conv3, and two per inception module


def test_analyze_csv(capsys):
    code, out, _ = run(capsys, "analyze", "mobilenet_v1", "--csv", "-")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert sum(int(r["macs"]) for r in rows) == 568_740_352
    assert {r["kind"] for r in rows} >= {"conv 1×1", "depthwise", "conv 3×3", "linear"}
    code, out, _ = run(capsys, "analyze", "mobilenet_v1", "--csv", "-", "--paper")
    flagged = [r for r in csv.DictReader(io.StringIO(out)) if r["flagged"] == "True"]
    assert [(r["row"], r["column"]) for r in flagged] == [("Conv 3×3", "Mult-Adds")]


def test_analyze_paper_views(capsys):
    code, out, _ = run(capsys, "analyze", "googlenet", "--paper")
    assert code == 0
    assert "K = 1024" in out and "M = 10^6" in out and "flagged: 11 cells" in out
    row = next(line for line in out.splitlines() if line.startswith("inception (4a)"))
    assert "364K!" in row and "366.75K" in row and "375,552" in row and "73,608,192" in row
    code, out, _ = run(capsys, "analyze", "resnet50", "--paper", "--json", "-")
    paper = json.loads(out)["paper"]
    (flops,) = paper["rows"]
    assert [f["exact"] for f in flops["figures"]][2] == 3_857_973_248
    assert not any(f["flagged"] for f in flops["figures"])


def test_analyze_png_written_atomically(capsys, tmp_path):
    target = tmp_path / "resnet18.png"
    code, out, err = run(capsys, "analyze", "resnet18", "--png", str(target))
    assert code == 0 and str(target) in err and "resnet18" in out
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["resnet18.png"]  # no temp file left
    code, out, err = run(capsys, "analyze", "resnet18", "--png", str(target / "x.png"))
    assert_one_line_error(code, out, err, "is a file")


def test_analyze_module_attr(capsys, tmp_path, monkeypatch):
    (tmp_path / "mynets.py").write_text(textwrap.dedent("""
        from torch import nn
        from pointwise.nn import Conv1x1

        def build():
            return nn.Sequential(Conv1x1(8, 4), nn.ReLU(), nn.Conv2d(4, 8, 3, padding=1))

        INSTANCE = build()
        MLP = nn.Sequential(nn.Linear(5, 3), nn.ReLU())
        NOT_A_MODEL = 3

        def broken():
            raise RuntimeError("no weights here")
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    code, out, _ = run(capsys, "analyze", "mynets:build", "--input-size", "1x8x16x16",
                       "--json", "-", "--savings")
    assert code == 0
    d = json.loads(out)
    assert d["model"] == "build" and d["totals"]["params"] == 8 * 4 + 4 + 4 * 8 * 9 + 8
    assert d["savings"][0]["direct_macs"] == 16 * 16 * 8 * 8 * 9
    code, out, _ = run(capsys, "analyze", "mynets:INSTANCE", "--input-size", "1x8x16x16")
    assert code == 0 and "INSTANCE, input 1×8×16×16" in out
    code, out, _ = run(capsys, "analyze", "mynets:INSTANCE")  # channels of the first conv
    assert code == 0 and "INSTANCE, input 1×8×224×224" in out
    code, out, _ = run(capsys, "analyze", "mynets:MLP")  # features of the first linear
    assert code == 0 and "MLP, input 1×5" in out
    assert "total: 18 params (15 weights + 3 biases), 15 MACs" in out
    assert_one_line_error(*run(capsys, "analyze", "mynets:NOT_A_MODEL"), "nn.Module")
    assert_one_line_error(*run(capsys, "analyze", "mynets:missing"), "'missing'")
    assert_one_line_error(*run(capsys, "analyze", "mynets:broken"), "no weights here")
    assert_one_line_error(*run(capsys, "analyze", "no_such_module_xyz:f"), "no_such_module_xyz")


@pytest.mark.parametrize("argv, fragments", [
    (("resnt50",), ("unknown model 'resnt50'", "did you mean 'resnet50'")),
    (("resnet18", "--input-size", "1x3xab"), ("--input-size", "1x3x224x224")),
    (("resnet18", "--input-size", "1x4x224x224"), ("3 channels first", "1x4x224x224")),
    (("resnet18", "--input-size", "224x224x3"), ("3 channels first", "--input-size 3x224x224")),
    (("resnet18", "--input", "1x3x224x224"), ("--input-size",)),
    (("resnet18", "--format", "json"), ("--json PATH",)),
    (("squeezenet1_0", "--paper"), ("published table", "googlenet")),
    ((":f",), ("module:attr",)),
])
def test_analyze_errors_are_one_line(capsys, argv, fragments):
    assert_one_line_error(*run(capsys, "analyze", *argv), *fragments)
