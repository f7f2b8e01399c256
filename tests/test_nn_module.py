"""Conv1x1 as a drop-in nn.Conv2d(kernel_size=1): weights, outputs, gradients, formats,
serialisation, tracing and export."""

from __future__ import annotations

import copy
import io
import itertools
import pickle

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from pointwise.nn import Conv1x1  # noqa: E402

F = nn.functional


pytestmark = pytest.mark.usefixtures("one_torch_thread")
OPTIONS = [  # (C, F, stride, padding, groups, bias)
    (4, 6, 1, 0, 1, True),
    (4, 6, 2, 1, 2, False),
    (6, 4, (2, 1), (0, 1), 2, True),
    (8, 8, 3, 0, 8, True),  # depthwise
]
ACT_MODULES = {None: nn.Identity, "relu": nn.ReLU, "relu6": nn.ReLU6, "silu": nn.SiLU,
               "hardswish": nn.Hardswish}


def pair(c, f, stride, padding, groups, bias, activation=None, dtype=torch.float64):
    """A Conv1x1 and an nn.Conv2d with the same weights."""
    m = Conv1x1(c, f, stride=stride, padding=padding, groups=groups, bias=bias,
                activation=activation, dtype=dtype)
    ref = nn.Conv2d(c, f, 1, stride=stride, padding=padding, groups=groups, bias=bias,
                    dtype=dtype)
    ref.load_state_dict(m.state_dict())
    return m, ref


def test_default_init_state_dict_and_weight_shape_match_conv2d():
    torch.manual_seed(0)
    ref = nn.Conv2d(12, 8, 1, groups=4)
    torch.manual_seed(0)
    m = Conv1x1(12, 8, groups=4)
    assert m.weight.shape == ref.weight.shape == (8, 3, 1, 1)
    assert list(m.state_dict()) == list(ref.state_dict()) == ["weight", "bias"]
    torch.testing.assert_close(m.weight, ref.weight, rtol=0, atol=0)
    torch.testing.assert_close(m.bias, ref.bias, rtol=0, atol=0)
    nb = Conv1x1(3, 5, bias=False)
    assert nb.bias is None and list(nb.state_dict()) == ["weight"]


def test_device_and_dtype_keywords():
    m = Conv1x1(3, 5, device="cpu", dtype=torch.float64)
    assert m.weight.dtype == m.bias.dtype == torch.float64
    assert m.weight.device.type == "cpu"


def test_state_dicts_load_both_ways():
    ref = nn.Conv2d(6, 4, 1, stride=2, groups=2)
    m = Conv1x1(6, 4, stride=2, groups=2)
    m.load_state_dict(ref.state_dict())
    torch.testing.assert_close(m.weight, ref.weight, rtol=0, atol=0)
    ref2 = nn.Conv2d(6, 4, 1, stride=2, groups=2)
    ref2.load_state_dict(m.state_dict())
    torch.testing.assert_close(ref2.bias, ref.bias, rtol=0, atol=0)


@pytest.mark.parametrize("opts", OPTIONS)
def test_from_conv2d_and_to_conv2d_round_trip(opts):
    c, f, stride, padding, groups, bias = opts
    ref = nn.Conv2d(c, f, 1, stride=stride, padding=padding, groups=groups, bias=bias,
                    dilation=2)  # dilation is irrelevant at 1×1
    m = Conv1x1.from_conv2d(ref)
    x = torch.randn(2, c, 5, 6)
    torch.testing.assert_close(m(x), ref(x), rtol=1e-5, atol=1e-5)
    back = m.to_conv2d()
    assert type(back) is nn.Conv2d and back.stride == ref.stride and back.groups == groups
    torch.testing.assert_close(back(x), ref(x), rtol=1e-5, atol=1e-5)
    assert back.weight is not m.weight  # copies, not shared


def test_to_conv2d_with_activation_is_conv_then_activation():
    m = Conv1x1(3, 4, activation="hardswish")
    seq = m.to_conv2d()
    assert isinstance(seq, nn.Sequential) and isinstance(seq[1], nn.Hardswish)
    x = torch.randn(1, 3, 4, 4)
    torch.testing.assert_close(seq(x), m(x))


def test_from_conv2d_rejects_what_it_cannot_represent():
    with pytest.raises(ValueError, match=r"kernel_size=\(1, 1\), but got kernel_size=\(3, 3\)"):
        Conv1x1.from_conv2d(nn.Conv2d(3, 4, 3))
    with pytest.raises(ValueError, match="padding_mode='zeros'"):
        Conv1x1.from_conv2d(nn.Conv2d(3, 4, 1, padding=1, padding_mode="reflect"))
    with pytest.raises(TypeError, match="expected an nn.Conv2d"):
        Conv1x1.from_conv2d(nn.Linear(3, 4))


@pytest.mark.parametrize("opts", OPTIONS)
@pytest.mark.parametrize("act", list(ACT_MODULES))
@pytest.mark.parametrize("fmt", ["nchw", "channels_last", "unbatched"])
def test_equals_conv2d_outputs_and_gradients(opts, act, fmt):
    """Conv1x1 == nn.Conv2d(k=1) (+ activation), forward and every gradient, in float64."""
    m, ref = pair(*opts, activation=act)
    c = opts[0]
    x = torch.randn(3, c, 5, 7, dtype=torch.float64)
    if fmt == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    elif fmt == "unbatched":
        x = x[0]
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    y, yr = m(xa), ACT_MODULES[act]()(ref(xb))
    torch.testing.assert_close(y, yr, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(yr)
    (y * g).sum().backward()
    (yr * g).sum().backward()
    torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(m.weight.grad, ref.weight.grad, rtol=1e-10, atol=1e-10)
    if ref.bias is not None:
        torch.testing.assert_close(m.bias.grad, ref.bias.grad, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("act", list(ACT_MODULES))
def test_gradcheck_through_the_module(fmt, act):
    m = Conv1x1(4, 4, stride=2, padding=1, groups=2, activation=act, dtype=torch.float64)
    x = torch.randn(2, 4, 3, 3, dtype=torch.float64).contiguous(memory_format=fmt)
    x.requires_grad_()

    def f(x, w, b):
        return torch.func.functional_call(m, {"weight": w, "bias": b}, (x,))

    assert torch.autograd.gradcheck(f, (x, m.weight, m.bias), eps=1e-6, atol=1e-7)


def test_equals_linear_on_the_channels_last_view():
    """Conv1x1 on NCHW == nn.Linear on the (N, H, W, C) view, with the same weights."""
    m = Conv1x1(16, 24)
    lin = nn.Linear(16, 24)
    with torch.no_grad():
        lin.weight.copy_(m.weight[:, :, 0, 0])  # (F, C, 1, 1) -> (F, C)
        lin.bias.copy_(m.bias)
    x = torch.randn(4, 16, 9, 9)
    y_lin = lin(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # (N, H, W, F) -> (N, F, H, W)
    torch.testing.assert_close(m(x), y_lin, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("opts", [dict(), dict(stride=2), dict(padding=1), dict(groups=4)])
def test_output_keeps_the_memory_format(fmt, opts):
    m = Conv1x1(8, 12, **opts)
    x = torch.randn(2, 8, 10, 10).contiguous(memory_format=fmt)
    with torch.no_grad():
        assert m(x).is_contiguous(memory_format=fmt)
    assert m(x).is_contiguous(memory_format=fmt)  # with autograd, too


@pytest.mark.parametrize(
    "kwargs,text",
    [
        (dict(), "Conv1x1(3, 8)"),
        (dict(stride=2, bias=False), "Conv1x1(3, 8, stride=2, bias=False)"),
        (dict(stride=(2, 1), padding=1), "Conv1x1(3, 8, stride=(2, 1), padding=1)"),
        (dict(activation="silu", stride=(1, 1)), "Conv1x1(3, 8, activation='silu')"),
    ],
)
def test_repr_shows_only_non_default_arguments(kwargs, text):
    assert repr(Conv1x1(3, 8, **kwargs)) == text


def test_groups_repr_and_bad_arguments():
    assert repr(Conv1x1(4, 8, groups=2)) == "Conv1x1(4, 8, groups=2)"
    with pytest.raises(ValueError, match="expected groups to divide in_channels=4"):
        Conv1x1(4, 6, groups=4)
    with pytest.raises(ValueError, match="did you mean 'silu'"):
        Conv1x1(4, 6, activation="selu")
    with pytest.raises(ValueError, match="expected stride to be an int >= 1"):
        Conv1x1(4, 6, stride=0)


def test_wrong_input_channels_error_names_both_shapes():
    with pytest.raises(ValueError, match=r"input \(2, 5, 4, 4\) to have 3 channels for weight "
                                         r"\(8, 3, 1, 1\), but got 5"):
        Conv1x1(3, 8)(torch.randn(2, 5, 4, 4))


def test_pickle_and_deepcopy():
    m = Conv1x1(4, 6, stride=2, groups=2, activation="relu6")
    x = torch.randn(1, 4, 5, 5)
    for clone in (pickle.loads(pickle.dumps(m)), copy.deepcopy(m)):
        assert repr(clone) == repr(m)
        assert clone.weight is not m.weight
        torch.testing.assert_close(clone(x), m(x), rtol=0, atol=0)


def _model():
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), Conv1x1(8, 16, stride=2, activation="relu"),
        Conv1x1(16, 4, groups=4, padding=1),
    ).eval()


@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last])
def test_jit_trace_records_a_standard_conv(fmt):
    model = _model()
    x = torch.randn(2, 3, 8, 8).contiguous(memory_format=fmt)
    traced = torch.jit.trace(model, x)
    graph = str(traced.inlined_graph)
    assert graph.count("aten::_convolution") == 3, graph  # no Python, no addmm
    x2 = torch.randn(3, 3, 6, 6)  # a new shape: the trace is not specialised to x
    torch.testing.assert_close(traced(x2), model(x2), rtol=1e-5, atol=1e-5)


def test_onnx_export_runs_in_onnxruntime():
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    model = _model()
    x = torch.randn(2, 3, 8, 8)
    buf = io.BytesIO()
    torch.onnx.export(model, (x,), buf, dynamo=False, input_names=["x"])
    sess = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    (y,) = sess.run(None, {"x": x.numpy()})
    torch.testing.assert_close(torch.from_numpy(y), model(x), rtol=1e-5, atol=1e-5)
    ops = {n.op_type for n in __import__("onnx").load_from_string(buf.getvalue()).graph.node}
    assert "Conv" in ops and "Relu" in ops


def test_every_option_combination_has_the_conv2d_output_shape():
    for c, f, s, p, g in itertools.product([4], [8], [1, 2, 3], [0, 1, 2], [1, 4]):
        m = Conv1x1(c, f, stride=s, padding=p, groups=g)
        ref = nn.Conv2d(c, f, 1, stride=s, padding=p, groups=g)
        x = torch.randn(1, c, 7, 5)
        assert m(x).shape == ref(x).shape, (s, p, g)
