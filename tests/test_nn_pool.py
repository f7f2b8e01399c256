"""``pointwise.nn.pool.MaxPool2d``: torch's max_pool2d exactly (a max rounds nothing), on the
kernel for channels-last float32 inference on each instruction set, torch's otherwise, and
swapped in and out by ``convert()`` and ``to_conv2d()``."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from pointwise.nn import _native_torch as NT  # noqa: E402
from pointwise.nn import convert, to_conv2d  # noqa: E402
from pointwise.nn.pool import MaxPool2d  # noqa: E402

F = nn.functional
CL = torch.channels_last
needs_kernels = pytest.mark.skipif(not NT.available(), reason="compiled kernels not used")


def spy(monkeypatch) -> list[int]:
    """Records each call of the kernel."""
    seen: list[int] = []
    real = NT._native._kernel.maxpool_at
    monkeypatch.setattr(NT._native._kernel, "maxpool_at", lambda *a: seen.append(1) or real(*a))
    return seen


@needs_kernels
@pytest.mark.usefixtures("isa")
@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 3), c=st.sampled_from([1, 3, 16, 17, 64, 70]),
       h=st.sampled_from([1, 2, 7, 15, 56, 113]), w=st.sampled_from([1, 4, 9, 112]),
       k=st.integers(1, 4), stride=st.sampled_from([None, 1, 2, 3]), pad=st.integers(0, 2),
       ceil=st.booleans(), view=st.booleans(), seed=st.integers(0, 99))
def test_matches_torch_on_the_kernel(n, c, h, w, k, stride, pad, ceil, view, seed):
    if 2 * pad > k or h + 2 * pad < k or w + 2 * pad < k:
        return  # torch refuses these
    torch.manual_seed(seed)
    x = torch.randn(n, c + 2 * view, h, w).contiguous(memory_format=CL)[:, :c]  # channels
    # contiguous, pixels c + 2 floats apart when a view
    m = MaxPool2d(k, stride, pad, ceil_mode=ceil)
    with torch.no_grad(), pytest.MonkeyPatch.context() as mp:
        seen = spy(mp)
        y = m(x)
    assert seen == [1]
    assert y.is_contiguous(memory_format=CL)
    assert torch.equal(y, F.max_pool2d(x, k, stride, pad, ceil_mode=ceil))


@needs_kernels
def test_nan_wins_and_padding_never_does():
    x = -torch.ones(1, 20, 5, 5) * 1e30  # below any padding value but -inf
    x[0, 3, 0, 0] = math.nan
    x[0, 18, 4, 4] = math.nan  # a channel in the last, masked vector
    x = x.contiguous(memory_format=CL)
    with torch.no_grad():
        y = MaxPool2d(3, 2, 1)(x)
    ref = F.max_pool2d(x, 3, 2, 1)
    assert torch.equal(y.isnan(), ref.isnan()) and y.isnan().sum() == 2
    assert torch.equal(y.nan_to_num(), ref.nan_to_num())


@pytest.mark.parametrize("case", ["grad", "nchw", "float64", "indices", "dilation", "empty"])
def test_what_the_kernel_does_not_take_runs_torch(case, monkeypatch):
    x = torch.randn(2, 8, 9, 9).contiguous(memory_format=CL)
    m = MaxPool2d(3, 2, 1)
    if case == "grad":
        x.requires_grad_(True)
    elif case == "nchw":
        x = x.contiguous()
    elif case == "float64":
        x = x.double()
    elif case == "indices":
        m = MaxPool2d(3, 2, 1, return_indices=True)
    elif case == "dilation":
        m = MaxPool2d(3, 2, 1, dilation=2)
    else:
        x = x[:0]
    seen = spy(monkeypatch) if NT.available() else []
    y = m(x)
    ref = F.max_pool2d(x, 3, 2, 1, dilation=m.dilation, return_indices=m.return_indices)
    assert seen == []
    if case == "indices":
        assert torch.equal(y[0], ref[0]) and torch.equal(y[1], ref[1])
    else:
        assert torch.equal(y, ref)
    if case == "grad":
        y.sum().backward()
        assert x.grad is not None and x.grad.sum() == y.numel()


def test_convert_swaps_it_in_and_to_conv2d_out():
    model = nn.Sequential(nn.Conv2d(3, 8, 7, 2, 3), nn.ReLU(), nn.MaxPool2d(3, 2, 1,
                                                                           ceil_mode=True))
    ours, report = convert(model.eval())
    assert type(ours[2]) is MaxPool2d and report.pools == ["2"]
    assert "2: nn.MaxPool2d -> pointwise.nn.MaxPool2d" in str(report)
    assert (ours[2].kernel_size, ours[2].stride, ours[2].padding, ours[2].ceil_mode) == \
        (3, 2, 1, True)
    back = to_conv2d(ours)
    assert type(back[2]) is nn.MaxPool2d and back[2].ceil_mode
    x = torch.randn(2, 3, 31, 31).contiguous(memory_format=CL)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), model(x), rtol=1e-5, atol=1e-5)
    assert type(convert(nn.MaxPool2d(2).eval())[0]) is MaxPool2d  # the model itself
    assert type(convert(model.eval(), kxk=False)[0][2]) is nn.MaxPool2d
