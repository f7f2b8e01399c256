"""``Conv1x1`` and ``pointwise.nn.Conv2d`` under torch's function transforms (torch.func) and
under autocast: what ``nn.Conv2d`` gives, at every size, on every kernel."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from pointwise.nn import Conv1x1, Conv2d  # noqa: E402
from pointwise.nn import kernels as K  # noqa: E402

CL = torch.channels_last


def _pair(c: int, f: int, seed: int = 0) -> tuple[Conv1x1, nn.Conv2d]:
    torch.manual_seed(seed)
    ours = Conv1x1(c, f).eval()
    ref = nn.Conv2d(c, f, 1).eval()
    ref.load_state_dict(ours.state_dict())
    return ours, ref


# (C, F, N, H, W): a bias of 2 (the tiny-tensor check path), below NATIVE_MIN_MACS, and on
# the compiled kernels were a gradient not needed
TRANSFORM_SIZES = [(16, 2, 1, 8, 8), (64, 64, 1, 16, 16)]


@pytest.mark.parametrize("c,f,n,h,w", TRANSFORM_SIZES)
@pytest.mark.parametrize("fmt", [torch.contiguous_format, CL])
@pytest.mark.parametrize("transform", ["grad", "jacrev", "jacfwd"])
def test_torch_func_derivatives_match_nn_conv2d(c, f, n, h, w, fmt, transform):
    if transform == "jacfwd" and c * h * w > 1024:
        pytest.skip("a forward-mode Jacobian of every input would take a minute")
    ours, ref = _pair(c, f)
    x = torch.randn(n, c, h, w).contiguous(memory_format=fmt)
    if transform == "grad":
        fn = torch.func.grad
        def out(m):
            return lambda t: m(t).sum()
    else:  # a Jacobian of a few outputs, to keep it small
        fn = getattr(torch.func, transform)
        def out(m):
            return lambda t: m(t)[0, :2, :2, :2]
    got = fn(out(ours))(x)
    want = fn(out(ref))(x)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("c,f,n,h,w", TRANSFORM_SIZES)
@pytest.mark.parametrize("fmt", [torch.contiguous_format, CL])
def test_torch_func_vmap_matches_nn_conv2d(c, f, n, h, w, fmt):
    ours, ref = _pair(c, f)
    xs = torch.randn(3, n, c, h, w)
    with torch.no_grad():
        got = torch.func.vmap(ours)(xs)
        want = torch.func.vmap(ref)(xs)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    # the parameters as arguments too, as torch.func.functional_call passes them
    params = dict(ours.named_parameters())
    g = torch.func.grad(lambda p, x: torch.func.functional_call(ours, p, (x,)).sum())
    gw = g(params, xs[0].contiguous(memory_format=fmt))
    assert set(gw) == {"weight", "bias"}
    torch.testing.assert_close(gw["bias"], torch.full((f,), float(n * h * w)))


# sizes on each side of the kernels' thresholds: addmm/conv2d below NATIVE_MIN_MACS, the rows
# and cols kernels above, the taps kernels at C·F >= 2^18
AUTOCAST_SIZES = [(64, 64, 1, 8, 8), (64, 64, 1, 16, 16), (64, 64, 4, 16, 16),
                  (512, 512, 2, 7, 7), (256, 1024, 1, 14, 14)]


@pytest.mark.parametrize("c,f,n,h,w", AUTOCAST_SIZES)
@pytest.mark.parametrize("fmt", [torch.contiguous_format, CL])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_gives_the_dtype_of_nn_conv2d(c, f, n, h, w, fmt, dtype):
    ours, ref = _pair(c, f)
    x = torch.randn(n, c, h, w).contiguous(memory_format=fmt)
    assert n * h * w * c * f >= K.NATIVE_MIN_MACS or h == 8  # the sizes span the threshold
    with torch.no_grad(), torch.autocast("cpu", dtype=dtype):
        got, want = ours(x), ref(x)
    assert got.dtype == want.dtype == dtype
    torch.testing.assert_close(got, want, rtol=0, atol=0)  # the very same computation


@pytest.mark.parametrize("fmt", [torch.contiguous_format, CL])
def test_autocast_conv2d_kxk_gives_the_dtype_of_nn_conv2d(fmt):
    torch.manual_seed(0)
    ours = Conv2d(64, 64, 3, padding=1).eval()
    ref = nn.Conv2d(64, 64, 3, padding=1).eval()
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(2, 64, 14, 14).contiguous(memory_format=fmt)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        got, want = ours(x), ref(x)
    assert got.dtype == want.dtype == torch.bfloat16
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    with torch.no_grad():  # and float32 again outside it
        assert ours(x).dtype == torch.float32


def _jvp(module: nn.Module, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``module(x)`` and its tangent along ``t``, by torch.autograd.forward_ad."""
    import torch.autograd.forward_ad as fw

    with fw.dual_level():
        y = fw.unpack_dual(module(fw.make_dual(x, t)))
        assert y.tangent is not None, "the tangent was dropped"
        return y.primal, y.tangent


@pytest.mark.parametrize("fmt", [torch.contiguous_format, CL])
@pytest.mark.parametrize("grad_mode", [torch.no_grad, torch.enable_grad])
def test_forward_mode_ad_carries_the_tangent_on_every_module(fmt, grad_mode):
    """Sizes the compiled kernels take when no gradient is needed (N=2, 64 channels at 32²:
    above NATIVE_MIN_MACS); a dual tensor must run torch's ops, which carry its tangent."""
    torch.manual_seed(0)
    x = torch.randn(2, 64, 32, 32).contiguous(memory_format=fmt)
    t = torch.randn(2, 64, 32, 32).contiguous(memory_format=fmt)
    ours1, ref1 = _pair(64, 128)
    ours3 = Conv2d(64, 64, 3, padding=1).eval()
    ref3 = nn.Conv2d(64, 64, 3, padding=1).eval()
    ref3.load_state_dict(ours3.state_dict())
    with grad_mode():
        for ours, ref in ((ours1, ref1), (ours3, ref3)):
            ours(x)  # a plain call first: Conv1x1 plans its next calls of this shape
            (y, dy), (y_ref, dy_ref) = _jvp(ours, x, t), _jvp(ref, x, t)
            torch.testing.assert_close(y, y_ref, rtol=1e-4, atol=1e-4)
            torch.testing.assert_close(dy, dy_ref, rtol=1e-4, atol=1e-4)


def test_forward_mode_ad_through_a_fused_mobilenet_block():
    from pointwise.models.mobilenet import InvertedResidual
    from pointwise.nn import FusedInvertedResidual, convert

    torch.manual_seed(0)
    block = InvertedResidual(32, 32, stride=1, expand_ratio=6).eval()
    fused, _ = convert(nn.Sequential(block).eval())
    assert isinstance(fused[0], FusedInvertedResidual)
    x = torch.randn(2, 32, 28, 28).contiguous(memory_format=CL)
    t = torch.randn(2, 32, 28, 28).contiguous(memory_format=CL)
    with torch.no_grad():
        (y, dy), (y_ref, dy_ref) = _jvp(fused, x, t), _jvp(block, x, t)
    torch.testing.assert_close(y, y_ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(dy, dy_ref, rtol=1e-4, atol=1e-4)
