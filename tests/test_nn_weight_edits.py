"""Never a stale result: every edit torch allows to a conv's weight or bias, made between two
inference calls of ``Conv1x1`` or ``pointwise.nn.Conv2d``, is seen by the next call.

The kernels read the weight and bias from their own memory on every call, so edits that
torch's version counter does not see (through ``.data``, a NumPy view, ``set_``) count as
much as those it does (``copy_`` under ``no_grad``, ``load_state_dict``, an optimizer step),
and parametrizations and pruning masks, which make a new weight per call, as well.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.nn.utils import parametrize, prune  # noqa: E402

from pointwise.nn import Conv1x1, Conv2d, convert  # noqa: E402
from pointwise.nn import _native_torch as NT  # noqa: E402

F = nn.functional
CL = torch.channels_last


def _new(t: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    return torch.randn(t.shape, generator=g) / t[0].numel() ** 0.5


class _Scale(nn.Module):
    """A parametrization: the stored weight times a factor that may change."""

    def __init__(self) -> None:
        super().__init__()
        self.factor = 1.5

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return w * self.factor


def _param(conv: nn.Module, name: str) -> torch.Tensor:
    """The tensor that holds ``name``'s values: the original under a parametrization or a
    pruning mask, else the parameter."""
    if parametrize.is_parametrized(conv, name):
        return getattr(conv.parametrizations, name).original
    return getattr(conv, f"{name}_orig", None) if hasattr(conv, f"{name}_orig") else \
        getattr(conv, name)


# Each edit changes the weight (or bias) of `conv` in one way torch allows; `g` draws values.
def _data_mul(conv, name, g):
    _param(conv, name).data.mul_(-2)


def _data_copy(conv, name, g):
    p = _param(conv, name)
    p.data.copy_(_new(p, g))


def _data_index(conv, name, g):
    _param(conv, name).data[0] += 3.0


def _numpy_view(conv, name, g):
    p = _param(conv, name)
    p.detach().numpy()[...] = _new(p, g).numpy()


def _copy_no_grad(conv, name, g):
    p = _param(conv, name)
    with torch.no_grad():
        p.copy_(_new(p, g))


def _detach_zero(conv, name, g):
    p = _param(conv, name)
    p.detach().zero_()
    with torch.no_grad():
        p.add_(_new(p, g))


def _data_assign(conv, name, g):
    p = _param(conv, name)
    p.data = _new(p, g)


def _set_storage(conv, name, g):
    p = _param(conv, name)
    p.data.set_(_new(p, g))


def _new_parameter(conv, name, g):
    if parametrize.is_parametrized(conv, name) or hasattr(conv, f"{name}_orig"):
        return _data_assign(conv, name, g)
    setattr(conv, name, nn.Parameter(_new(getattr(conv, name), g)))


def _load_state_dict(conv, name, g):
    state = {k: _new(v, g) if k.split(".")[-1] in (name, f"{name}_orig", "original") and
             v.is_floating_point() else v for k, v in conv.state_dict().items()}
    conv.load_state_dict(state)


def _optimizer_step(conv, name, g):
    p = _param(conv, name)
    p.grad = torch.randn(p.shape, generator=g)
    torch.optim.SGD([p], lr=0.5).step()
    p.grad = None


def _init(conv, name, g):
    nn.init.normal_(_param(conv, name), generator=g)


def _parametrize(conv, name, g):
    if parametrize.is_parametrized(conv, name):
        getattr(conv.parametrizations, name)[0].factor *= -0.5
    elif not hasattr(conv, f"{name}_orig"):
        parametrize.register_parametrization(conv, name, _Scale())


def _prune_mask(conv, name, g):
    if parametrize.is_parametrized(conv, name):
        return _data_mul(conv, name, g)
    if not hasattr(conv, f"{name}_mask"):
        prune.random_unstructured(conv, name, amount=0.5)
    else:
        mask = getattr(conv, f"{name}_mask")
        mask.copy_(torch.rand(mask.shape, generator=g) < 0.5)


EDITS = [_data_mul, _data_copy, _data_index, _numpy_view, _copy_no_grad, _detach_zero,
         _data_assign, _set_storage, _new_parameter, _load_state_dict, _optimizer_step, _init,
         _parametrize, _prune_mask]


def _expected(conv: nn.Module, x: torch.Tensor, act: str | None) -> torch.Tensor:
    """The conv with its weight and bias as they are now, in float64 torch."""
    if hasattr(conv, "weight_mask"):  # pruning recomputes the weight in a forward pre-hook
        conv.weight = conv.weight_orig * conv.weight_mask
    w, b = conv.weight, conv.bias
    z = F.conv2d(x.double(), w.double(), None if b is None else b.double(), conv.stride,
                 conv.padding, 1, conv.groups)
    return F.relu(z) if act == "relu" else z


# (C, F, N, H, W): a weight for the rows kernel, and one for the taps kernels (C·F ≥ 2^18),
# each with enough work for the compiled kernels
SIZES = {"small": (64, 96, 2, 20, 20), "large": (512, 512, 1, 5, 5)}


def _run_edits(conv, act, x, edits, names, seed):
    g = torch.Generator().manual_seed(seed)
    conv.eval()
    with torch.no_grad():
        for edit, name in zip(edits, names, strict=True):
            conv(x)  # the call before the edit, whose state must not outlive it
            edit(conv, name, g)
            y = conv(x)
            torch.testing.assert_close(y.double(), _expected(conv, x, act), rtol=1e-4,
                                       atol=1e-4, msg=lambda m, e=edit, p=name:
                                       f"after {e.__name__}({p}): {m}")


edits = st.lists(st.tuples(st.sampled_from(EDITS), st.sampled_from(["weight", "bias"])),
                 min_size=1, max_size=4)


@settings(max_examples=40, deadline=None)
@given(edits=edits, size=st.sampled_from(sorted(SIZES)), cl=st.booleans(),
       stride=st.sampled_from([1, 2]), fold=st.booleans(), seed=st.integers(0, 2**16))
def test_conv1x1_sees_every_edit(edits, size, cl, stride, fold, seed):
    c, f, n, h, w = SIZES[size]
    torch.manual_seed(seed)
    if fold:  # convert(): the BN folded into the conv's weight and bias, the ReLU fused
        bn = nn.BatchNorm2d(f)
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        model, _ = convert(nn.Sequential(nn.Conv2d(c, f, 1, stride=stride), bn,
                                         nn.ReLU()).eval())
        conv, act = model[0], "relu"
        assert isinstance(conv, Conv1x1) and conv.activation == "relu"
    else:
        conv, act = Conv1x1(c, f, stride=stride), None
    x = torch.randn(n, c, h, w)
    if cl:
        x = x.contiguous(memory_format=CL)
    _run_edits(conv, act, x, [e for e, _ in edits], [p for _, p in edits], seed)


@settings(max_examples=25, deadline=None)
@given(edits=edits, cl=st.booleans(), k=st.sampled_from([1, 3, "depthwise"]),
       seed=st.integers(0, 2**16))
def test_conv2d_sees_every_edit(edits, cl, k, seed):
    torch.manual_seed(seed)
    if k == "depthwise":  # the depthwise kernel's
        conv = Conv2d(32, 32, 3, padding=1, groups=32)
    else:
        conv = Conv2d(32, 48, k, padding=k // 2)
    x = torch.randn(2, 32, 12, 12)
    if cl:
        x = x.contiguous(memory_format=CL)
    _run_edits(conv, None, x, [e for e, _ in edits], [p for _, p in edits], seed)


@pytest.mark.skipif(not NT.available(), reason="compiled kernels not used")
@pytest.mark.parametrize("size", sorted(SIZES))
@pytest.mark.parametrize("edit", [_data_mul, _numpy_view, _data_copy])
def test_the_compiled_kernels_see_an_uncounted_edit(size, edit):
    """The edits torch's version counter misses, on the path that used to cache by it."""
    c, f, n, h, w = SIZES[size]
    conv = Conv1x1(c, f).eval()
    x = torch.randn(n, c, h, w).contiguous(memory_format=CL)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        conv(x)
        version = conv.weight._version
        edit(conv, "weight", g)
        assert conv.weight._version == version  # unseen by the counter
        torch.testing.assert_close(conv(x).double(), _expected(conv, x, None), rtol=1e-4,
                                   atol=1e-4)


@settings(max_examples=20, deadline=None)
@given(edits=st.lists(st.tuples(st.sampled_from(EDITS), st.sampled_from(["weight", "bias"]),
                                st.sampled_from(["expand", "project"])), min_size=1, max_size=3),
       residual=st.booleans(), seed=st.integers(0, 2**16))
def test_a_fused_block_sees_every_edit(edits, residual, seed):
    """convert()'s fused MobileNet blocks read their convs' weights on every call too."""
    from pointwise.models.mobilenet import InvertedResidual
    from pointwise.nn import FusedInvertedResidual

    torch.manual_seed(seed)
    block = InvertedResidual(16, 16 if residual else 24, 1 if residual else 2, 6).eval()
    fused, _ = convert(block)
    assert isinstance(fused, FusedInvertedResidual)
    x = torch.randn(2, 16, 10, 10).contiguous(memory_format=CL)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for edit, name, where in edits:
            fused(x)
            conv = getattr(fused, where)
            if edit in (_parametrize, _prune_mask, _new_parameter):
                edit = _data_copy  # a new module structure is not the block's any more
            edit(conv, name, g)
            want = fused.to_conv2d().eval()(x)
            torch.testing.assert_close(fused(x), want, rtol=1e-4, atol=1e-4,
                                       msg=lambda m, e=edit, n=name, w=where:
                                       f"after {e.__name__}({w}.{n}): {m}")
