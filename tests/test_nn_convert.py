"""convert(): replacement, BatchNorm folding, activation fusion, the safety rules, the report."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from pointwise.nn import Conv1x1, ConvertReport, convert  # noqa: E402

F = nn.functional


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def bn(c):
    """A BatchNorm2d with non-trivial statistics and affine parameters."""
    m = nn.BatchNorm2d(c)
    with torch.no_grad():
        m.running_mean.uniform_(-1, 1)
        m.running_var.uniform_(0.5, 2)
        m.weight.uniform_(0.5, 1.5)
        m.bias.uniform_(-0.5, 0.5)
    return m


def assert_same_eval_outputs(original, converted, shape=(2, 8, 9, 9), fmt=None):
    x = torch.randn(shape)
    if fmt is not None:
        x = x.contiguous(memory_format=fmt)
    with torch.no_grad():
        want, got = original(x), converted(x)
    scale = want.abs().max().clamp(min=1)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * scale)


def count(model, kind):
    return sum(type(m) is kind for m in model.modules())


@pytest.mark.parametrize("act", [nn.ReLU, nn.ReLU6, nn.SiLU, nn.Hardswish])
@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last])
def test_sequential_conv_bn_act_with_groups_stride_padding(act, fmt):
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(8, 12, 1, stride=2, padding=1, groups=4, bias=False), bn(12), act(),
        nn.Conv2d(12, 12, 3, padding=1, groups=3), bn(12), nn.ReLU(),  # grouped 3×3: nn.Conv2d
        nn.Conv2d(12, 6, 1, stride=(1, 2), groups=2), bn(6),
    ).eval()
    new, report = convert(model)
    assert_same_eval_outputs(model, new, fmt=fmt)
    assert report.replaced == ["0", "6"]
    assert report.folded == [("0", "1"), ("3", "4"), ("6", "7")]
    assert report.fused == [("0", "2", act_name(act))]
    assert report.inplace == [("3", "5")]  # the 3×3 has no activation: its ReLU runs in place
    assert count(new, nn.BatchNorm2d) == 0 and count(new, Conv1x1) == 2
    assert type(new[3]) is nn.Conv2d and new[5].inplace and not model[5].inplace
    assert new[0].activation == act_name(act) and new[0].bias is not None
    assert new[6].activation is None  # nothing followed it

    only_1x1, report = convert(model, fold_all=False)  # the k×k conv and its BN left alone
    assert_same_eval_outputs(model, only_1x1, fmt=fmt)
    assert report.folded == [("0", "1"), ("6", "7")] and report.inplace == []
    assert count(only_1x1, nn.BatchNorm2d) == 1 and not only_1x1[5].inplace


def act_name(act):
    return {nn.ReLU: "relu", nn.ReLU6: "relu6", nn.SiLU: "silu", nn.Hardswish: "hardswish"}[act]


class Bottleneck(nn.Module):
    """torchvision's ResNet Bottleneck, hand-written: one ReLU module called three times."""

    def __init__(self, c, mid, stride=1):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, mid, 1, bias=False), bn(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride=stride, padding=1, bias=False)
        self.bn2 = bn(mid)
        self.conv3, self.bn3 = nn.Conv2d(mid, c, 1, bias=False), bn(c)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = nn.Sequential(nn.Conv2d(c, c, 1, stride=stride, bias=False), bn(c))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + self.downsample(x))


def test_torchvision_bottleneck_folds_but_never_fuses_the_shared_relu():
    torch.manual_seed(1)
    model = nn.Sequential(Bottleneck(8, 4, stride=2), Bottleneck(8, 4)).eval()
    new, report = convert(model)
    assert_same_eval_outputs(model, new)
    assert len(report.replaced) == 6  # conv1, conv3 and downsample.0 of each block
    assert ("0.conv1", "0.bn1") in report.folded and ("0.conv3", "0.bn3") in report.folded
    assert ("0.downsample.0", "0.downsample.1") in report.folded
    assert ("0.conv2", "0.bn2") in report.folded  # the 3×3, with fold_all
    assert report.fused == []  # the relu is called three times: fusing it would be wrong
    assert ("0.relu", "called 3 times in forward; not fused") in report.skipped
    assert isinstance(new[0].relu, nn.ReLU) and report.inplace == []
    assert report.kxk == ["0.conv2", "1.conv2"]  # the 3×3s, now pointwise.nn.Conv2d
    _, only_1x1 = convert(model, fold_all=False, kxk=False)
    assert ("0.conv2", "0.bn2") not in only_1x1.folded


class PreActivation(nn.Module):
    """Attribute names suggest conv1 → bn1, but forward applies bn1 before conv1."""

    def __init__(self):
        super().__init__()
        self.bn1, self.conv1, self.relu = bn(8), nn.Conv2d(8, 8, 1), nn.ReLU()

    def forward(self, x):
        return self.conv1(self.relu(self.bn1(x)))


class TwoUses(nn.Module):
    """conv → bn → relu, but the conv's output is also used elsewhere."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn, self.act = nn.Conv2d(8, 8, 1), bn(8), nn.ReLU()

    def forward(self, x):
        y = self.conv(x)
        return self.act(self.bn(y)) + y


@pytest.mark.parametrize("cls", [PreActivation, TwoUses])
def test_names_are_not_trusted_only_the_data_flow(cls):
    model = cls().eval()
    new, report = convert(model)
    assert_same_eval_outputs(model, new)
    assert report.folded == [] and report.fused == []
    assert len(report.replaced) == 1 and count(new, nn.BatchNorm2d) == 1


class Branchy(nn.Module):
    """Data-dependent control flow: not traceable as a whole."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(8, 8, 1), bn(8), nn.SiLU())
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        if x.sum() > 0:
            x = -x
        return self.head(self.body(x))


def test_untraceable_module_is_converted_child_by_child_and_reported():
    torch.manual_seed(2)
    model = Branchy().eval()
    new, report = convert(model)
    assert_same_eval_outputs(model, new)
    assert report.folded == [("body.0", "body.1")]
    assert report.fused == [("body.0", "body.2", "silu")]
    assert report.replaced == ["body.0", "head"]
    assert any(name == "(model)" and "not traceable" in why for name, why in report.skipped)


def test_training_mode_refuses_to_fold_with_a_clear_error():
    model = nn.Sequential(nn.Conv2d(8, 8, 1), bn(8)).train()
    with pytest.raises(ValueError, match=r"eval mode.*call model\.eval\(\) first"):
        convert(model)
    eval_model_train_bn = nn.Sequential(nn.Conv2d(8, 8, 1), bn(8)).eval()
    eval_model_train_bn[1].train()
    with pytest.raises(ValueError, match="expected BatchNorm '1' in eval mode"):
        convert(eval_model_train_bn)


def test_without_folding_a_training_model_keeps_outputs_and_gradients():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(8, 16, 1, stride=2), bn(16), nn.ReLU(),
                          nn.Conv2d(16, 4, 1, groups=4), nn.ReLU6()).train()
    new, report = convert(model, fold_batchnorm=False)
    assert report.folded == [] and report.fused == [("3", "4", "relu6")]
    assert new.training and count(new, nn.BatchNorm2d) == 1
    x = torch.randn(4, 8, 6, 6)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = model(xa), new(xb)
    torch.testing.assert_close(yb, ya, rtol=1e-5, atol=1e-5)
    ya.square().sum().backward()
    yb.square().sum().backward()
    torch.testing.assert_close(xb.grad, xa.grad, rtol=1e-4, atol=1e-5)
    for (name, p), q in zip(model.named_parameters(), new.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-5, msg=name)


def test_inplace_and_copy():
    model = nn.Sequential(nn.Conv2d(8, 8, 1), nn.ReLU()).eval()
    new, _ = convert(model)
    assert new is not model and type(model[0]) is nn.Conv2d  # original untouched
    same, _ = convert(model, inplace=True)
    assert same is model and type(model[0]) is Conv1x1 and model[0].activation == "relu"


def test_options_turn_folding_and_fusion_off():
    model = nn.Sequential(nn.Conv2d(8, 8, 1), nn.ReLU()).eval()
    _, report = convert(model, fuse_activation=False)
    assert report.fused == [] and report.replaced == ["0"]
    model = nn.Sequential(nn.Conv2d(8, 8, 1), bn(8), nn.ReLU()).eval()
    new, report = convert(model, fold_batchnorm=False)
    assert report.folded == [] and report.fused == []  # the ReLU follows the BN, not the conv
    assert_same_eval_outputs(model, new)


def test_padding_mode_and_subclasses_are_skipped_and_reported():
    class MyConv(nn.Conv2d):
        def forward(self, x):
            return super().forward(x) * 2

    model = nn.Sequential(nn.Conv2d(8, 8, 1, padding=1, padding_mode="reflect"),
                          MyConv(8, 8, 1), nn.Conv2d(8, 8, 1, dilation=3)).eval()
    new, report = convert(model)
    assert_same_eval_outputs(model, new)
    assert report.replaced == ["2"]  # dilation is irrelevant at 1×1
    reasons = dict(report.skipped)
    assert "padding_mode='reflect'" in reasons["0"] and "subclasses nn.Conv2d" in reasons["1"]


def test_a_conv_held_twice_stays_shared_and_is_not_folded():
    conv = nn.Conv2d(8, 8, 1)
    model = nn.Sequential(conv, bn(8), conv).eval()
    new, report = convert(model)
    assert new[0] is new[2] and isinstance(new[0], Conv1x1)
    assert report.folded == []
    assert_same_eval_outputs(model, new)


def test_existing_conv1x1_and_bn_variants_are_folded():
    torch.manual_seed(4)
    plain = nn.BatchNorm2d(8, affine=False).eval()
    plain.running_var.fill_(2.0)
    model = nn.Sequential(Conv1x1(8, 8, bias=False), plain, nn.Hardswish(),
                          Conv1x1(8, 8), nn.BatchNorm2d(8, track_running_stats=False)).eval()
    new, report = convert(model)
    assert report.replaced == [] and report.folded == [("0", "1")]
    assert report.fused == [("0", "2", "hardswish")]
    assert ("4", "track_running_stats=False: it always uses batch statistics") in report.skipped
    assert_same_eval_outputs(model, new)


def test_a_lone_conv_model_and_the_report_text():
    new, report = convert(nn.Conv2d(8, 4, 1, stride=2).eval())
    assert isinstance(new, Conv1x1) and report.replaced == ["(model)"]
    model = nn.Sequential(nn.Conv2d(8, 8, 1), bn(8), nn.ReLU()).eval()
    _, report = convert(model)
    text = str(report)
    assert isinstance(report, ConvertReport)
    assert text.splitlines()[0] == (
        "convert: 1 replaced, 1 BatchNorm folded, 1 activations fused, 0 shortcuts fused, "
        "0 skipped"
    )
    assert "folded    1 into 0" in text and "fused     2 into 0 (activation='relu')" in text


class ConvTwoUses(nn.Module):
    """A 3×3 conv whose output the activation would overwrite, but the sum still reads."""

    def __init__(self):
        super().__init__()
        self.conv, self.act = nn.Conv2d(8, 8, 3, padding=1), nn.ReLU()

    def forward(self, x):
        y = self.conv(x)
        return self.act(y) + y


def test_an_activation_runs_in_place_only_where_nothing_else_reads_the_conv():
    torch.manual_seed(5)
    model = ConvTwoUses().eval()
    new, report = convert(model)
    assert report.inplace == [] and not new.act.inplace
    assert_same_eval_outputs(model, new)
    model = nn.Sequential(nn.Conv2d(8, 8, 3, groups=8, padding=1), bn(8), nn.ReLU6()).eval()
    new, report = convert(model, kxk=False)  # a depthwise conv left to torch
    assert report.folded == [("0", "1")] and report.inplace == [("0", "2")]
    assert_same_eval_outputs(model, new, fmt=torch.channels_last)
    assert "in place  2 after 0" in str(report)
    new, report = convert(model)  # on the depthwise kernel, the activation fused
    assert report.kxk == ["0"] and report.inplace == [] and new[0].activation == "relu6"
    assert_same_eval_outputs(model, new, fmt=torch.channels_last)
