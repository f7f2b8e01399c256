"""``Conv2d``'s planned inference calls (pointwise.nn._fasttaps): the same results as the
general path, a plan per layer, input and residual layout, every edit of the weight seen, and
every call a plan cannot run left to the general path."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from plans import check_copies_and_pickles  # noqa: E402
from pointwise.nn import Conv2d, _fasttaps, _native_taps  # noqa: E402
from pointwise.nn import _native_torch as NT  # noqa: E402

F = nn.functional
CL = torch.channels_last
ACTS = {None: lambda t: t, "relu": F.relu, "relu6": F.relu6, "silu": F.silu}
needs_kernels = pytest.mark.skipif(not NT.available(), reason="compiled kernels not used")


def expected(m: Conv2d, x: torch.Tensor, r: torch.Tensor | None = None) -> torch.Tensor:
    """float64 torch: conv, + residual, activation."""
    z = F.conv2d(x.double(), m.weight.double(), None if m.bias is None else m.bias.double(),
                 m.stride, m.padding, m.dilation, m.groups)
    return ACTS[m.activation](z if r is None else z + r.double())


def spy(monkeypatch) -> list[str]:
    """Records each call of the taps kernels: on arrays (``taps``) or by address."""
    seen: list[str] = []
    real, real_at = NT._native.taps, NT._native._kernel.taps_at
    monkeypatch.setattr(NT._native, "taps", lambda *a, **k: seen.append("taps") or real(*a, **k))
    monkeypatch.setattr(NT._native._kernel, "taps_at",
                        lambda *a: seen.append("taps_at") or real_at(*a))
    return seen


@needs_kernels
@settings(max_examples=40, deadline=None)
@given(n=st.sampled_from([1, 2]), c=st.sampled_from([8, 24]), f=st.sampled_from([16, 40]),
       k=st.sampled_from([1, 3, 5]), h=st.sampled_from([9, 16]),
       stride=st.sampled_from([1, 2]), padding=st.sampled_from([0, 1, 2, "same"]),
       dilation=st.sampled_from([1, 2]), bias=st.booleans(), residual=st.booleans(),
       view=st.booleans(), act=st.sampled_from(sorted(ACTS, key=str)),
       seed=st.integers(0, 99))
def test_planned_calls_match_torch(n, c, f, k, h, stride, padding, dilation, bias, residual,
                                   view, act, seed):
    if padding == "same":
        stride = 1  # torch allows "same" at stride 1 only
    torch.manual_seed(seed)
    m = Conv2d(c, f, k, stride=stride, padding=padding, dilation=dilation, bias=bias,
               activation=act).eval()
    x = torch.randn(n, c, h + 1, h + 1).contiguous(memory_format=CL)
    x = x[:, :, 1:, :h] if view else x[:, :, :h, :h]  # a view: rows h + 1 pixels apart
    with torch.no_grad(), pytest.MonkeyPatch.context() as mp:
        mp.setattr(_native_taps, "NATIVE_MIN_MACS", 0)  # small convs on the kernels too
        shape = F.conv2d(x, m.weight, None, stride, padding, dilation).shape
        r = torch.randn(shape).contiguous(memory_format=CL) if residual else None
        ys = [m(x, residual=r) for _ in range(3)]  # the general path, then the plan's
    assert m._plan.kind == "taps" and m._plan.key == _fasttaps._key(m, x, r)
    for y in ys:
        torch.testing.assert_close(y.double(), expected(m, x, r), rtol=1e-5, atol=1e-5)


@needs_kernels
@pytest.mark.usefixtures("isa")
@pytest.mark.parametrize("k, f, act", [(3, 32, "relu6"), (7, 64, "relu")])
@pytest.mark.parametrize("n, h", [(0, 15), (1, 7), (3, 15), (1, 113), (1, 225)])
def test_planned_stems_match_torch(k, f, act, n, h):
    # the zoo's first convs (3 channels, stride 2) on a channels_last batch, on each
    # instruction set: planned from the second call on, unless the batch is empty
    torch.manual_seed(h)
    m = Conv2d(3, f, k, stride=2, padding=k // 2, activation=act).eval()
    x = torch.randn(n, 3, h, h).contiguous(memory_format=CL)
    with torch.no_grad(), pytest.MonkeyPatch.context() as mp:
        mp.setattr(_native_taps, "NATIVE_MIN_MACS", 0)  # small convs on the kernels too
        ys = [m(x) for _ in range(3)]
    assert (m.__dict__.get("_plan") is not None and m._plan.kind == "taps") == (n > 0)
    for y in ys:
        torch.testing.assert_close(y.double(), expected(m, x), rtol=1e-5, atol=1e-5)


@needs_kernels
def test_a_planned_call_runs_by_address_and_sees_every_edit(monkeypatch):
    seen = spy(monkeypatch)
    m = Conv2d(16, 32, 3, padding=1, activation="relu").eval()
    x = torch.randn(1, 16, 20, 20).contiguous(memory_format=CL)
    r = torch.randn(1, 32, 20, 20).contiguous(memory_format=CL)
    with torch.inference_mode():
        m(x, residual=r)
        assert seen == ["taps"]  # the first call: the general path
        torch.testing.assert_close(m(x, residual=r).double(), expected(m, x, r), rtol=1e-5,
                                   atol=1e-5)
        assert seen == ["taps", "taps_at"]
        m.weight.mul_(-1)  # in place
        m.bias.add_(1)
        torch.testing.assert_close(m(x, residual=r).double(), expected(m, x, r), rtol=1e-5,
                                   atol=1e-5)
        m.load_state_dict({"weight": torch.randn(32, 16, 3, 3), "bias": torch.randn(32)})
        torch.testing.assert_close(m(x, residual=r).double(), expected(m, x, r), rtol=1e-5,
                                   atol=1e-5)
        assert seen == ["taps", "taps_at", "taps_at", "taps_at"]
        # another weight storage (OHWI, channels_last): a new plan reading its strides
        m.weight = nn.Parameter(m.weight.contiguous(memory_format=CL), requires_grad=False)
        torch.testing.assert_close(m(x, residual=r).double(), expected(m, x, r), rtol=1e-5,
                                   atol=1e-5)
        torch.testing.assert_close(m(x, residual=r).double(), expected(m, x, r), rtol=1e-5,
                                   atol=1e-5)
    assert seen[-2:] == ["taps", "taps_at"]


@needs_kernels
@pytest.mark.parametrize("change", ["shape", "nchw", "float64", "residual nchw",
                                    "no residual", "activation"])
def test_a_different_call_is_not_run_by_the_old_plan(monkeypatch, change):
    m = Conv2d(16, 32, 3, padding=1, activation="relu").eval()
    x = torch.randn(2, 16, 12, 12).contiguous(memory_format=CL)
    r = torch.randn(2, 32, 12, 12).contiguous(memory_format=CL)
    with torch.no_grad():
        m(x, residual=r)
        m(x, residual=r)
        if change == "shape":
            x = torch.randn(1, 16, 20, 20).contiguous(memory_format=CL)
            r = torch.randn(1, 32, 20, 20).contiguous(memory_format=CL)
        elif change == "nchw":
            x = x.contiguous()
        elif change == "float64":
            m, x, r = m.double(), x.double(), r.double()
        elif change == "residual nchw":
            r = r.contiguous()
        elif change == "no residual":
            r = None
        else:
            m.activation = "silu"
        seen = spy(monkeypatch)
        y = m(x, residual=r)
        y2 = m(x, residual=r)
        tol = 1e-9 if change == "float64" else 1e-5
        torch.testing.assert_close(y.double(), expected(m, x, r), rtol=tol, atol=tol)
    torch.testing.assert_close(y2, y)
    if change in ("nchw", "float64"):  # torch's kernels
        assert seen == []
    elif change == "residual nchw":  # on the kernels, the residual added by torch
        assert seen == ["taps", "taps"]
    else:  # a new plan
        assert seen == ["taps", "taps_at"]


@needs_kernels
def test_calls_a_plan_cannot_run_take_the_general_path():
    m = Conv2d(16, 32, 3, padding=1).eval()
    x = torch.randn(1, 16, 16, 16).contiguous(memory_format=CL)
    with torch.no_grad():
        m(x)
        m(x)
    assert m._plan.kind == "taps"
    y = m(x)  # autograd on: differentiable
    assert y.requires_grad
    y.sum().backward()
    assert m.weight.grad is not None
    with torch.no_grad():
        g = torch.func.grad(lambda t: m(t).sum())(x)  # torch.func's tensors
    want = torch.func.grad(lambda t: F.conv2d(t, m.weight, m.bias, padding=1).sum())(x)
    torch.testing.assert_close(g, want)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert m(x).dtype == torch.bfloat16


@needs_kernels
def test_a_module_with_a_plan_copies_and_pickles():
    m = Conv2d(16, 32, 3, padding=1).eval()
    x = torch.randn(1, 16, 16, 16).contiguous(memory_format=CL)
    assert _native_taps.NATIVE_MIN_MACS <= 16 * 16 * 9 * 16 * 32  # on the kernels
    check_copies_and_pickles(m, x, expected)
