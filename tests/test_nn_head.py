"""A network's head on the kernels (pointwise.nn.head): ``Linear`` and ``GlobalAvgPool2d``
against float64, on each instruction set and on torch's path, with every edit to the weight
seen, and the calls they cannot run left to torch."""

from __future__ import annotations

import copy
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from plans import spy_at  # noqa: E402
from pointwise.kernels import native as _native  # noqa: E402
from pointwise.nn import GlobalAvgPool2d, Linear  # noqa: E402
from pointwise.nn import _native_torch as NT  # noqa: E402
from pointwise.nn.head import LINEAR_MAX_BATCH  # noqa: E402

CL = torch.channels_last
KERNELS = pytest.mark.skipif(not NT.available(), reason="compiled kernels not used")


def linear64(m: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    b = None if m.bias is None else m.bias.double()
    return nn.functional.linear(x.double(), m.weight.double(), b)


def check_mean(y: torch.Tensor, x: torch.Tensor) -> None:
    """``y`` is the float64 mean over ``x``'s pixels rounded to float32: within half a float32
    spacing of it (a tie may round either way)."""
    ref = x.double().mean((-2, -1), keepdim=True).numpy()
    got = y.double().numpy()
    assert got.shape == ref.shape
    half = np.spacing(np.abs(ref).astype(np.float32)).astype(np.float64) / 2
    assert np.all(np.abs(got - ref) <= half), np.max(np.abs(got - ref) / half)


# ------------------------------------------------------------------------------------ Linear
@pytest.mark.usefixtures("isa")
@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # the ISA is per test
@given(n=st.sampled_from([0, 1, 3, 17, LINEAR_MAX_BATCH + 5]), c=st.integers(1, 70),
       f=st.integers(1, 45), bias=st.booleans(), lead=st.sampled_from(["2d", "1d", "3d"]),
       layout=st.sampled_from(["contiguous", "rows apart", "transposed"]),
       seed=st.integers(0, 99))
def test_linear_matches_float64(n, c, f, bias, lead, layout, seed):
    torch.manual_seed(seed)
    m = Linear(c, f, bias=bias).eval()
    x = torch.randn(n, c + 3)[:, :c] if layout == "rows apart" else torch.randn(n, c)
    if layout == "transposed":  # channels not contiguous: torch's path
        x = torch.randn(c, n).t()
    if lead == "1d" and n == 1:
        x = x[0]
    elif lead == "3d" and n == 3:
        x = x.contiguous().view(3, 1, c)
    with torch.no_grad():
        y = m(x)
    assert y.shape == (*x.shape[:-1], f) and y.dtype == torch.float32
    torch.testing.assert_close(y.double(), linear64(m, x), rtol=1e-5, atol=1e-5)


@KERNELS
@pytest.mark.parametrize("n, entry", [(1, "linear_at"), (LINEAR_MAX_BATCH, "linear_at"),
                                      (LINEAR_MAX_BATCH + 1, "rows_at")])
def test_linear_runs_on_the_kernel_its_batch_calls_for(monkeypatch, n, entry):
    seen = spy_at(monkeypatch, "linear_at", "rows_at")
    m = Linear(40, 33).eval()
    x = torch.randn(n, 40)
    with torch.no_grad():
        y = m(x)
    assert seen == [entry]
    torch.testing.assert_close(y.double(), linear64(m, x), rtol=1e-5, atol=1e-5)


@KERNELS
@pytest.mark.parametrize("case", ["grad", "float64", "empty", "transposed", "no kernels"])
def test_linear_leaves_what_the_kernels_cannot_run_to_torch(monkeypatch, case):
    seen = spy_at(monkeypatch, "linear_at", "rows_at")
    m = Linear(20, 7)
    x = torch.randn(4, 20)
    if case == "float64":
        m, x = m.double(), x.double()
    elif case == "empty":
        x = x[:0]
    elif case == "transposed":
        x = torch.randn(20, 4).t()
    elif case == "no kernels":  # as POINTWISE_NATIVE=0 leaves them
        monkeypatch.setattr(_native, "_kernel", None)
    y = m(x)
    assert seen == []
    if case == "grad":  # autograd records torch's op, and its gradients are torch's
        y.sum().backward()
        assert m.weight.grad is not None
        torch.testing.assert_close(m.weight.grad, x.sum(0).expand(7, 20))
    torch.testing.assert_close(y.double(), linear64(m, x), rtol=1e-5, atol=1e-5)


def _edit(m: nn.Linear, how: str, g: torch.Generator) -> None:
    new = torch.randn(m.weight.shape, generator=g)
    if how == "data mul":
        m.weight.data.mul_(-2)
    elif how == "data assign":  # a new tensor, new memory
        m.weight.data = new
    elif how == "copy under no_grad":
        with torch.no_grad():
            m.weight.copy_(new)
    elif how == "numpy view":
        m.weight.detach().numpy()[:] = new.numpy()
    elif how == "load_state_dict":
        m.load_state_dict({"weight": new, "bias": torch.randn(m.bias.shape, generator=g)})
    elif how == "optimizer step":
        m.weight.grad = new
        torch.optim.SGD(m.parameters(), lr=1.0).step()
    elif how == "bias data":
        m.bias.data.add_(3.0)


@pytest.mark.parametrize("how", ["data mul", "data assign", "copy under no_grad", "numpy view",
                                 "load_state_dict", "optimizer step", "bias data"])
def test_every_weight_edit_is_seen_by_the_next_call(how):
    g = torch.Generator().manual_seed(3)
    m = Linear(37, 29).eval()
    x = torch.randn(2, 37, generator=g)
    with torch.no_grad():
        before = m(x)
    _edit(m, how, g)
    with torch.no_grad():
        after = m(x)
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after.double(), linear64(m, x), rtol=1e-5, atol=1e-5)


def test_a_weight_swapped_for_another_size_is_never_read_past():
    m = Linear(16, 8).eval()
    m.weight.data = torch.randn(8, 4)  # what in_features no longer says
    with torch.no_grad(), pytest.raises(ValueError, match=r"\(\*, 16\)"):
        m(torch.randn(1, 4))
    with torch.no_grad(), pytest.raises(RuntimeError):  # torch's own complaint
        m(torch.randn(1, 16))


def test_linear_copies_and_pickles_with_a_weight_of_its_own():
    m = Linear(33, 21).eval()
    x = torch.randn(3, 33)
    with torch.no_grad():
        m(x)
        for other in (copy.deepcopy(m), pickle.loads(pickle.dumps(m))):
            assert type(other) is Linear
            other.weight.data.mul_(-1)
            torch.testing.assert_close(other(x).double(), linear64(other, x), rtol=1e-5,
                                       atol=1e-5)
        torch.testing.assert_close(m(x).double(), linear64(m, x), rtol=1e-5, atol=1e-5)


def test_linear_keeps_nn_linears_parameters_and_state_dict():
    torch.manual_seed(0)
    plain = nn.Linear(12, 5)
    m = Linear.from_linear(plain)
    assert m.weight is plain.weight and m.bias is plain.bias
    assert list(m.state_dict()) == list(plain.state_dict()) and repr(m) == "Linear(" \
        "in_features=12, out_features=5, bias=True)"
    back = m.to_conv2d()
    assert type(back) is nn.Linear and back.weight is m.weight
    torch.manual_seed(1)
    a = Linear(12, 5)
    torch.manual_seed(1)
    torch.testing.assert_close(a.weight, nn.Linear(12, 5).weight)  # torch's init


@pytest.mark.parametrize("x, error, match", [
    ([[1.0, 2.0]], TypeError, "expected a torch.Tensor input, but got list"),
    (torch.randn(2, 9), ValueError, r"expected input of shape \(\*, 8\).*got \(2, 9\).*"
                                    r"in_features=9"),
    (torch.tensor(1.0), ValueError, r"expected input of shape \(\*, 8\).*got \(\)"),
])
def test_linear_names_a_bad_input_and_the_fix(x, error, match):
    with torch.no_grad(), pytest.raises(error, match=match):
        Linear(8, 3)(x)


# --------------------------------------------------------------------------- GlobalAvgPool2d
@pytest.mark.usefixtures("isa")
@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # the ISA is per test
@given(n=st.sampled_from([0, 1, 3, 17]), c=st.integers(1, 150), h=st.integers(1, 9),
       w=st.integers(1, 9), layout=st.sampled_from(["channels_last", "strided", "NCHW", "CHW"]),
       scale=st.sampled_from([1.0, 1e-3, 1e4]), seed=st.integers(0, 99))
def test_pool_is_float64s_mean_rounded_once(n, c, h, w, layout, scale, seed):
    torch.manual_seed(seed)
    x = torch.randn(n, c, h, w) * scale + scale  # a mean well away from zero
    if layout == "channels_last":
        x = x.contiguous(memory_format=CL)
    elif layout == "strided":  # every other pixel of a channels-last map: pixels apart
        x = (torch.randn(n, c, 2 * h, 2 * w) * scale + scale).contiguous(
            memory_format=CL)[:, :, ::2, ::2]
    with torch.no_grad():
        y = GlobalAvgPool2d()(x[0] if layout == "CHW" and n else x)
    if layout == "CHW" and n:
        x = x[0]
    assert y.shape == (*x.shape[:-2], 1, 1)
    if layout in ("channels_last", "strided"):  # the kernels' sum: float64's mean
        check_mean(y, x)
    else:  # torch's own
        torch.testing.assert_close(y.double(), x.double().mean((-2, -1), keepdim=True),
                                   rtol=1e-5, atol=1e-5 * scale)


@KERNELS
@pytest.mark.parametrize("case, runs", [("channels_last", True), ("NCHW", False),
                                        ("grad", False), ("no kernels", False)])
def test_pool_runs_on_the_kernel_for_channels_last_inference(monkeypatch, case, runs):
    seen = spy_at(monkeypatch, "mean_at")
    x = torch.randn(2, 40, 5, 5)
    if case != "NCHW":
        x = x.contiguous(memory_format=CL)
    if case == "grad":
        x.requires_grad_(True)
    if case == "no kernels":
        monkeypatch.setattr(_native, "_kernel", None)
    y = GlobalAvgPool2d()(x)
    assert seen == (["mean_at"] if runs else [])
    if case == "grad":
        y.sum().backward()
        torch.testing.assert_close(x.grad, torch.full_like(x, 1 / 25))
    torch.testing.assert_close(y.double(), x.double().mean((2, 3), keepdim=True), rtol=1e-6,
                               atol=1e-6)


@pytest.mark.parametrize("x, error, match", [
    ("an image", TypeError, "expected a torch.Tensor input, but got str"),
    (torch.randn(2, 8), ValueError, r"expected input of shape \(N, C, H, W\) or \(C, H, W\), "
                                    r"but got \(2, 8\)"),
])
def test_pool_names_a_bad_input_and_the_fix(x, error, match):
    with torch.no_grad(), pytest.raises(error, match=match):
        GlobalAvgPool2d()(x)


def test_pool_copies_pickles_and_turns_back_into_torchs():
    m = GlobalAvgPool2d()
    x = torch.randn(1, 19, 3, 4).contiguous(memory_format=CL)
    for other in (copy.deepcopy(m), pickle.loads(pickle.dumps(m))):
        with torch.no_grad():
            y = other(x)
        if _native.ENABLED:  # the kernels' sum: float64's mean rounded once
            check_mean(y, x)
        else:  # torch's own
            torch.testing.assert_close(y.double(), x.double().mean((2, 3), keepdim=True))
    back = m.to_conv2d()
    assert type(back) is nn.AdaptiveAvgPool2d and back.output_size == (1, 1)
    assert m.state_dict() == {} and repr(m) == "GlobalAvgPool2d(output_size=(1, 1))"
    with pytest.raises(ValueError, match=r"expected nn.AdaptiveAvgPool2d\(\(1, 1\)\)"):
        GlobalAvgPool2d.from_pool(nn.AdaptiveAvgPool2d(2))


# --------------------------------------------------------------------- POINTWISE_NATIVE set
_SCRIPT = """
import torch
from pointwise.nn import GlobalAvgPool2d, Linear
from pointwise.kernels import native
torch.manual_seed(0)
x = torch.randn(3, 45, 7, 7).contiguous(memory_format=torch.channels_last)
m = Linear(45, 19).eval()
with torch.no_grad():
    y = m(torch.flatten(GlobalAvgPool2d()(x), 1))
ref = torch.nn.functional.linear(x.double().mean((2, 3)), m.weight.double(), m.bias.double())
print(native.ISA, float((y.double() - ref).abs().max()))
"""


def _cpu_runs(isa: str) -> bool:
    """Whether the kernels are built and this CPU runs ``isa`` (the selection is restored)."""
    try:
        from pointwise.kernels import _kernel as kernel
    except ImportError:
        return False
    before = kernel.isa()
    runs = bool(kernel.select(isa))
    kernel.select(before or "none")
    return runs


@pytest.mark.parametrize("value", ["avx2", "0"])
def test_the_head_matches_float64_whatever_pointwise_native_says(value):
    env = {**os.environ, "POINTWISE_NATIVE": value}
    out = subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True,
                         env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    isa, err = out.stdout.split()
    assert isa == ("avx2" if value == "avx2" and _cpu_runs("avx2") else "None")
    assert float(err) < 1e-5
