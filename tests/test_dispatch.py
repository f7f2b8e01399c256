"""pointwise.conv1x1 on NumPy, torch and JAX inputs: same numbers, the caller's array type,
gradients through autograd, and no library imported that the caller did not import."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import pointwise as pw
from pointwise.backends import backend_for

LAYOUTS = ["NHWC", "HWC", "NCHW", "CHW"]
CASES = [  # (layout, stride, padding, groups, activation, bias)
    ("NHWC", 1, 0, 1, None, True),
    ("HWC", 2, 1, 2, "relu", True),
    ("NCHW", (2, 1), (0, 1), 2, "silu", False),
    ("CHW", 1, 1, 1, "hardswish", True),
    ("NCHW", 3, 0, 4, "relu6", True),
    ("NHWC", 2, 2, 4, "silu", False),
]


def make(layout, groups, bias, seed=0, c=8, f=4):
    rng = np.random.default_rng(seed)
    shape = {"NHWC": (2, 5, 6, c), "HWC": (5, 6, c), "NCHW": (2, c, 5, 6), "CHW": (c, 5, 6)}
    wshape = (1, 1, c // groups, f) if layout in ("NHWC", "HWC") else (f, c // groups, 1, 1)
    x = rng.standard_normal(shape[layout])
    w = rng.standard_normal(wshape)
    b = rng.standard_normal(f) if bias else None
    return x, w, b


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)


def test_numpy_inputs_never_load_torch_or_the_backends():
    proc = run_python(
        "import sys, numpy as np, pointwise as pw\n"
        "pw.conv1x1(np.ones((1, 2, 2, 3)), np.ones((3, 4)))\n"
        "heavy = ('torch', 'jax', 'pointwise.nn', 'pointwise.backends.jax')\n"
        "bad = [m for m in heavy if m in sys.modules]\n"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_jax_backend_module_imports_without_jax():
    proc = run_python(
        "import sys, pointwise.backends.jax\n"
        "sys.exit(1 if 'jax' in sys.modules else 0)"
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_backend_for_refuses_to_mix_libraries():
    torch = pytest.importorskip("torch")
    fake_jax = type("Array", (), {"__module__": "jaxlib.xla_extension"})()
    assert backend_for(np.ones(2), [1.0], None) is None
    assert backend_for(np.ones(2), torch.ones(2)).__name__ == "pointwise.nn.functional"
    with pytest.raises(TypeError, match="expected arrays from one library"):
        backend_for(torch.ones(2), fake_jax)


# -------------------------------------------------------------------------------------- torch
@pytest.mark.parametrize("layout,stride,padding,groups,act,bias", CASES)
def test_torch_tensors_match_numpy_forward_and_gradients(layout, stride, padding, groups, act,
                                                         bias):
    torch = pytest.importorskip("torch")
    opts = dict(layout=layout, stride=stride, padding=padding, groups=groups, activation=act)
    x, w, b = make(layout, groups, bias)
    y_np = pw.conv1x1(x, w, b, **opts)
    xt, wt = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    bt = None if b is None else torch.tensor(b, requires_grad=True)
    y = pw.conv1x1(xt, wt, bt, **opts)
    assert isinstance(y, torch.Tensor) and y.dtype == torch.float64
    np.testing.assert_allclose(y.detach().numpy(), y_np, rtol=1e-12, atol=1e-12)
    g = np.random.default_rng(1).standard_normal(y_np.shape)
    (y * torch.tensor(g)).sum().backward()
    gx, gw, gb = pw.conv1x1_backward(g, x, w, bias=b, has_bias=bias, **opts)
    np.testing.assert_allclose(xt.grad.numpy(), gx, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(wt.grad.numpy(), gw, rtol=1e-10, atol=1e-10)
    if bias:
        np.testing.assert_allclose(bt.grad.numpy(), gb, rtol=1e-10, atol=1e-10)


def test_torch_float32_channels_last_with_numpy_arguments():
    torch = pytest.importorskip("torch")
    x, w, b = make("NCHW", 1, True)
    xt = torch.tensor(x, dtype=torch.float32).contiguous(memory_format=torch.channels_last)
    y = pw.conv1x1(xt, w.astype(np.float32), b.astype(np.float32), layout="NCHW")
    assert isinstance(y, torch.Tensor) and y.dtype == torch.float32
    assert y.is_contiguous(memory_format=torch.channels_last)
    np.testing.assert_allclose(y.numpy(), pw.conv1x1(x, w, b, layout="NCHW"), rtol=1e-5,
                               atol=1e-5)


def test_torch_errors_match_numpy_errors():
    torch = pytest.importorskip("torch")
    x, w = np.ones((1, 3, 3, 1)), np.ones((1, 1, 1, 2))  # the tutorial's swapped filter
    with pytest.raises(ValueError) as core:
        pw.conv1x1(x[..., [0, 0]], w)
    with pytest.raises(ValueError) as ours:
        pw.conv1x1(torch.tensor(x[..., [0, 0]]), torch.tensor(w))
    assert str(ours.value) == str(core.value)
    assert "did you mean shape (1, 1, 2, 1)" in str(ours.value)


# ---------------------------------------------------------------------------------------- jax
@pytest.mark.parametrize("layout,stride,padding,groups,act,bias", CASES)
def test_jax_arrays_match_numpy_forward_and_gradients(layout, stride, padding, groups, act,
                                                      bias):
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    opts = dict(layout=layout, stride=stride, padding=padding, groups=groups, activation=act)
    x, w, b = make(layout, groups, bias)
    x, w = x.astype(np.float32), w.astype(np.float32)
    b = None if b is None else b.astype(np.float32)
    y_np = pw.conv1x1(x, w, b, **opts)
    xj, wj = jnp.asarray(x), jnp.asarray(w)
    bj = None if b is None else jnp.asarray(b)
    y = pw.conv1x1(xj, wj, bj, **opts)
    assert isinstance(y, jax.Array) and y.dtype == jnp.float32 and y.shape == y_np.shape
    np.testing.assert_allclose(np.asarray(y), y_np, rtol=1e-5, atol=1e-5)

    g = np.random.default_rng(1).standard_normal(y_np.shape).astype(np.float32)

    def loss(xx, ww, bb):
        return jnp.sum(pw.conv1x1(xx, ww, bb, **opts) * g)

    argnums = (0, 1, 2) if bias else (0, 1)
    grads = jax.grad(loss, argnums=argnums)(xj, wj, bj)
    ref = pw.conv1x1_backward(g, x, w, bias=b, has_bias=bias, **opts)
    for ours, want in zip(grads, ref, strict=False):
        np.testing.assert_allclose(np.asarray(ours), want, rtol=1e-4, atol=1e-4)


def test_jax_jit_and_errors():
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    x, w, b = make("NHWC", 1, True)
    x, w, b = (a.astype(np.float32) for a in (x, w, b))
    f = jax.jit(lambda xx: pw.conv1x1(xx, jnp.asarray(w), jnp.asarray(b), activation="relu"))
    np.testing.assert_allclose(np.asarray(f(jnp.asarray(x))),
                               pw.conv1x1(x, w, b, activation="relu"), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError) as ours:
        pw.conv1x1(jnp.asarray(x), jnp.asarray(w[:, :, :3]))
    with pytest.raises(ValueError) as core:
        pw.conv1x1(x, w[:, :, :3])
    assert str(ours.value) == str(core.value)
    with pytest.raises(TypeError, match="JAX arrays are immutable"):
        pw.conv1x1(jnp.asarray(x), jnp.asarray(w), out=np.empty(1))
