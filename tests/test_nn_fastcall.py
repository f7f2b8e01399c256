"""``Conv1x1``'s planned inference calls (pointwise.nn._fastcall): the same results as the
general path, a plan per layer and input layout, and every call it cannot run left to the
general path."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from plans import check_copies_and_pickles, spy_at  # noqa: E402
from pointwise.nn import Conv1x1, _fastcall  # noqa: E402
from pointwise.nn import _native_torch as NT  # noqa: E402

F = nn.functional
CL = torch.channels_last
ACTS = {None: lambda t: t, "relu": F.relu, "relu6": F.relu6, "silu": F.silu,
        "hardswish": F.hardswish}


def expected(m: Conv1x1, x: torch.Tensor) -> torch.Tensor:
    z = F.conv2d(x.double(), m.weight.double(), None if m.bias is None else m.bias.double(),
                 m.stride, m.padding, 1, m.groups)
    return ACTS[m.activation](z)


@settings(max_examples=60, deadline=None)
@given(n=st.sampled_from([1, 2]), c=st.sampled_from([3, 16, 64]), f=st.sampled_from([2, 64]),
       h=st.sampled_from([1, 7, 16, 20]), stride=st.sampled_from([1, 2]),
       padding=st.sampled_from([0, 1]), cl=st.booleans(), bias=st.booleans(),
       act=st.sampled_from(sorted(ACTS, key=str)), seed=st.integers(0, 99))
def test_planned_calls_match_torch(n, c, f, h, stride, padding, cl, bias, act, seed):
    torch.manual_seed(seed)
    m = Conv1x1(c, f, stride=stride, padding=padding, bias=bias, activation=act).eval()
    x = torch.randn(n, c, h, h)
    if cl:
        x = x.contiguous(memory_format=CL)
    with torch.no_grad():
        first, second, third = m(x), m(x), m(x)  # the general path, then the plan's
    assert m.__dict__["_plan"].key == _fastcall._key(m, x)
    for y in (first, second, third):
        torch.testing.assert_close(y.double(), expected(m, x), rtol=1e-5, atol=1e-5)
        assert y.is_contiguous(memory_format=CL if cl and h > 1 else torch.contiguous_format) \
            or h == 1


@pytest.mark.skipif(not NT.available(), reason="compiled kernels not used")
@pytest.mark.parametrize("fmt,stride,kind", [(torch.contiguous_format, 1, "cols"),
                                             (CL, 1, "rows"), (CL, 2, "rows")])
def test_batch_1_calls_run_on_the_kernels_by_address(monkeypatch, fmt, stride, kind):
    m = Conv1x1(64, 64, stride=stride, activation="relu").eval()
    x = torch.randn(1, 64, 32, 32).contiguous(memory_format=fmt)
    seen = spy_at(monkeypatch, "rows_at", "cols_at")
    with torch.no_grad():
        m(x)
        assert seen == [] and m._plan.kind == kind  # the first call: the general path
        y = m(x)
    assert seen == [f"{kind}_at"]
    torch.testing.assert_close(y.double(), expected(m, x), rtol=1e-5, atol=1e-5)


def test_a_plan_follows_the_module_and_the_input():
    m = Conv1x1(16, 32).eval()
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        m(x)
        key = m._plan.key
        m.activation = "relu"  # as convert() sets it
        torch.testing.assert_close(m(x).double(), expected(m, x), rtol=1e-5, atol=1e-5)
        assert m._plan.key != key
        m.double()
        torch.testing.assert_close(m(x.double()), expected(m, x), rtol=1e-9, atol=1e-9)
        m.float()
        m.weight = nn.Parameter(torch.randn(32, 16, 1, 1).contiguous(memory_format=CL))
        torch.testing.assert_close(m(x).double(), expected(m, x), rtol=1e-5, atol=1e-5)
        with pytest.raises(ValueError, match="to have 16 channels"):
            m(torch.randn(2, 8, 8, 8))  # still checked once the shape is new


def test_calls_a_plan_cannot_run_take_the_general_path():
    m = Conv1x1(16, 2).eval()
    x = torch.randn(1, 16, 8, 8)
    with torch.no_grad():
        m(x)
        m(x)
    y = m(x)  # autograd on: differentiable
    assert y.requires_grad
    y.sum().backward()
    assert m.weight.grad is not None
    g = torch.func.grad(lambda t: m(t).sum())(x)  # torch.func's tensors
    want = torch.func.grad(lambda t: F.conv2d(t, m.weight, m.bias).sum())(x)
    torch.testing.assert_close(g, want)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert m(x).dtype == torch.bfloat16


def test_a_module_with_a_plan_copies_and_pickles():
    m = Conv1x1(16, 32).eval()
    x = torch.randn(1, 16, 16, 16).contiguous(memory_format=CL)
    check_copies_and_pickles(m, x, expected)


@pytest.mark.parametrize("fmt", [torch.contiguous_format, CL])
def test_tracing_a_planned_model_records_standard_convs(fmt):
    model = nn.Sequential(Conv1x1(8, 64, activation="relu"), Conv1x1(64, 64)).eval()
    x = torch.randn(1, 8, 16, 16).contiguous(memory_format=fmt)
    with torch.no_grad():
        model(x)
        want = model(x)  # the planned calls
    assert all(m._plan.kind for m in model)
    traced = torch.jit.trace(model, x)
    assert str(traced.inlined_graph).count("aten::_convolution") == 2
    torch.testing.assert_close(traced(x), want, rtol=1e-5, atol=1e-5)


def with_residual(m: Conv1x1, x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    z = F.conv2d(x.double(), m.weight.double(), None if m.bias is None else m.bias.double(),
                 m.stride, m.padding, 1, m.groups)
    return ACTS[m.activation](z + r.double())


@settings(max_examples=40, deadline=None)
@given(n=st.sampled_from([1, 2]), c=st.sampled_from([16, 64, 512]),
       f=st.sampled_from([24, 512]), h=st.sampled_from([1, 7, 12]),
       stride=st.sampled_from([1, 2]), cl=st.booleans(), rcl=st.booleans(),
       act=st.sampled_from(sorted(ACTS, key=str)), seed=st.integers(0, 99))
def test_planned_calls_with_a_residual_match_torch(n, c, f, h, stride, cl, rcl, act, seed):
    torch.manual_seed(seed)
    m = Conv1x1(c, f, stride=stride, activation=act).eval()
    x = torch.randn(n, c, h, h)
    x = x.contiguous(memory_format=CL) if cl else x
    ho = (h - 1) // stride + 1
    r = torch.randn(n, f, ho, ho)
    r = r.contiguous(memory_format=CL) if rcl else r
    with torch.no_grad():
        ys = [m(x, residual=r) for _ in range(3)]  # the general path, then the plan's
    assert m.__dict__["_plan"].key == _fastcall._key(m, x, r)
    for y in ys:
        torch.testing.assert_close(y.double(), with_residual(m, x, r), rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not NT.available(), reason="compiled kernels not used")
@pytest.mark.parametrize("c,stride,kind", [(64, 1, "rows"), (64, 2, "rows"),
                                           (512, 1, "taps"), (512, 2, "taps")])
def test_calls_with_a_residual_run_on_the_kernels_by_address(monkeypatch, c, stride, kind):
    m = Conv1x1(c, 512, stride=stride, activation="relu").eval()  # 512·512 = 2^18: taps
    x = torch.randn(1, c, 13, 13).contiguous(memory_format=CL)
    ho = 7 if stride == 2 else 13
    r = torch.randn(1, 512, ho, ho).contiguous(memory_format=CL)
    seen = spy_at(monkeypatch, "rows_at", "taps_at")
    with torch.no_grad():
        m(x, residual=r)
        assert seen == [] and m._plan.kind == kind  # the first call: the general path
        y = m(x, residual=r)
        assert seen == [f"{kind}_at"]
        torch.testing.assert_close(y.double(), with_residual(m, x, r), rtol=1e-5, atol=1e-5)
        m.weight.mul_(-1)  # an edit in place: read again by the next call
        y2 = m(x, residual=r)
    assert seen == [f"{kind}_at"] * 2
    torch.testing.assert_close(y2.double(), with_residual(m, x, r), rtol=1e-5, atol=1e-5)


def test_a_residual_of_another_layout_or_dtype_is_a_new_plan():
    m = Conv1x1(64, 64, activation="relu").eval()
    x = torch.randn(1, 64, 16, 16).contiguous(memory_format=CL)
    r = torch.randn(1, 64, 16, 16)
    with torch.no_grad():
        m(x, residual=r.contiguous(memory_format=CL))
        key = m._plan.key
        y = m(x, residual=r)  # NCHW: added by torch after the kernel
        assert m._plan.key != key
        torch.testing.assert_close(y.double(), with_residual(m, x, r), rtol=1e-5, atol=1e-5)
        y = m(x, residual=r.contiguous(memory_format=CL))
        torch.testing.assert_close(y.double(), with_residual(m, x, r), rtol=1e-5, atol=1e-5)
        y = m(x)  # no residual: a plan of its own
        torch.testing.assert_close(y.double(), expected(m, x), rtol=1e-5, atol=1e-5)
        with pytest.raises(TypeError, match="dtype"):
            m(x, residual=r.double())  # still checked once the key is new
    rg = r.contiguous(memory_format=CL).requires_grad_()
    y = m(x, residual=rg)  # autograd: the general path, gradient to the residual
    y.sum().backward()
    assert rg.grad is not None and rg.grad.shape == r.shape
