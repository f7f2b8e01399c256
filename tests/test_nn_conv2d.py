"""pointwise.nn.Conv2d and convert()'s k×k pass: the taps kernels inside torch models."""

from __future__ import annotations

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import pointwise.models as pm  # noqa: E402
from pointwise.kernels import native as _native  # noqa: E402
from pointwise.models.resnet import BasicBlock, Bottleneck, ResNet  # noqa: E402
from pointwise.nn import (  # noqa: E402
    Conv1x1,
    Conv2d,
    _native_taps,
    convert,
    to_conv2d,
)

F = nn.functional
CL = torch.channels_last
needs_kernels = pytest.mark.skipif(not _native.ENABLED, reason="compiled kernels not used")


def reference(m: nn.Conv2d, x, residual=None, act=None):
    """float64 torch: conv, + residual, activation."""
    z = F.conv2d(x.double(), m.weight.double(), None if m.bias is None else m.bias.double(),
                 m.stride, m.padding, m.dilation, m.groups)
    z = z if residual is None else z + residual.double()
    return {None: z, "relu": F.relu(z), "relu6": F.relu6(z), "silu": F.silu(z)}[act]


def calls(monkeypatch):
    """Records, for each call of the taps kernels (on arrays, or by address once a call is
    planned: ``taps_at``, which takes no packed weight), whether it passed a weight packed
    before (never: every call packs from the weight's own memory)."""
    seen = []
    real = _native.taps
    monkeypatch.setattr(_native, "taps", lambda *a, **k: seen.append(k.get("packed", False))
                        or real(*a, **k))
    if _native._kernel is not None:
        real_at = _native._kernel.taps_at
        monkeypatch.setattr(_native._kernel, "taps_at",
                            lambda *a: seen.append(False) or real_at(*a))
    return seen


def test_same_parameters_keys_and_repr_as_nn_conv2d():
    torch.manual_seed(0)
    ref = nn.Conv2d(8, 16, (3, 5), stride=2, padding=(1, 2), dilation=(1, 2), bias=False)
    torch.manual_seed(0)
    ours = Conv2d(8, 16, (3, 5), stride=2, padding=(1, 2), dilation=(1, 2), bias=False)
    assert ours.state_dict().keys() == ref.state_dict().keys()
    torch.testing.assert_close(ours.weight, ref.weight)  # the same init, draw for draw
    assert repr(ours) == repr(ref)
    assert repr(Conv2d(4, 4, 3, activation="relu6")).endswith("activation='relu6')")
    back = Conv2d.from_conv2d(ref, activation="relu").to_conv2d()
    assert isinstance(back, nn.Sequential) and isinstance(back[1], nn.ReLU)
    assert type(back[0]) is nn.Conv2d and repr(back[0]) == repr(ref)
    torch.testing.assert_close(back[0].weight, ref.weight)


@needs_kernels
@pytest.mark.parametrize("act", [None, "relu", "relu6", "silu"])
@pytest.mark.parametrize("residual", [False, True])
def test_inference_runs_on_the_kernels(monkeypatch, act, residual):
    seen = calls(monkeypatch)
    torch.manual_seed(1)
    m = Conv2d(16, 32, 3, padding=1, activation=act).eval()
    x = torch.randn(2, 16, 20, 20).contiguous(memory_format=CL)
    r = torch.randn(2, 32, 20, 20).contiguous(memory_format=CL) if residual else None
    with torch.inference_mode():
        y = m(x, residual=r)
        y2 = m(x, residual=r)
    assert seen == [False, False]  # on the kernels, the weight packed by each call
    assert y.is_contiguous(memory_format=CL)
    torch.testing.assert_close(y.double(), reference(m, x, r, act), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(y2, y)


@needs_kernels
def test_a_changed_weight_is_seen(monkeypatch):
    m = Conv2d(16, 32, 3, padding=1).eval()
    x = torch.randn(1, 16, 20, 20).contiguous(memory_format=CL)
    with torch.no_grad():
        y0 = m(x)
        m.weight.mul_(2)  # in place: a new version of the same tensor
        y1 = m(x)
        m.load_state_dict(copy.deepcopy(m.state_dict()))
        y2 = m(x)
    torch.testing.assert_close(y1, 2 * y0 - m.bias[:, None, None], rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(y2, y1)


@pytest.mark.parametrize("case", ["autograd", "nchw", "groups", "float64", "tiny"])
def test_everything_else_runs_torch(monkeypatch, case):
    seen = calls(monkeypatch)
    torch.manual_seed(2)
    m = Conv2d(16, 32, 3, padding=1, groups=2 if case == "groups" else 1, activation="relu")
    x = torch.randn(2, 16, 20, 20)
    if case != "nchw":
        x = x.contiguous(memory_format=CL)
    if case == "float64":
        m, x = m.double(), x.double()
    if case == "tiny":
        x = x[:1, :, :4, :4]
    with torch.set_grad_enabled(case == "autograd"):
        y = m(x)
    assert seen == []
    torch.testing.assert_close(y.double(), reference(m, x, act="relu"), rtol=1e-5, atol=1e-5)
    if case == "autograd":
        y.sum().backward()
        assert m.weight.grad is not None


def test_same_and_valid_padding_strings():
    for padding in ("same", "valid"):
        m = Conv2d(16, 32, 4, padding=padding, dilation=2).eval()
        x = torch.randn(1, 16, 23, 23).contiguous(memory_format=CL)
        with torch.inference_mode():
            y = m(x)
        torch.testing.assert_close(y.double(), reference(m, x), rtol=1e-5, atol=1e-5)
    assert _native_taps.padding(m, 23, 23) == (0, 0, 0, 0)


def randomize_bn(model):
    torch.manual_seed(3)
    for mod in model.modules():
        if isinstance(mod, nn.BatchNorm2d):
            with torch.no_grad():
                mod.running_mean.uniform_(-0.2, 0.2)
                mod.running_var.uniform_(0.5, 2)
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.2, 0.2)
    return model


@pytest.mark.parametrize("block", [BasicBlock, Bottleneck])
def test_convert_runs_resnets_on_the_kernels(monkeypatch, block):
    model = randomize_bn(ResNet(block, (1, 2, 1, 1), num_classes=10).eval())  # small, fast
    fast, report = convert(model)
    n_kxk = 1 + 5 * (2 if block is BasicBlock else 1)  # the stem and every 3×3
    assert len(report.kxk) == n_kxk and len(report.shortcuts) == 5
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.modules())
    assert not any("times in forward" in why for _, why in report.skipped)  # all fused
    assert all(isinstance(m, (Conv1x1, Conv2d)) and m.activation is not None
               for n, m in fast.named_modules() if n.endswith(("conv1", "conv2"))
               and n.startswith("layer"))
    seen = calls(monkeypatch)
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        ref = copy.deepcopy(model).double()(x.double())
        y = fast.to(memory_format=CL)(x.contiguous(memory_format=CL))
        y_nchw = convert(model)[0](x)  # NCHW: torch runs the k×k convs
    assert len(seen) >= 1 if _native.ENABLED else seen == []
    scale = float(ref.abs().max())
    assert float((y.double() - ref).abs().max()) <= 1e-4 * scale
    assert float((y_nchw.double() - ref).abs().max()) <= 1e-4 * scale
    with pytest.raises(ValueError, match="fused shortcuts"):
        to_conv2d(fast)


def test_convert_without_kxk_keeps_torch_convs_and_round_trips():
    model = pm.create("resnet18").eval()
    old, report = convert(model, kxk=False)
    assert report.kxk == [] and type(old.conv1) is nn.Conv2d
    assert type(old.layer1[0].conv1) is nn.Conv2d and not old.layer1[0].shortcut_fused
    new, _ = convert(model, fold_batchnorm=False, fuse_activation=False)  # swaps only
    assert type(new.conv1) is Conv2d
    assert new.state_dict().keys() == model.state_dict().keys()
    back = to_conv2d(new)
    assert not any(isinstance(m, Conv2d) for m in back.modules())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(back(x), model(x))
    assert np.isclose(sum(p.numel() for p in back.parameters()), 11689512)


@needs_kernels
@pytest.mark.parametrize("stride", [1, 2])
def test_large_1x1_convs_run_on_the_taps_kernels(monkeypatch, stride):
    seen = calls(monkeypatch)
    torch.manual_seed(4)
    m = Conv1x1(512, 512, stride=stride, activation="relu").eval()  # C·F = 2^18
    x = torch.randn(2, 512, 7, 7).contiguous(memory_format=CL)
    r = torch.randn(2, 512, 4 if stride == 2 else 7, 4 if stride == 2 else 7)
    r = r.contiguous(memory_format=CL)
    with torch.inference_mode():
        y = m(x, residual=r)
        m(x, residual=r)
    assert seen == [False, False]
    ref = F.relu(F.conv2d(x.double(), m.weight.double(), m.bias.double(), stride) + r.double())
    torch.testing.assert_close(y.double(), ref, rtol=1e-5, atol=1e-5)
    small = Conv1x1(64, 64).eval()  # C·F < 2^18: the rows kernel
    with torch.inference_mode():
        small(torch.randn(2, 64, 32, 32).contiguous(memory_format=CL))
    assert seen == [False, False]


# ------------------------------------------------------------------- depthwise 3×3 convs
def dw_calls(monkeypatch):
    seen = []
    real = _native.depthwise
    monkeypatch.setattr(_native, "depthwise", lambda *a, **k: seen.append(a[-1]) or
                        real(*a, **k))
    return seen


@needs_kernels
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("act, residual", [(None, False), ("relu6", False), ("relu", True),
                                           ("silu", False)])
def test_depthwise_inference_runs_on_the_depthwise_kernel(monkeypatch, stride, act, residual):
    seen = dw_calls(monkeypatch)
    torch.manual_seed(4)
    m = Conv2d(40, 40, 3, stride=stride, padding=1, groups=40, activation=act).eval()
    x = torch.randn(3, 40, 15, 15).contiguous(memory_format=CL)
    ho = (15 - 1) // stride + 1
    r = torch.randn(3, 40, ho, ho).contiguous(memory_format=CL) if residual else None
    with torch.inference_mode():
        y = m(x, residual=r)
    assert seen == [stride]
    assert y.is_contiguous(memory_format=CL)
    torch.testing.assert_close(y.double(), reference(m, x, r, act), rtol=1e-5, atol=1e-5)


def test_convert_runs_mobilenets_depthwise_convs_on_the_kernel(monkeypatch):
    for name, n_dw in (("mobilenet_v1", 13), ("mobilenet_v2", 17)):
        model = randomize_bn(pm.create(name, num_classes=10).eval())
        fast, report = convert(model, blocks=False)  # the blocks' fused kernel: test_nn_blocks
        assert len(report.kxk) == n_dw + 1  # the stem too
        dws = [m for m in fast.modules() if isinstance(m, Conv2d) and m.groups > 1]
        assert len(dws) == n_dw and all(m.activation is not None for m in dws)
        seen = dw_calls(monkeypatch)
        x = torch.randn(2, 3, 64, 64).contiguous(memory_format=CL)
        with torch.inference_mode():
            ref = copy.deepcopy(model).double()(x.double())
            y = fast.to(memory_format=CL)(x)
        assert len(seen) == (n_dw if _native.ENABLED else 0)
        assert float((y.double() - ref).abs().max()) <= 1e-4 * float(ref.abs().max())
        back = to_conv2d(convert(model, fold_batchnorm=False, fuse_activation=False)[0])
        assert not any(isinstance(m, Conv2d) for m in back.modules())
        with torch.no_grad():
            torch.testing.assert_close(back(x), model(x))
