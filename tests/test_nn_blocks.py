"""FusedInvertedResidual and FusedDepthwiseSeparable: convert() swaps MobileNet's blocks for
them, they match float64 torch, fall back to their convs where the fused kernel can't run,
and to_conv2d turns them back into torch's modules."""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")

import pointwise.models as pm  # noqa: E402
from oracle import randomize_bn  # noqa: E402
from pointwise.kernels import native as _native  # noqa: E402
from pointwise.models.mobilenet import DepthwiseSeparable, InvertedResidual  # noqa: E402
from pointwise.nn import (  # noqa: E402
    Conv1x1,
    Conv2d,
    FusedDepthwiseSeparable,
    FusedInvertedResidual,
    convert,
    to_conv2d,
)

CL = torch.channels_last


def calls(monkeypatch):
    """The (stride, residual) of every call the fused kernel took (returned True for)."""
    seen = []
    real = _native.block

    def spy(*a, **k):
        ok = real(*a, **k)
        if ok:
            seen.append(a[-2:])
        return ok

    monkeypatch.setattr(_native, "block", spy)
    return seen


def close(y, ref, tol=1e-4):
    assert y.shape == ref.shape
    if ref.numel() == 0:
        return
    scale = float(ref.abs().max())
    assert float((y.double() - ref).abs().max()) <= tol * max(scale, 1.0)


@pytest.mark.parametrize("c, f, s, t", [(24, 24, 1, 6), (24, 40, 2, 6), (32, 16, 1, 1),
                                        (16, 16, 1, 4), (40, 40, 2, 4)])
@pytest.mark.parametrize("n", [0, 1, 3])
def test_inverted_residual_block_is_swapped_and_matches(monkeypatch, c, f, s, t, n):
    torch.manual_seed(c + f + s + t)
    block = randomize_bn(InvertedResidual(c, f, s, t))
    fused, report = convert(block)
    assert isinstance(fused, FusedInvertedResidual) and report.blocks == ["(model)"]
    assert fused.residual == (s == 1 and c == f) and (fused.expand is None) == (t == 1)
    seen = calls(monkeypatch)
    x = torch.randn(n, c, 15, 15).contiguous(memory_format=CL)
    with torch.inference_mode():
        ref = copy.deepcopy(block).double()(x.double())
        y = fused(x)
    assert y.shape == ref.shape
    close(y, ref)
    assert seen == ([(s, fused.residual)] if _native.ENABLED and n else [])


def test_depthwise_separable_block_is_swapped_and_matches(monkeypatch):
    torch.manual_seed(1)
    block = randomize_bn(DepthwiseSeparable(24, 40, 2))
    fused, _ = convert(block)
    assert isinstance(fused, FusedDepthwiseSeparable)
    assert fused.acts == (None, "relu", "relu")
    seen = calls(monkeypatch)
    x = torch.randn(3, 24, 113, 113).contiguous(memory_format=CL)
    with torch.inference_mode():
        close(fused(x), copy.deepcopy(block).double()(x.double()))
    assert len(seen) == (1 if _native.ENABLED else 0)


@pytest.mark.parametrize("case", ["nchw", "autograd", "float64"])
def test_everything_else_runs_the_convs(monkeypatch, case):
    torch.manual_seed(2)
    block = randomize_bn(InvertedResidual(16, 16, 1, 6))
    fused, _ = convert(block)
    x = torch.randn(2, 16, 9, 9)
    if case != "nchw":
        x = x.contiguous(memory_format=CL)
    if case == "float64":
        fused, x = fused.double(), x.double()
    seen = calls(monkeypatch)
    with torch.set_grad_enabled(case == "autograd"):
        if case == "autograd":
            x.requires_grad_(True)
        y = fused(x)
    assert seen == []
    with torch.no_grad():
        close(y.detach(), copy.deepcopy(block).double()(x.detach().double()))
    if case == "autograd":
        y.sum().backward()
        assert x.grad is not None


@pytest.mark.parametrize("name, n_blocks", [("mobilenet_v1", 13), ("mobilenet_v2", 17)])
def test_convert_swaps_every_zoo_block_and_to_conv2d_goes_back(name, n_blocks):
    torch.manual_seed(3)
    model = randomize_bn(pm.create(name, num_classes=10))
    fast, report = convert(model)
    kinds = (FusedDepthwiseSeparable, FusedInvertedResidual)
    assert len(report.blocks) == n_blocks
    assert sum(isinstance(m, kinds) for m in fast.modules()) == n_blocks
    x = torch.randn(2, 3, 64, 64).contiguous(memory_format=CL)
    with torch.inference_mode():
        ref = copy.deepcopy(model).double()(x.double())
        close(fast.to(memory_format=CL)(x), ref)
        back = to_conv2d(fast)
        assert not any(isinstance(m, (*kinds, Conv1x1, Conv2d)) for m in back.modules())
        close(back(x), ref)
    assert "fused     block features.1" in str(report)


def test_blocks_left_unfused_without_folding():
    model = randomize_bn(pm.create("mobilenet_v2", num_classes=10))
    new, report = convert(model, fold_batchnorm=False, fuse_activation=False)
    assert report.blocks == []
    assert not any(isinstance(m, FusedInvertedResidual) for m in new.modules())


def test_a_changed_weight_is_read_again():
    torch.manual_seed(4)
    fused, _ = convert(randomize_bn(InvertedResidual(16, 16, 1, 6)))
    x = torch.randn(2, 16, 9, 9).contiguous(memory_format=CL)
    b = fused.project.bias.detach()[:, None, None]
    with torch.inference_mode():
        y0 = fused(x).clone()
    with torch.no_grad():
        fused.project.weight.mul_(2)  # in place: a new version of the same tensor
    with torch.inference_mode():
        y1 = fused(x)
    torch.testing.assert_close(y1, 2 * (y0 - x - b) + b + x, rtol=1e-4, atol=1e-4)


def test_an_edit_through_data_is_seen(monkeypatch):
    """No copy of a weight outlives a call: an edit no version counter sees still counts."""
    torch.manual_seed(5)
    fused, _ = convert(randomize_bn(InvertedResidual(16, 16, 1, 6)))
    x = torch.randn(2, 16, 9, 9).contiguous(memory_format=CL)
    with torch.inference_mode():
        fused(x)
    fused.expand.weight.data.mul_(0.5)  # .data: the parameter's version stays as it was
    fused.dw.weight.data.mul_(2.0)
    with torch.inference_mode():
        y = fused(x)
        ref = to_conv2d(fused)(x)  # torch's modules on the same (edited) weights
    close(y, ref.double())
