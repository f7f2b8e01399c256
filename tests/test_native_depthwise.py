"""The depthwise 3×3 kernel (csrc/depthwise.c) against a float64 reference, at its edges,
and ``pw.conv2d(..., groups=C)`` reaching it.

The row function runs the output pixels PX = 4 at a time (the last group shorter) and the
channels a vector at a time (16 with AVX-512, 8 with AVX2; the last vector masked), reads
taps in the padding from a row of zeros, and the parts split the N·Ho output rows. The sizes
straddle each of those edges. Every test runs once per instruction set this CPU has.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pointwise as pw
from oracle import check_conv2d_against_torch
from pointwise.kernels import native as _native

try:
    from pointwise.kernels import _kernel as KERNEL
except ImportError:  # not built: no C compiler when the package was installed
    KERNEL = None

pytestmark = pytest.mark.skipif(KERNEL is None, reason="compiled kernels not built")
ACTS = [None, "relu", "relu6"]



def reference(x, w, b, act, s):
    """float64, from the definition, (N·Ho·Wo, C)."""
    n, h, wd, c = x.shape
    ho, wo = (h - 1) // s + 1, (wd - 1) // s + 1
    xp = np.zeros((n, h + 2, wd + 2, c))
    xp[:, 1:-1, 1:-1] = x
    y = np.zeros((n, ho, wo, c))
    for i in range(3):
        for j in range(3):
            y += xp[:, i : i + (ho - 1) * s + 1 : s, j : j + (wo - 1) * s + 1 : s] * w[i, j]
    y = y.reshape(-1, c) + (0 if b is None else b)
    if act is not None:
        y = np.maximum(y, 0)
    return np.minimum(y, 6) if act == "relu6" else y


def run(rng, n, h, w, c, s, act=None, bias=True, threads=2, view=False):
    x = rng.standard_normal((n, h + view, w, c + 3 * view)).astype(np.float32)
    x = x[:, view:, :, :c]  # with view: pixels and rows further apart than C
    wt = rng.standard_normal((3, 3, c)).astype(np.float32)
    b = rng.standard_normal(c).astype(np.float32) if bias else None
    ho, wo = (h - 1) // s + 1, (w - 1) // s + 1
    y = np.full((n * ho * wo, c + 1), 7.0, np.float32)  # one column past the output
    assert KERNEL.depthwise(threads, x, wt, y[:, :c], b, _native.ACTIVATIONS[act], s)
    np.testing.assert_allclose(y[:, :c], reference(x, wt, b, act, s), rtol=2e-5, atol=2e-5)
    assert (y[:, c] == 7.0).all(), "wrote past the last channel"


@pytest.mark.parametrize("s", [1, 2])
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("n, h, w, c", [(1, 7, 7, 3), (3, 15, 15, 24), (1, 113, 113, 40),
                                        (2, 14, 9, 17), (1, 1, 1, 16), (1, 2, 3, 33)])
def test_depthwise_matches_reference(isa, s, act, n, h, w, c):
    run(np.random.default_rng(h * c + s), n, h, w, c, s, act)


@pytest.mark.parametrize("threads", [1, 2, 5])
def test_depthwise_strided_views_and_parts(isa, threads):
    run(np.random.default_rng(1), 3, 11, 10, 24, 2, "relu", threads=threads, view=True)
    run(np.random.default_rng(2), 2, 9, 13, 40, 1, None, bias=False, threads=threads, view=True)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 2), h=st.integers(1, 12), w=st.integers(1, 12), c=st.integers(1, 40),
       s=st.sampled_from([1, 2]), act=st.sampled_from(ACTS), bias=st.booleans())
def test_depthwise_tile_edges(n, h, w, c, s, act, bias):
    """Any Wo around the PX = 4 pixel groups, any C around the vector width."""
    if KERNEL is None or KERNEL.isa() is None:
        pytest.skip("no kernels on this CPU")
    run(np.random.default_rng(h * 100 + w * 7 + c), n, h, w, c, s, act, bias)


def test_depthwise_declines_what_it_cannot_address(isa):
    x = np.ones((1, 5, 5, 8), np.float32)
    w = np.ones((3, 3, 8), np.float32)
    y = np.empty((25, 8), np.float32)
    assert not KERNEL.depthwise(1, x.astype(np.float64), w, y, None, 0, 1)  # not float32
    assert not KERNEL.depthwise(1, x, w[:, :, :4], y, None, 0, 1)  # weight of 4 channels
    assert not KERNEL.depthwise(1, x, w, y[:9], None, 0, 1)  # output of stride 2's size
    assert not KERNEL.depthwise(1, x[..., ::2], w, y, None, 0, 1)  # channels not unit stride
    with pytest.raises(ValueError, match="stride 1 or 2"):
        KERNEL.depthwise(1, x, w, y, None, 0, 3)


# ------------------------------------------------------------------ pw.conv2d reaches it
@pytest.mark.parametrize("s", [1, 2])
@pytest.mark.parametrize("act", [None, "relu", "relu6", "silu"])
@pytest.mark.parametrize("n, h, c", [(0, 7, 24), (1, 7, 3), (3, 15, 40), (1, 113, 24)])
def test_conv2d_depthwise_matches_torch(both_paths, s, act, n, h, c):
    rng = np.random.default_rng(n + h + c)
    x = rng.standard_normal((n, h, h, c)).astype(np.float32)
    w = rng.standard_normal((3, 3, 1, c)).astype(np.float32)
    b = rng.standard_normal(c).astype(np.float32)
    check_conv2d_against_torch(x, w, b, stride=s, padding=1, groups=c, activation=act)


def test_conv2d_depthwise_residual_and_views(both_paths):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 9, 9, 20)).astype(np.float32)[..., 2:]  # (2, 9, 9, 18) view
    w = rng.standard_normal((3, 3, 1, 18)).astype(np.float32)
    r = rng.standard_normal((2, 9, 9, 18)).astype(np.float32)
    check_conv2d_against_torch(x, w, None, padding=1, groups=18, activation="relu6", residual=r)


def test_conv2d_reaches_the_depthwise_kernel(monkeypatch):
    if not _native.ENABLED:
        pytest.skip("compiled kernels not built or not used on this CPU")
    calls = []
    real = _native.depthwise
    monkeypatch.setattr(_native, "depthwise", lambda *a, **k: calls.append(a) or real(*a, **k))
    x = np.ones((1, 6, 6, 8), np.float32)
    pw.conv2d(x, np.ones((3, 3, 1, 8), np.float32), stride=2, padding=1, groups=8)
    assert len(calls) == 1
    pw.conv2d(x, np.ones((3, 3, 1, 8), np.float32), padding=2, dilation=2, groups=8)
    pw.conv2d(x.astype(np.float64), np.ones((3, 3, 1, 8)), padding=1, groups=8)
    assert len(calls) == 1, "only float32, padding 1, dilation 1 reach the kernel"
