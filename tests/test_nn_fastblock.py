"""The fused blocks' planned call (pointwise.nn._fastblock): after a first inference call a
block runs on its tensors' data pointers (``block_at``); the result is the same, every edit
to a weight (a new parameter too) is still seen, and calls the plan does not fit take the
general path."""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from oracle import randomize_bn  # noqa: E402
from pointwise.kernels import native as _native  # noqa: E402
from pointwise.models.mobilenet import DepthwiseSeparable, InvertedResidual  # noqa: E402
from pointwise.nn import _native_torch as _nt  # noqa: E402
from pointwise.nn import convert, to_conv2d  # noqa: E402

CL = torch.channels_last


def close(y: torch.Tensor, ref: torch.Tensor, tol: float = 1e-4) -> None:
    assert y.shape == ref.shape
    scale = float(ref.abs().max())
    assert float((y.double() - ref.double()).abs().max()) <= tol * max(scale, 1.0)


def planned_calls(monkeypatch) -> list:
    """The arguments of every block_at call the kernels answered True to."""
    seen: list = []
    kernel = _native._kernel
    if kernel is None:  # POINTWISE_NATIVE=0 or no build: nothing is ever planned
        return seen
    real = kernel.block_at

    def spy(*a):
        ok = real(*a)
        if ok:
            seen.append(a)
        return ok

    monkeypatch.setattr(kernel, "block_at", spy)
    return seen


BLOCKS = {
    "ir-residual": lambda: InvertedResidual(24, 24, 1, 6),
    "ir-s2": lambda: InvertedResidual(24, 40, 2, 6),
    "ir-t1": lambda: InvertedResidual(32, 16, 1, 1),
    "ds-s1": lambda: DepthwiseSeparable(24, 40, 1),
    "ds-s2": lambda: DepthwiseSeparable(40, 24, 2),
}


@pytest.mark.parametrize("name", sorted(BLOCKS))
@pytest.mark.parametrize("n, hw", [(1, 7), (3, 15), (2, 113)])
def test_the_planned_call_matches_float64(isa, monkeypatch, name, n, hw):
    if not _nt.available():
        pytest.skip("POINTWISE_NATIVE keeps pointwise.nn off the kernels: no plans")
    torch.manual_seed(n + hw)
    block = randomize_bn(BLOCKS[name]())
    fused, _ = convert(block)
    seen = planned_calls(monkeypatch)
    ref_block = copy.deepcopy(block).double()
    with torch.inference_mode():
        for i in range(3):  # the first call plans, the next ones run the plan
            x = torch.randn(n, block_in(block), hw, hw).contiguous(memory_format=CL)
            close(fused(x), ref_block(x.double()))
            assert len(seen) == i
    assert "_plan" in fused.__dict__


def block_in(block: nn.Module) -> int:
    conv = block.conv_dw if isinstance(block, DepthwiseSeparable) else block.conv[0][0]
    return conv.in_channels


def test_a_new_parameter_and_a_data_edit_are_seen_by_the_plan(monkeypatch):
    torch.manual_seed(7)
    fused, _ = convert(randomize_bn(InvertedResidual(16, 16, 1, 6)))
    seen = planned_calls(monkeypatch)
    x = torch.randn(2, 16, 9, 9).contiguous(memory_format=CL)
    with torch.inference_mode():
        fused(x)
    fused.project.weight = nn.Parameter(torch.randn_like(fused.project.weight))
    fused.dw.weight.data.mul_(-1.5)
    fused.expand.bias = nn.Parameter(torch.randn_like(fused.expand.bias))
    with torch.inference_mode():
        y = fused(x)
        ref = to_conv2d(fused)(x)
    close(y, ref)
    assert len(seen) == (1 if _native.ENABLED else 0)


def test_another_layout_or_autograd_leaves_the_plan(monkeypatch):
    torch.manual_seed(8)
    fused, _ = convert(randomize_bn(DepthwiseSeparable(16, 24, 1)))
    seen = planned_calls(monkeypatch)
    x = torch.randn(2, 16, 9, 9).contiguous(memory_format=CL)
    with torch.inference_mode():
        fused(x)
        y_other = fused(x[:1])  # another batch: planned afresh by the general path
        close(y_other, to_conv2d(fused)(x[:1]))
        if _nt.available():
            assert fused.__dict__["_plan"].dims[0] == 1
    fused.requires_grad_(True)
    y = fused(x)  # autograd: the convs, never a plan
    assert y.requires_grad
    y.sum().backward()
    assert fused.project.weight.grad is not None
    assert seen == []


def test_a_pruned_weight_takes_the_general_path(monkeypatch):
    from torch.nn.utils import prune

    torch.manual_seed(9)
    fused, _ = convert(randomize_bn(DepthwiseSeparable(16, 24, 1)))
    x = torch.randn(2, 16, 9, 9).contiguous(memory_format=CL)
    with torch.inference_mode():
        fused(x)
    prune.random_unstructured(fused.project, "weight", amount=0.5)
    seen = planned_calls(monkeypatch)
    with torch.inference_mode():
        fused.project(torch.zeros(1, 16, 1, 1))  # its pre-hook computes the pruned weight
        fused(x)
    assert seen == []


@pytest.mark.parametrize("bad", ["stride", "address", "residual", "sizes"])
def test_block_at_declines_what_it_cannot_address(isa, bad):
    kernel = _native._kernel
    x = torch.randn(1, 4, 4, 8)  # (N, H, W, C)
    we, wd, wp = torch.randn(16, 8), torch.randn(16, 1, 3, 3), torch.randn(8, 16)
    y = torch.empty(16, 8)
    dims = (1, 4, 4, 8, 128, 32, 8)
    args = dict(stride=1, residual=True, xa=x.data_ptr(), dims=dims, n_f=8)
    if bad == "stride":
        args["stride"] = 3
    elif bad == "address":
        args["xa"] = x.data_ptr() + 2
    elif bad == "residual":
        args["stride"] = 2
    else:
        args["dims"] = (1, 4, 4, 8, 128, 32, 4)  # pixels closer than their channels
    ok = kernel.block_at(2, False, (2, 2, 0), args["stride"], args["residual"], args["xa"],
                         args["dims"], we.data_ptr(), 0, wd.data_ptr(), 0, wp.data_ptr(), 0, 16,
                         args["n_f"], y.data_ptr())
    assert ok is False
    good = kernel.block_at(2, False, (2, 2, 0), 1, True, x.data_ptr(), dims, we.data_ptr(), 0,
                           wd.data_ptr(), 0, wp.data_ptr(), 0, 16, 8, y.data_ptr())
    assert good is True
