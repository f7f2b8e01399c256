"""Independent references for the operator, used by every test that checks numbers.

* :func:`reference_conv` — NumPy only: zero-pad, subsample, ``np.einsum`` per group, in float64
  (or on Python ints, for integer inputs).
* :func:`numeric_grads` — central finite differences of ``Σ g·y`` through the operator.
* :func:`check_against_torch` — one oracle: forward and backward against
  ``torch.nn.functional.conv2d`` and autograd, with separate tolerances.
"""

from __future__ import annotations

from typing import Any

import numpy as np

import pointwise as pw

ACTS_NP = {
    None: lambda z: z,
    "relu": lambda z: np.maximum(z, 0),
    "relu6": lambda z: np.minimum(np.maximum(z, 0), 6),
    "silu": lambda z: z / (1 + np.exp(-z)),
    "hardswish": lambda z: z * np.minimum(np.maximum(z + 3, 0), 6) / 6,
}


def _pair(v: Any) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def to_nhwc(x: np.ndarray, layout: str) -> np.ndarray:
    """Any layout -> (N, H, W, C)."""
    x = np.asarray(x)
    if layout == "HWC":
        return x[None]
    if layout == "NCHW":
        return x.transpose(0, 2, 3, 1)
    if layout == "CHW":
        return x.transpose(1, 2, 0)[None]
    return x


def from_nhwc(y: np.ndarray, layout: str) -> np.ndarray:
    """(N, H, W, F) -> the layout's own order."""
    if layout == "HWC":
        return y[0]
    if layout == "NCHW":
        return y.transpose(0, 3, 1, 2)
    if layout == "CHW":
        return y[0].transpose(2, 0, 1)
    return y


def weight_cf(w: np.ndarray, layout: str) -> np.ndarray:
    """Any weight format -> (C/G, F) matrix."""
    w = np.asarray(w)
    if layout in ("NHWC", "HWC"):
        return w[0, 0] if w.ndim == 4 else w
    m = w[:, :, 0, 0] if w.ndim == 4 else w
    return m.T


def reference_conv(x, w, b=None, *, layout="NHWC", stride=1, padding=0, groups=1,
                   activation=None, python_ints=False) -> np.ndarray:
    """The 1×1 conv from its definition, with NumPy only, in float64 (ints stay exact).

    ``python_ints``: integer inputs compute on Python ints (an object array), which never
    overflow, for checking what int64 can and cannot hold.
    """
    x4 = to_nhwc(x, layout)
    exact = x4.dtype.kind in "iu" and np.asarray(w).dtype.kind in "iu"
    dt = (object if python_ints else np.int64) if exact else np.float64
    x4 = x4.astype(dt)
    wm = weight_cf(w, layout).astype(dt)  # (C/G, F)
    (sh, sw), (ph, pw_) = _pair(stride), _pair(padding)
    n, h, wd, c = x4.shape
    xp = np.zeros((n, h + 2 * ph, wd + 2 * pw_, c), dt)
    xp[:, ph : ph + h, pw_ : pw_ + wd] = x4
    ho, wo = (h + 2 * ph - 1) // sh + 1, (wd + 2 * pw_ - 1) // sw + 1
    xs = xp[:, : (ho - 1) * sh + 1 : sh, : (wo - 1) * sw + 1 : sw]  # (N, Ho, Wo, C)
    cg, f = wm.shape
    fg = f // groups
    y = np.zeros((n, ho, wo, f), dt)
    for g in range(groups):
        y[..., g * fg : (g + 1) * fg] = np.einsum(
            "nhwc,cf->nhwf", xs[..., g * cg : (g + 1) * cg], wm[:, g * fg : (g + 1) * fg]
        )
    if b is not None:
        y = y + np.asarray(b).astype(dt)
    with np.errstate(over="ignore"):
        y = ACTS_NP[activation](y)
    return from_nhwc(y, layout)


def numeric_grads(g, x, w, b, *, eps=1e-6, picks=6, seed=0, **opts):
    """Central differences of L = Σ g·conv1x1(x, w, b) at a few random entries of x, w, b.

    Returns a list of (name, index, numeric, analytic) with the analytic value taken from
    ``pw.conv1x1_backward``.
    """
    rng = np.random.default_rng(seed)
    y = pw.conv1x1(x, w, b, **opts)
    gx, gw, gb = pw.conv1x1_backward(g, x, w, bias=b, has_bias=b is not None, y=y, **opts)
    out = []
    named = [("x", x, gx), ("w", w, gw)] + ([("b", b, gb)] if b is not None else [])
    for name, arr, grad in named:
        if arr.size == 0:
            continue
        for _ in range(picks):
            idx = tuple(int(rng.integers(0, s)) for s in arr.shape)
            vals = []
            for sign in (1, -1):
                a = arr.copy()
                a[idx] += sign * eps
                args = {"x": x, "w": w, "b": b, name: a}
                vals.append(np.sum(g * pw.conv1x1(args["x"], args["w"], args["b"], **opts)))
            out.append((name, idx, (vals[0] - vals[1]) / (2 * eps), grad[idx]))
    return out


# ---------------------------------------------------------------------------------- torch
TOL = {  # (forward rtol, atol), (backward rtol, atol)
    np.float64: ((1e-10, 1e-10), (1e-9, 1e-9)),
    np.float32: ((2e-5, 2e-5), (1e-4, 1e-4)),
}


def _torch_layout(t, layout, torch):
    """Our layout -> torch's batched NCHW tensor (a view)."""
    if layout == "NHWC":
        return t.permute(0, 3, 1, 2)
    if layout == "HWC":
        return t.permute(2, 0, 1)
    return t


def _torch_weight(w, layout, torch):
    if layout in ("NHWC", "HWC"):
        w4 = w if w.dim() == 4 else w[None, None]
        return w4.permute(3, 2, 0, 1)  # HWIO -> OIHW
    return w if w.dim() == 4 else w[:, :, None, None]


def check_against_torch(x, w, b=None, *, layout="NHWC", stride=1, padding=0, groups=1,
                        activation=None, seed=0, pass_y=True):
    """Compare conv1x1 and conv1x1_backward with torch's conv2d and autograd.

    ``x``, ``w``, ``b`` are NumPy arrays in our layout; their dtype picks the tolerance.
    Raises AssertionError on any mismatch; returns our (y, grads) for further checks.
    """
    import torch
    import torch.nn.functional as F

    dt = x.dtype.type
    (frt, fat), (brt, bat) = TOL[dt]
    opts = dict(layout=layout, stride=stride, padding=padding, groups=groups,
                activation=activation)
    y = pw.conv1x1(x, w, b, **opts)

    xt = torch.tensor(x, requires_grad=True)
    wt = torch.tensor(w, requires_grad=True)
    bt = None if b is None else torch.tensor(b, requires_grad=True)
    z = F.conv2d(_torch_layout(xt, layout, torch), _torch_weight(wt, layout, torch), bt,
                 stride=stride, padding=padding, groups=groups)
    acts = {None: lambda t: t, "relu": F.relu, "relu6": F.relu6, "silu": F.silu,
            "hardswish": F.hardswish}
    yt = acts[activation](z)
    # back to our layout: NHWC/HWC are permuted views, NCHW/CHW are already ours
    if layout == "NHWC":
        yt = yt.permute(0, 2, 3, 1)
    elif layout == "HWC":
        yt = yt.permute(1, 2, 0)
    assert y.shape == tuple(yt.shape), (y.shape, tuple(yt.shape))
    assert y.dtype == x.dtype, (y.dtype, x.dtype)
    scale = max(1.0, float(np.abs(yt.detach().numpy()).max(initial=0)))
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=frt, atol=fat * scale,
                               err_msg=f"forward {opts}")

    g = np.random.default_rng(seed + 1).standard_normal(y.shape).astype(dt)
    (yt * torch.tensor(g)).sum().backward() if y.size else None
    grads = pw.conv1x1_backward(g, x, w, bias=b, has_bias=b is not None,
                                y=y if pass_y else None, **opts)
    refs = [xt.grad, wt.grad, None if bt is None else bt.grad]
    for name, ours, ref, arr in zip(("x", "w", "b"), grads, refs, (x, w, b), strict=True):
        if arr is None:
            assert ours is None, f"grad_{name} should be None without bias"
            continue
        ref_np = np.zeros_like(arr) if ref is None else ref.numpy()
        assert ours.shape == arr.shape and ours.dtype == arr.dtype, (name, ours.shape, ours.dtype)
        gscale = max(1.0, float(np.abs(ref_np).max(initial=0)))
        np.testing.assert_allclose(ours, ref_np, rtol=brt, atol=bat * gscale,
                                   err_msg=f"grad_{name} {opts}")
    return y, grads


# ------------------------------------------------------------------------------ k×k convs
def same_padding(size: int, k: int, s: int, d: int) -> tuple[int, int]:
    """TensorFlow's "same": ceil(size / s) outputs, the padding split, the odd pixel after."""
    total = max(0, (-(-size // s) - 1) * s + d * (k - 1) + 1 - size)
    return total // 2, total - total // 2


def check_conv2d_against_torch(x, w, b=None, *, layout="NHWC", stride=1, padding=0,
                               dilation=1, groups=1, activation=None, residual=None,
                               atol=None):
    """Compare ``pw.conv2d`` with float64 ``torch.nn.functional.conv2d``.

    ``x``, ``w``, ``b``, ``residual`` are NumPy arrays in our layout. Integers must match
    exactly; floats within a tolerance scaled by the output's magnitude (float64: 1e-10,
    float32: 2e-5, half types: 2e-2, or ``atol``). Returns our output.
    """
    import torch
    import torch.nn.functional as F

    y = pw.conv2d(x, w, b, layout=layout, stride=stride, padding=padding, dilation=dilation,
                  groups=groups, activation=activation, residual=residual)
    x4 = to_nhwc(x, layout).astype(np.float64)  # (N, H, W, C)
    w4 = np.asarray(w, np.float64)
    w4 = w4.transpose(3, 2, 0, 1) if layout in ("NHWC", "HWC") else w4  # -> OIHW
    (sh, sw), (dh, dw) = _pair(stride), _pair(dilation)
    kh, kw = w4.shape[2:]
    if padding == "same":
        (t, bo), (le, r) = (same_padding(x4.shape[1], kh, sh, dh),
                            same_padding(x4.shape[2], kw, sw, dw))
    elif padding == "valid":
        t = bo = le = r = 0
    else:
        (t, le) = _pair(padding)
        bo, r = t, le
    xt = F.pad(torch.from_numpy(np.ascontiguousarray(x4.transpose(0, 3, 1, 2))), (le, r, t, bo))
    z = F.conv2d(xt, torch.from_numpy(w4), None if b is None else torch.from_numpy(
        np.asarray(b, np.float64)), stride=(sh, sw), dilation=(dh, dw), groups=groups)
    ref = z.numpy().transpose(0, 2, 3, 1)  # (N, Ho, Wo, F)
    if residual is not None:
        ref = ref + to_nhwc(residual, layout)
    with np.errstate(over="ignore"):
        ref = from_nhwc(ACTS_NP[activation](ref), layout)
    assert y.shape == ref.shape, (y.shape, ref.shape)
    exact = all(np.asarray(a).dtype.kind in "iu" for a in (x, w, b, residual) if a is not None)
    if exact:
        assert y.dtype == np.int64, y.dtype
        np.testing.assert_array_equal(y, ref.astype(np.int64))
        return y
    tol = atol if atol is not None else {8: 1e-10, 4: 2e-5}.get(y.dtype.itemsize, 2e-2)
    scale = max(1.0, float(np.abs(ref).max(initial=0)))
    np.testing.assert_allclose(y.astype(np.float64), ref, rtol=tol, atol=tol * scale)
    return y


def randomize_bn(model):
    """``model`` in eval mode, every BatchNorm2d given non-trivial statistics and affine
    parameters, so that folding them into a conv is tested (torch imported here: the
    NumPy-only tests use this file too)."""
    import torch

    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model.eval()
