"""convert() and hooks: a module with hooks is left as it is and reported, so that hooks
which change a module's output (or its input) give the converted model the original's
outputs."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import pointwise.models as pm  # noqa: E402
from pointwise.nn import Conv1x1, Conv2d, convert  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _bn(c: int) -> nn.BatchNorm2d:
    m = nn.BatchNorm2d(c)
    with torch.no_grad():
        m.running_mean.uniform_(-1, 1)
        m.running_var.uniform_(0.5, 2)
        m.weight.uniform_(0.5, 1.5)
        m.bias.uniform_(-0.5, 0.5)
    return m


def _model(k: int) -> nn.Sequential:
    """conv (k×k) → BN → ReLU → 1×1 conv → BN → ReLU6."""
    return nn.Sequential(nn.Conv2d(8, 16, k, padding=k // 2), _bn(16), nn.ReLU(),
                         nn.Conv2d(16, 16, 1), _bn(16), nn.ReLU6()).eval()


def _hook(model: nn.Module, where: int, kind: str) -> None:
    m = model[where]
    if kind == "forward":  # changes the module's output
        m.register_forward_hook(lambda mod, args, out: out * 2 + 0.25)
    elif kind == "forward-pre":  # changes its input
        m.register_forward_pre_hook(lambda mod, args: (args[0] - 0.5,))
    elif kind == "forward-kwargs":
        m.register_forward_hook(lambda mod, args, kwargs, out: out.flip(1), with_kwargs=True)
    elif kind == "backward":  # changes nothing forward; converting would still drop it
        m.register_full_backward_hook(lambda mod, gin, gout: None)
    else:
        m.register_full_backward_pre_hook(lambda mod, gout: None)


KINDS = ["forward", "forward-pre", "forward-kwargs", "backward", "backward-pre"]


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("where", range(6))
@pytest.mark.parametrize("kind", KINDS)
def test_hooked_modules_are_left_and_outputs_kept(k, where, kind):
    torch.manual_seed(where)
    model = _model(k)
    _hook(model, where, kind)
    new, report = convert(model)
    x = torch.randn(2, 8, 9, 9)
    for fmt in (torch.contiguous_format, torch.channels_last):
        with torch.no_grad():
            want, got = model(x.contiguous(memory_format=fmt)), new(x.contiguous(memory_format=fmt))
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)
    assert type(new[where]) is type(model[where])  # left as it was, hooks and all
    hooks = new[where]._forward_hooks or new[where]._forward_pre_hooks or \
        new[where]._backward_hooks or new[where]._backward_pre_hooks
    assert len(hooks) == 1
    named = dict(report.skipped)
    assert str(where) in named and "hooks" in named[str(where)]
    assert kind.removesuffix("-kwargs") + " hooks" in named[str(where)]
    # the rest is converted: the chain without the hooked module
    others = [i for i in (0, 3) if i != where]
    assert any(isinstance(new[i], (Conv1x1, Conv2d)) for i in others)
    y = new(x.requires_grad_())  # backward hooks still run where they were registered
    y.sum().backward()


def test_a_block_with_a_hooked_module_keeps_its_shortcut():
    torch.manual_seed(0)
    model = pm.create("resnet50", num_classes=10).eval()
    block = model.layer1[0]
    block.relu.register_forward_hook(lambda mod, args, out: out * 0.5)
    new, report = convert(model)
    assert not getattr(new.layer1[0], "shortcut_fused", False)
    assert new.layer1[1].shortcut_fused  # the others still fuse theirs
    assert ("layer1.0", "a module inside has hooks; its shortcut is not fused") in report.skipped
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(new(x), model(x), rtol=1e-4, atol=1e-4)


def test_a_mobilenet_block_with_a_hooked_module_is_not_fused():
    torch.manual_seed(0)
    model = pm.create("mobilenet_v2", num_classes=10).eval()
    block = model.features[2]
    block.conv[0][0].register_forward_hook(lambda mod, args, out: out + 0.125)
    new, report = convert(model)
    assert type(new.features[2]) is type(block)  # not swapped for a fused module
    assert ("features.2", "a module inside has hooks; the block is not fused") in report.skipped
    assert report.blocks  # the others are
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(new(x), model(x), rtol=1e-4, atol=1e-4)
