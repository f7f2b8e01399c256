"""pointwise.nn.functional.conv1x1: every kernel against the NumPy core, the einsum reference,
F.conv2d and finite differences (gradcheck)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import pointwise as pw
from oracle import reference_conv

torch = pytest.importorskip("torch")
F = torch.nn.functional
PF = pytest.importorskip("pointwise.nn.functional")


pytestmark = pytest.mark.usefixtures("one_torch_thread")

ACTS = [None, "relu", "relu6", "silu", "hardswish"]
FORMATS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}
TORCH_ACTS = {None: lambda t: t, "relu": F.relu, "relu6": F.relu6, "silu": F.silu,
              "hardswish": F.hardswish}


def make(layout, n=2, c=4, f=6, hw=(3, 4), groups=1, bias=True, dtype=torch.float64, seed=0):
    """Random x, weight, bias tensors in ``layout`` with the layout's weight format."""
    g = torch.Generator().manual_seed(seed)
    h, w = hw
    shape = {"NHWC": (n, h, w, c), "HWC": (h, w, c), "NCHW": (n, c, h, w), "CHW": (c, h, w)}
    wshape = (1, 1, c // groups, f) if layout in ("NHWC", "HWC") else (f, c // groups, 1, 1)
    x = torch.randn(shape[layout], generator=g, dtype=dtype)
    wt = torch.randn(wshape, generator=g, dtype=dtype)
    b = torch.randn(f, generator=g, dtype=dtype) if bias else None
    return x, wt, b


def torch_reference(x, w, b, stride, padding, groups, activation):
    """F.conv2d and the activation on (N, C, H, W): the independent torch oracle."""
    return TORCH_ACTS[activation](F.conv2d(x, w, b, stride=stride, padding=padding,
                                           groups=groups))


def kernel_cases():
    """(kernel, stride, padding, groups, bias, activation, memory format), every value of every
    option for every kernel; the kernels that do not support an option get it where they can."""
    cases = []
    differentiable = [k for k in PF.KERNELS if k != "native"]  # native: test_nn_native.py
    for i, (kernel, act, fmt, bias) in enumerate(
        itertools.product(differentiable, ACTS, FORMATS, [True, False])
    ):
        stride = [1, 2, (2, 1)][i % 3]
        if kernel == "addmm":  # one group, no padding (all that choose_kernel asks of it)
            padding, groups = 0, 1
        else:
            padding, groups = [0, 1, (1, 0)][(i // 3) % 3], [1, 2][i % 2]
        cases.append((kernel, stride, padding, groups, bias, act, fmt))
    return cases


@pytest.mark.parametrize("kernel,stride,padding,groups,bias,act,fmt", kernel_cases())
def test_kernel_forward_and_gradcheck(kernel, stride, padding, groups, bias, act, fmt):
    x, w, b = make("NCHW", c=4, f=4, groups=groups, bias=bias, seed=hash((stride, act)) % 97)
    x = x.contiguous(memory_format=FORMATS[fmt]).requires_grad_()
    w.requires_grad_()
    args = (x, w) + ((b.requires_grad_(),) if bias else ())
    st, pd = PF._pair(stride), PF._pair(padding)

    def run(x, w, b=None):
        return PF._run(kernel, x, w, b, st, pd, groups, act)

    y = run(*args)
    ref = torch_reference(x, w, b, st, pd, groups, act)
    torch.testing.assert_close(y, ref, rtol=1e-10, atol=1e-10)
    assert torch.autograd.gradcheck(run, args, eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("layout", ["NHWC", "HWC", "NCHW", "CHW"])
@pytest.mark.parametrize("act", ACTS)
def test_matches_numpy_core_in_every_layout(layout, act):
    """Forward equals the NumPy core (and the einsum reference); grads equal conv1x1_backward."""
    opts = dict(layout=layout, stride=2, padding=1, groups=2, activation=act)
    x, w, b = make(layout, groups=2)
    xg, wg, bg = (t.clone().requires_grad_() for t in (x, w, b))
    y = PF.conv1x1(xg, wg, bg, **opts)
    xn, wn, bn = x.numpy(), w.numpy(), b.numpy()
    y_np = pw.conv1x1(xn, wn, bn, **opts)
    assert isinstance(y, torch.Tensor) and y.dtype == torch.float64
    np.testing.assert_allclose(y.detach().numpy(), y_np, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(y_np, reference_conv(xn, wn, bn, **opts), rtol=1e-12, atol=1e-12)
    g = torch.randn(y.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    (y * g).sum().backward()
    grads = pw.conv1x1_backward(g.numpy(), xn, wn, bias=bn, **opts)
    for ours, ref in zip((xg.grad, wg.grad, bg.grad), grads, strict=True):
        np.testing.assert_allclose(ours.numpy(), ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("fmt", FORMATS)
def test_float32_and_noncontiguous_input(fmt):
    x, w, b = make("NCHW", n=3, c=8, f=5, hw=(6, 7), dtype=torch.float32)
    x = x.contiguous(memory_format=FORMATS[fmt])[:, :, 1:, ::2]  # a strided view
    y = PF.conv1x1(x, w, b, layout="NCHW", activation="relu")
    ref = F.relu(F.conv2d(x, w, b))
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)


def test_integer_tensors_compute_exactly_as_the_core():
    x = torch.arange(24, dtype=torch.int64).reshape(1, 2, 3, 4)  # NHWC
    w = torch.tensor([[1, -2, 3], [4, 5, -6], [7, 8, 9], [-1, 0, 2]], dtype=torch.int64)
    y = PF.conv1x1(x, w, torch.tensor([1, 2, 3]), activation="relu")
    expected = pw.conv1x1(x.numpy(), w.numpy(), np.array([1, 2, 3]), activation="relu")
    assert y.dtype == torch.int64
    assert np.array_equal(y.numpy(), expected)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_types_keep_their_dtype(dtype):
    x, w, b = make("NCHW", dtype=torch.float32)
    y = PF.conv1x1(x.to(dtype), w.to(dtype), b.to(dtype), layout="NCHW")
    assert y.dtype == dtype
    torch.testing.assert_close(y.float(), F.conv2d(x, w, b), rtol=3e-2, atol=5e-2)


def test_empty_batch():
    x, w, b = make("NCHW", n=0)
    assert PF.conv1x1(x, w, b, layout="NCHW").shape == (0, 6, 3, 4)


@pytest.mark.parametrize(
    "args",
    [
        dict(w_shape=(6, 3, 1, 1)),  # wrong C/G
        dict(w_shape=(1, 1, 4, 6)),  # HWIO weight with layout NCHW
        dict(x_shape=(4, 3, 4)),  # 3-D x for NCHW
        dict(w_shape=(6, 2, 1, 1), groups=3),  # groups does not divide C
    ],
)
def test_errors_are_the_numpy_cores(args):
    """Same checks, same words: the messages come from layout.check_forward on stand-ins."""
    x = torch.zeros(args.get("x_shape", (2, 4, 3, 4)))
    w = torch.zeros(args.get("w_shape", (6, 4, 1, 1)))
    opts = dict(layout="NCHW", groups=args.get("groups", 1))
    with pytest.raises(ValueError) as ours:
        PF.conv1x1(x, w, **opts)
    with pytest.raises(ValueError) as core:
        pw.conv1x1(x.numpy(), w.numpy(), **opts)
    assert str(ours.value) == str(core.value)


def test_mixed_float_dtypes_raise_type_error():
    x, w, _ = make("NCHW", dtype=torch.float32)
    with pytest.raises(TypeError, match="share one floating dtype"):
        PF.conv1x1(x, w.double(), layout="NCHW")


def test_bad_activation_suggests_the_close_name():
    x, w, _ = make("NCHW")
    with pytest.raises(ValueError, match="did you mean 'relu6'"):
        PF.conv1x1(x, w, layout="NCHW", activation="relu_6")


def test_out_is_filled_and_returned():
    x, w, b = make("NHWC")
    out = torch.empty(2, 3, 4, 6, dtype=torch.float64)
    res = PF.conv1x1(x, w, b, out=out)
    assert res is out
    torch.testing.assert_close(out, PF.conv1x1(x, w, b))
    with pytest.raises(ValueError, match=r"expected out of shape \(2, 3, 4, 6\)"):
        PF.conv1x1(x, w, b, out=torch.empty(2, 3, 4, 5, dtype=torch.float64))
    with pytest.raises(RuntimeError, match="does not support automatic differentiation"):
        PF.conv1x1(x.requires_grad_(), w, b, out=out)


def test_numpy_and_list_arguments_become_tensors():
    x, w, b = make("NHWC")
    y = PF.conv1x1(x, w.numpy(), b.tolist())
    assert isinstance(y, torch.Tensor)
    torch.testing.assert_close(y, PF.conv1x1(x, w, b))


@pytest.mark.parametrize(
    "dtype,fmt,shape,stride,padding,groups,expected",
    [
        (torch.int64, "nchw", (8, 64, 14, 14), 1, 0, 1, "numpy"),
        (torch.float32, "channels_last", (1, 64, 14, 14), 1, 0, 1, "addmm"),  # 2^20.6 MACs
        (torch.float32, "channels_last", (1, 8, 8, 8), 2, 0, 1, "addmm"),
        (torch.float32, "channels_last", (8, 64, 28, 28), 1, 0, 1, "conv2d"),  # 2^25.6 MACs
        (torch.float64, "channels_last", (1, 256, 1, 1), 1, 0, 1, "addmm"),  # 1×1 image
        (torch.float32, "nchw", (1, 8, 8, 8), 1, 0, 1, "conv2d"),
        (torch.float32, "channels_last", (8, 64, 14, 14), 1, 1, 1, "conv2d"),  # padding
        (torch.float32, "channels_last", (8, 64, 14, 14), 1, 0, 2, "conv2d"),  # groups
        (torch.bfloat16, "channels_last", (8, 64, 14, 14), 1, 0, 1, "conv2d"),  # half
    ],
)
def test_choose_kernel_rule(dtype, fmt, shape, stride, padding, groups, expected):
    """The rule for differentiable calls (inference may take ``native``: test_nn_native.py)."""
    x = torch.empty(shape, dtype=dtype).contiguous(memory_format=FORMATS[fmt])
    w = torch.empty(shape[1] * 2, shape[1] // groups, 1, 1, dtype=dtype)
    got = PF.choose_kernel(x, w, None, (stride, stride), (padding, padding), groups, grad=True)
    assert got == expected


def test_a_validated_signature_is_not_checked_again(monkeypatch):
    """The checks depend on shapes, dtypes and options alone: a repeated signature skips
    them, and any other signature is still checked (and refused when wrong)."""
    calls = []
    real = PF.check_forward

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(PF, "check_forward", counting)
    monkeypatch.setattr(PF, "_CHECKED", {})
    x, w, b = make("NCHW", n=2, c=4, f=6, dtype=torch.float32)
    y1 = PF.conv1x1(x, w, b, layout="NCHW", activation="relu")
    y2 = PF.conv1x1(x * 2, w, b, layout="NCHW", activation="relu")
    assert len(calls) == 1
    torch.testing.assert_close(y2, F.relu(F.conv2d(2 * x, w, b)))
    torch.testing.assert_close(y1, F.relu(F.conv2d(x, w, b)))
    with pytest.raises(ValueError, match="expected bias of shape"):
        PF.conv1x1(x, w, b[:-1], layout="NCHW")
    with pytest.raises(ValueError, match="expected residual of shape"):
        PF.conv1x1(x, w, b, layout="NCHW", residual=torch.zeros(1, 6, 3, 4))
    PF.conv1x1(x, w, b, layout="NCHW", out=torch.empty_like(y1))  # out=: checked in full
    assert len(calls) == 4
