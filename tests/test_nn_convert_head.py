"""``convert()``'s head pass (pointwise.nn.convert_head): ``nn.Linear`` and the global
``nn.AdaptiveAvgPool2d`` swapped for the head's modules, state_dicts unchanged, and
``to_conv2d`` giving torch's back."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import pointwise.models as pm  # noqa: E402
from pointwise.nn import GlobalAvgPool2d, Linear, convert, to_conv2d  # noqa: E402

CL = torch.channels_last


def _head(cls: type[nn.Module]) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), cls((1, 1)), nn.Flatten(),
                         nn.Dropout(0.2), nn.Linear(8, 5)).eval()


@pytest.mark.parametrize("name", ["mobilenet_v2", "mobilenet_v1", "resnet18", "googlenet"])
def test_a_zoo_models_head_runs_on_the_kernels_and_matches_float64(name):
    torch.manual_seed(0)
    model = pm.create(name).eval()
    for m in model.modules():  # BN statistics of a trained model, not init's
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 2.0)
    converted, report = convert(model)
    fc = "classifier.1" if name.startswith("mobilenet") else "fc"
    assert report.head == [("avgpool", "nn.AdaptiveAvgPool2d -> GlobalAvgPool2d"),
                           (fc, "nn.Linear -> Linear")]
    assert f"replaced  {fc}: nn.Linear -> Linear" in str(report)
    assert str(report).splitlines()[0].endswith(", 2 head modules replaced")
    assert type(converted.avgpool) is GlobalAvgPool2d
    assert type(converted.get_submodule(fc)) is Linear
    state = converted.state_dict()  # the head's keys and values as they were
    assert [k for k in state if k.startswith(("avgpool", fc))] == [f"{fc}.weight", f"{fc}.bias"]
    assert torch.equal(state[f"{fc}.weight"], model.get_submodule(fc).weight)
    x = torch.randn(1, 3, 64, 64).contiguous(memory_format=CL)
    converted = converted.to(memory_format=CL)
    with torch.no_grad():
        got = converted(x)
        want = model.double()(x.double())
    scale = want.abs().max().item()
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5 * scale)
    # to_conv2d refuses fused shortcuts (ResNet's): a conversion without them
    back = to_conv2d(convert(model, fold_batchnorm=False, fuse_activation=False)[0])
    assert type(back.avgpool) is nn.AdaptiveAvgPool2d
    assert type(back.get_submodule(fc)) is nn.Linear


def test_mobilenet_v2s_pool_is_a_module_with_no_state():
    model = pm.create("mobilenet_v2")
    assert type(model.avgpool) is nn.AdaptiveAvgPool2d
    assert not any(k.startswith("avgpool") for k in model.state_dict())


def test_inplace_keeps_the_parameters_themselves():
    model = _head(nn.AdaptiveAvgPool2d)
    weight = model[5].weight
    converted, _ = convert(model, inplace=True)
    assert converted is model and type(model[5]) is Linear and model[5].weight is weight
    assert type(model[2]) is GlobalAvgPool2d


def test_head_false_and_what_is_never_swapped():
    class MyLinear(nn.Linear):
        pass

    model = nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten(), MyLinear(12, 6),
                          nn.LazyLinear(4), nn.AdaptiveAvgPool1d(1)).eval()
    _, report = convert(model)
    assert report.head == [] and report.skipped == []
    _, report = convert(_head(nn.AdaptiveAvgPool2d), head=False)
    assert report.head == []


def test_a_hooked_linear_is_skipped_and_reported():
    model = _head(nn.AdaptiveAvgPool2d)
    model[5].register_forward_hook(lambda m, a, o: None)
    converted, report = convert(model)
    assert type(converted[5]) is nn.Linear and type(converted[2]) is GlobalAvgPool2d
    assert [n for n, _ in report.skipped] == ["5"] and "hooks" in report.skipped[0][1]


def test_a_linear_held_twice_stays_one_module_and_a_lone_one_is_swapped():
    lin = nn.Linear(5, 5)
    model = nn.Sequential(lin, nn.ReLU(), lin).eval()
    converted, report = convert(model)
    assert converted[0] is converted[2] and type(converted[0]) is Linear
    assert [n for n, _ in report.head] == ["0", "2"]
    alone, report = convert(nn.Linear(3, 2).eval())
    assert type(alone) is Linear and report.head == [("(model)", "nn.Linear -> Linear")]
    assert type(to_conv2d(alone)) is nn.Linear


def test_a_converted_head_still_trains():
    model = _head(nn.AdaptiveAvgPool2d).train()
    converted, _ = convert(model, fold_batchnorm=False)
    x = torch.randn(4, 3, 6, 6).contiguous(memory_format=CL)
    converted(x).square().sum().backward()
    assert all(p.grad is not None for p in converted.parameters())
