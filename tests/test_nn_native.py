"""The ``native`` kernel of pointwise.nn.functional (the compiled kernels on torch tensors, on
torch's OpenMP team), the residual argument, fused shortcuts in convert(), and to_conv2d."""

from __future__ import annotations

import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")
F = torch.nn.functional
PF = pytest.importorskip("pointwise.nn.functional")
from pointwise.kernels import native as _native  # noqa: E402
from pointwise.nn import Conv1x1, convert, to_conv2d  # noqa: E402
from pointwise.nn import _native_torch as NT  # noqa: E402

needs_native = pytest.mark.skipif(
    not NT.available(), reason="compiled kernels not built, or torch has no libgomp here")

CL = torch.channels_last
TORCH_ACTS = {None: lambda t: t, "relu": F.relu, "relu6": F.relu6, "silu": F.silu,
              "hardswish": F.hardswish}


def reference(x, w, b, stride, act, residual):
    """F.conv2d in float64, the residual added before the activation."""
    z = F.conv2d(x.double(), w.double(), None if b is None else b.double(), stride=stride)
    if residual is not None:
        z = z + residual.double()
    return TORCH_ACTS[act](z)


def tensors(n, c, f, h, w, stride, fmt, res_fmt, bias, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=g).contiguous(memory_format=fmt)
    wt = torch.randn(f, c, 1, 1, generator=g) / c**0.5
    b = torch.randn(f, generator=g) if bias else None
    ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
    r = None
    if res_fmt is not None:
        r = torch.randn(n, f, ho, wo, generator=g).contiguous(memory_format=res_fmt)
    return x, wt, b, r


# ------------------------------------------------------------------------------ the rule
@needs_native
@pytest.mark.parametrize(
    "fmt,shape,stride,padding,groups,dtype,grad,expected",
    [
        (CL, (8, 64, 28, 28), 1, 0, 1, torch.float32, False, "native"),
        (CL, (8, 64, 28, 28), 2, 0, 1, torch.float32, False, "native"),  # any stride
        (torch.contiguous_format, (8, 64, 28, 28), 1, 0, 1, torch.float32, False, "native"),
        (torch.contiguous_format, (8, 64, 28, 28), 2, 0, 1, torch.float32, False, "conv2d"),
        (CL, (8, 64, 28, 28), 1, 0, 1, torch.float32, True, "conv2d"),  # autograd
        (CL, (8, 64, 28, 28), 1, 0, 1, torch.float64, False, "conv2d"),
        (CL, (8, 64, 28, 28), 1, 1, 1, torch.float32, False, "conv2d"),  # padding
        (CL, (8, 64, 28, 28), 1, 0, 2, torch.float32, False, "conv2d"),  # groups
        (CL, (1, 8, 8, 8), 1, 0, 1, torch.float32, False, "addmm"),  # below NATIVE_MIN_MACS
    ],
)
def test_choose_kernel_takes_native_for_float32_inference(fmt, shape, stride, padding, groups,
                                                          dtype, grad, expected):
    x = torch.empty(shape, dtype=dtype).contiguous(memory_format=fmt)
    w = torch.empty(shape[1] * 2, shape[1] // groups, 1, 1, dtype=dtype)
    got = PF.choose_kernel(x, w, None, (stride, stride), (padding, padding), groups, grad=grad)
    assert got == expected


def test_without_the_kernels_the_rule_keeps_to_torch(monkeypatch):
    monkeypatch.setattr(NT, "available", lambda: False)
    x = torch.empty(8, 64, 28, 28).contiguous(memory_format=CL)
    assert PF.choose_kernel(x, torch.empty(128, 64, 1, 1), None, (1, 1), (0, 0), 1) == "conv2d"


# ------------------------------------------------------------------ forward, every option
@needs_native
@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 3), c=st.integers(1, 40), f=st.integers(1, 70),
    h=st.integers(1, 9), w=st.integers(1, 9), stride=st.sampled_from([1, 2, 3]),
    fmt=st.sampled_from(["nchw", "channels_last"]),
    res=st.sampled_from([None, "nchw", "channels_last"]),
    act=st.sampled_from(list(TORCH_ACTS)), bias=st.booleans(), threads=st.sampled_from([1, 2]),
)
def test_native_matches_conv2d(n, c, f, h, w, stride, fmt, res, act, bias, threads):
    fmts = {"nchw": torch.contiguous_format, "channels_last": CL}
    x, wt, b, r = tensors(n, c, f, h, w, stride, fmts[fmt], res and fmts[res], bias)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            y = PF._run("native", x, wt, b, (stride, stride), (0, 0), 1, act, r)
    finally:
        torch.set_num_threads(before)
    ref = reference(x, wt, b, (stride, stride), act, r)
    assert y.shape == ref.shape and y.dtype == torch.float32
    torch.testing.assert_close(y.double(), ref, rtol=1e-5, atol=1e-5)
    if fmt == "channels_last" and h * w > 1 and c > 1:  # (C = 1: both formats at once)
        assert y.is_contiguous(memory_format=CL)  # the input's memory format is kept


@needs_native
def test_native_really_runs_the_kernels_on_torchs_team(monkeypatch):
    """Every channels-last call reaches _native.rows with a team, residual included."""
    calls = []
    rows = _native.rows

    def spy(*args, **kw):
        calls.append(kw)
        return rows(*args, **kw)

    monkeypatch.setattr(_native, "rows", spy)
    x, w, b, r = tensors(8, 64, 128, 28, 28, 1, CL, CL, True)
    with torch.inference_mode():
        y = PF.conv1x1(x, w, b, layout="NCHW", activation="relu", residual=r)
    assert len(calls) == 1 and calls[0]["team"] == torch.get_num_threads()
    assert calls[0]["residual"] is not None
    torch.testing.assert_close(y.double(), reference(x, w, b, (1, 1), "relu", r),
                               rtol=1e-5, atol=1e-5)


@needs_native
def test_a_declined_call_falls_back_to_torch(monkeypatch):
    monkeypatch.setattr(_native, "rows", lambda *a, **k: False)
    x, w, b, _ = tensors(2, 8, 4, 5, 5, 1, CL, None, True)
    with torch.inference_mode():
        y = PF._run("native", x, w, b, (1, 1), (0, 0), 1, "relu")
    torch.testing.assert_close(y.double(), reference(x, w, b, (1, 1), "relu", None),
                               rtol=1e-5, atol=1e-5)


@needs_native
def test_native_edge_cases():
    w = torch.randn(6, 4, 1, 1)
    with torch.inference_mode():
        # stride larger than the image: one pixel per image
        x = torch.randn(2, 4, 3, 3).contiguous(memory_format=CL)
        y = PF._run("native", x, w, None, (5, 5), (0, 0), 1, None)
        torch.testing.assert_close(y, F.conv2d(x, w, stride=5))
        # a non-contiguous input that is neither format: torch takes it
        xs = torch.randn(2, 4, 6, 8)[:, :, :, ::2]
        y = PF._run("native", xs, w, None, (1, 1), (0, 0), 1, None)
        torch.testing.assert_close(y, F.conv2d(xs, w))
        # a weight in NHWC terms, (C, F) contiguous: read in place
        w_hwio = torch.randn(1, 1, 4, 6)
        xl = torch.randn(2, 3, 5, 4)  # NHWC
        y = PF.conv1x1(xl, w_hwio, layout="NHWC")
        ref = F.conv2d(xl.permute(0, 3, 1, 2), w_hwio[0, 0].t()[:, :, None, None])
        torch.testing.assert_close(y, ref.permute(0, 2, 3, 1), rtol=1e-5, atol=1e-5)


def test_tensors_without_plain_memory_fall_back_to_torch():
    """Under torch.func.vmap the tensors are wrappers NumPy cannot view: torch computes."""
    m = Conv1x1(64, 128).eval()
    x = torch.randn(3, 8, 64, 16, 16)
    with torch.no_grad():
        y = torch.func.vmap(m)(x)
        ref = torch.stack([F.conv2d(xi, m.weight, m.bias) for xi in x])
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------ residual
@pytest.mark.parametrize("layout", ["NHWC", "NCHW", "HWC", "CHW"])
@pytest.mark.parametrize("grad", [False, True])
def test_residual_in_every_layout_and_its_gradient(layout, grad):
    g = torch.Generator().manual_seed(1)
    shape = {"NHWC": (2, 5, 4, 3), "NCHW": (2, 3, 5, 4), "HWC": (5, 4, 3), "CHW": (3, 5, 4)}
    x = torch.randn(shape[layout], generator=g, dtype=torch.float64)
    w = torch.randn((1, 1, 3, 6) if "HWC" in layout else (6, 3, 1, 1), generator=g,
                    dtype=torch.float64)
    y0 = PF.conv1x1(x, w, layout=layout, stride=2)
    r = torch.randn(y0.shape, generator=g, dtype=torch.float64, requires_grad=grad)
    y = PF.conv1x1(x, w, layout=layout, stride=2, activation="relu", residual=r)
    torch.testing.assert_close(y, F.relu(y0 + r))
    if grad:
        torch.autograd.gradcheck(
            lambda rr: PF.conv1x1(x, w, layout=layout, stride=2, activation="silu", residual=rr),
            (r,))


def test_residual_of_the_wrong_shape_or_dtype_is_refused():
    x = torch.randn(2, 3, 5, 4)
    w = torch.randn(6, 3, 1, 1)
    with pytest.raises(ValueError, match=r"expected residual of shape \(2, 6, 5, 4\)"):
        PF.conv1x1(x, w, layout="NCHW", residual=torch.randn(2, 6, 4, 5))
    with pytest.raises(TypeError, match="expected residual of dtype float32"):
        PF.conv1x1(x, w, layout="NCHW", residual=torch.randn(2, 6, 5, 4, dtype=torch.float64))


def test_conv1x1_module_takes_a_residual():
    m = Conv1x1(4, 8, activation="relu6").eval()
    x = torch.randn(2, 4, 6, 6)
    r = torch.randn(2, 8, 6, 6)
    with torch.inference_mode():
        y = m(x, residual=r)
    torch.testing.assert_close(y, F.relu6(F.conv2d(x, m.weight, m.bias) + r),
                               rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- buffers and weight cache
@needs_native
def test_pooled_outputs_are_reused_only_when_nothing_refers_to_them():
    x, w, b, _ = tensors(8, 16, 256, 32, 32, 1, CL, None, True)  # an 8 MiB output: pooled
    with torch.inference_mode():
        y1 = PF._run("native", x, w, b, (1, 1), (0, 0), 1, None)
        keep = y1.clone()
        y2 = PF._run("native", x * 2, w, b, (1, 1), (0, 0), 1, None)
        assert y1.data_ptr() != y2.data_ptr()
        torch.testing.assert_close(y1, keep)  # untouched by the second call
        view = y2.permute(0, 2, 3, 1).numpy()[:1]
        ptr2 = y2.data_ptr()
        del y2  # a NumPy view still holds it
        y3 = PF._run("native", x, w, b, (1, 1), (0, 0), 1, None)
        assert y3.data_ptr() != ptr2
        del view
        ptr3 = y3.data_ptr()
        del y3
        y4 = PF._run("native", x, w, b, (1, 1), (0, 0), 1, None)
        assert y4.data_ptr() in (ptr2, ptr3)  # a free buffer was taken again
        torch.testing.assert_close(y4, keep)


@needs_native
def test_a_buffer_first_used_under_inference_mode_serves_autograd_later():
    x, w, b, _ = tensors(8, 16, 256, 32, 32, 1, CL, None, True)  # pooled
    with torch.inference_mode():
        y = PF._run("native", x, w, b, (1, 1), (0, 0), 1, None)
    del y  # its buffer is free again
    with torch.no_grad():
        feats = PF._run("native", x, w, b, (1, 1), (0, 0), 1, None)
    head = torch.ones(256, requires_grad=True)
    (feats.permute(0, 2, 3, 1) * head).sum().backward()  # feats saved for backward
    assert head.grad is not None and torch.isfinite(head.grad).all()


def test_buffer_pool_bounds_its_memory():
    pool = NT._Buffers(min_bytes=1 << 10, max_bytes=1 << 14)
    held = [pool.empty((1024,)) for _ in range(8)]  # 4 KiB each, all in use
    assert sum(4 * b.numel() for b in pool._bufs) <= 1 << 14
    assert len({t.data_ptr() for t in held}) == 8
    del held
    again = pool.empty((1024,))
    assert any(again.data_ptr() == b.data_ptr() for b in pool._bufs)
    pool.clear()
    assert pool._bufs == []
    assert pool.empty((8,)).numel() == 8  # below min_bytes: a plain tensor


@needs_native
def test_a_changed_weight_is_read_again():
    x, w, _, _ = tensors(4, 32, 64, 16, 16, 1, CL, None, False)
    w = torch.nn.Parameter(w)
    with torch.no_grad():
        y1 = PF.conv1x1(x, w, layout="NCHW")
        w.mul_(2)  # in place: bumps the version the transposed copy was made at
        y2 = PF.conv1x1(x, w, layout="NCHW")
    torch.testing.assert_close(y2, 2 * y1, rtol=1e-5, atol=1e-5)


@needs_native
def test_concurrent_python_threads_get_their_own_results():
    xs = [tensors(8, 32, 128, 16, 16, 1, CL, None, True, seed=s) for s in range(4)]
    refs = [reference(x, w, b, (1, 1), "relu", None) for x, w, b, _ in xs]
    errors = []

    def work(i):
        x, w, b, _ = xs[i]
        for _ in range(5):
            with torch.inference_mode():
                y = PF.conv1x1(x, w, b, layout="NCHW", activation="relu")
            if not torch.allclose(y.double(), refs[i], rtol=1e-5, atol=1e-5):
                errors.append(i)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


# -------------------------------------------------------------------- blocks and models
def _models():
    import pointwise.models as pm

    torch.manual_seed(0)
    return {"resnet50": pm.create("resnet50", num_classes=10).eval(),
            "mobilenet_v2": pm.create("mobilenet_v2", num_classes=10).eval()}


@pytest.mark.parametrize("fmt", [torch.contiguous_format, CL])
def test_convert_fuses_shortcuts_and_keeps_the_outputs(fmt):
    x = torch.randn(2, 3, 64, 64).contiguous(memory_format=fmt)
    expected_blocks = {"resnet50": 16, "mobilenet_v2": 10}
    for name, model in _models().items():
        ours, report = convert(model)
        assert len(report.shortcuts) == expected_blocks[name]
        assert f"{len(report.shortcuts)} shortcuts fused" in str(report)
        eager = to_conv2d(model).to(memory_format=fmt)
        ours = ours.to(memory_format=fmt)
        with torch.inference_mode():
            ref, got = eager(x), ours(x)
        torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())


def test_fused_blocks_still_train_and_export():
    model = _models()["resnet50"]
    ours, _ = convert(model)
    x = torch.randn(2, 3, 32, 32)
    ours.train()
    ours(x).sum().backward()  # the residual path is differentiable
    grads = [p.grad for p in ours.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    traced = torch.jit.trace(ours.eval(), x)
    with torch.inference_mode():
        torch.testing.assert_close(traced(x), ours(x), rtol=1e-4, atol=1e-4)


def test_fuse_shortcut_leaves_an_unfolded_block_alone():
    from pointwise.models.resnet import Bottleneck

    block = Bottleneck(64, 16).eval()
    assert block.fuse_shortcut() is None and not block.shortcut_fused  # bn3 still there
    ours, report = convert(torch.nn.Sequential(block).eval())
    assert report.shortcuts == [("0", "0.conv3")]
    assert ours[0].fuse_shortcut() is None  # once only


def test_to_conv2d_gives_torch_alone_and_refuses_fused_models():
    model = _models()["resnet50"]
    eager = to_conv2d(model)
    assert not any(isinstance(m, Conv1x1) for m in eager.modules())
    assert eager.state_dict().keys() == model.state_dict().keys()
    x = torch.randn(1, 3, 32, 32)
    with torch.inference_mode():
        torch.testing.assert_close(eager(x), model(x))
    shared = Conv1x1(4, 4)
    two = to_conv2d(torch.nn.Sequential(shared, shared))
    assert two[0] is two[1] and isinstance(two[0], torch.nn.Conv2d)
    with pytest.raises(ValueError, match="expected a model without fused shortcuts"):
        to_conv2d(convert(model)[0])
    assert isinstance(to_conv2d(Conv1x1(2, 3, activation="relu")), torch.nn.Sequential)


@needs_native
def test_host_openmp_binds_only_to_a_loaded_runtime():
    assert _native._kernel.openmp("/nonexistent/libgomp.so.1") is False
    paths = _native._loaded_libgomp()  # torch's, imported by this file
    assert paths and all(p.startswith("/") and "libgomp" in p for p in paths)
    assert _native.host_openmp() is True
    torch_lib = NT._TORCH_DIR
    if any(p.startswith(torch_lib) for p in paths):  # torch's own copy, not another one
        assert _native.OPENMP_PATH is not None and _native.OPENMP_PATH.startswith(torch_lib)
    assert any(_native._kernel.openmp(p) for p in paths)
    assert _native._kernel.openmp(_native.OPENMP_PATH)  # back to the one chosen
