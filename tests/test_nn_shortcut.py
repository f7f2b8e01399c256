"""A residual block's last conv writing its output over the shortcut (pointwise.nn._shortcut):
the same results as a fresh output, in the shortcut's memory only where the caller gave it up
and nothing else can see it."""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import pointwise.models as pm  # noqa: E402
from pointwise.nn import Conv1x1, Conv2d, convert  # noqa: E402
from pointwise.nn import _native_torch as NT  # noqa: E402
from pointwise.nn._shortcut import into_residual, may_consume, quiet  # noqa: E402

F = nn.functional
CL = torch.channels_last


def expected(m: nn.Conv2d, x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """float64 torch: relu(conv(x) + bias + r)."""
    z = F.conv2d(x.double(), m.weight.double(), m.bias.double(), m.stride, m.padding)
    return F.relu(z + r.double())


# Conv1x1 on the rows kernel (one K block, and 300 channels: two), on the taps kernel (C·F at
# least 2^18), strided; Conv2d 3×3 (its K blocks: taps × channel blocks).
CASES = [(Conv1x1, 64, 1), (Conv1x1, 300, 1), (Conv1x1, 300, 2), (Conv1x1, 512, 1),
         (Conv2d, 64, 1), (Conv2d, 160, 2)]


@pytest.mark.parametrize("kind,c,stride", CASES)
def test_the_output_is_written_over_a_residual_given_up(kind, c, stride):
    torch.manual_seed(0)
    if kind is Conv1x1:
        m = Conv1x1(c, 512, stride=stride, activation="relu").eval()
    else:
        m = Conv2d(c, 512, 3, stride=stride, padding=1, activation="relu").eval()
    x = torch.randn(2, c, 9, 9).contiguous(memory_format=CL)
    ho = 5 if stride == 2 else 9
    r0 = torch.randn(2, 512, ho, ho).contiguous(memory_format=CL)
    with torch.no_grad():
        want = expected(m, x, r0)
        m(x, residual=r0)  # the general path: the plan
        r = r0.clone()
        y = into_residual(m, x, r)
        torch.testing.assert_close(y.double(), want, rtol=1e-5, atol=1e-5)
        assert y.is_contiguous(memory_format=CL)
        # on the kernels, the residual's memory holds the output; elsewhere, a fresh tensor
        assert (y.data_ptr() == r.data_ptr()) == NT.available()
        torch.testing.assert_close(m(x, residual=r0).double(), want, rtol=1e-5, atol=1e-5)


def test_a_residual_sharing_the_input_memory_is_not_written():
    m = Conv1x1(64, 64, activation="relu").eval()
    x = torch.randn(1, 64, 16, 16).contiguous(memory_format=CL)
    before = x.clone()
    with torch.no_grad():
        m(x, residual=x)
        y = into_residual(m, x, x)  # x is read by the conv while the output is written
    torch.testing.assert_close(x, before)
    assert y.data_ptr() != x.data_ptr()
    torch.testing.assert_close(y.double(), expected(m, x, x), rtol=1e-5, atol=1e-5)


def test_only_a_plain_inference_call_without_hooks_may_consume():
    relu = nn.ReLU()
    x = torch.randn(1, 2, 3, 3)
    assert not may_consume(x)  # autograd on
    with torch.no_grad():
        assert may_consume(x) and quiet(relu) and quiet(None)
        assert not may_consume(nn.Parameter(x))  # a subclass
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert not may_consume(x)
        h = relu.register_forward_pre_hook(lambda *a: None)
        assert not quiet(relu)
        h.remove()
        h = nn.modules.module.register_module_forward_hook(lambda *a: None)
        try:
            assert not may_consume(x)
        finally:
            h.remove()
        assert may_consume(x) and quiet(relu)


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_a_converted_resnet_keeps_what_its_hooks_saw(name):
    torch.manual_seed(0)
    model = pm.create(name, num_classes=10).eval()
    fast = convert(copy.deepcopy(model))[0].to(memory_format=CL)
    x = torch.randn(1, 3, 64, 64).contiguous(memory_format=CL)
    with torch.inference_mode():
        ref = model.double()(x.double())
        fast(x)
        y = fast(x)  # planned: every block's output over its shortcut
        saved: list[tuple[torch.Tensor, torch.Tensor]] = []
        hooks = [b.register_forward_hook(lambda m, a, out: saved.append((out, out.clone())))
                 for stage in (fast.layer1, fast.layer2) for b in stage]
        y_hooked = fast(x)
        for h in hooks:
            h.remove()
    scale = float(ref.abs().max())
    assert float((y.double() - ref).abs().max()) <= 1e-4 * scale
    torch.testing.assert_close(y_hooked, y)
    assert len(saved) == len(hooks)
    for out, copy_then in saved:  # no later block wrote over an output a hook kept
        torch.testing.assert_close(out, copy_then, rtol=0, atol=0)
    block = fast.layer1[1]  # called on its own: its input is the caller's, left alone
    xb = torch.randn(1, block.conv1.in_channels, 16, 16).contiguous(memory_format=CL)
    before = xb.clone()
    with torch.inference_mode():
        block(xb)
        block(xb)
    torch.testing.assert_close(xb, before, rtol=0, atol=0)


@pytest.mark.parametrize("where", ["conv3", "conv1", "downsample", "block", "stage"])
def test_no_hook_anywhere_sees_a_tensor_change_afterwards(where):
    torch.manual_seed(1)
    model = pm.create("resnet50", num_classes=10).eval()
    fast = convert(model)[0].to(memory_format=CL)
    x = torch.randn(1, 3, 64, 64).contiguous(memory_format=CL)
    target = {"conv3": fast.layer1[0].conv3, "conv1": fast.layer1[1].conv1,
              "downsample": fast.layer2[0].downsample, "block": fast.layer1[1],
              "stage": fast.layer1}[where]
    kept: list[tuple[torch.Tensor, torch.Tensor]] = []

    def keep(m, args, out):
        for t in (*args, out):
            if isinstance(t, torch.Tensor):
                kept.append((t, t.clone()))

    with torch.inference_mode():
        want = fast(x)
        fast(x)  # planned
        h = target.register_forward_hook(keep)
        y = fast(x)
        h.remove()
    torch.testing.assert_close(y, want)
    assert kept
    for t, then in kept:
        torch.testing.assert_close(t, then, rtol=0, atol=0)
