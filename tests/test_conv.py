"""conv1x1 and conv1x1_backward against torch, NumPy einsum and finite differences."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import pointwise as pw
from forked import answer_from_forked_child
from oracle import check_against_torch, numeric_grads, reference_conv

pytestmark = pytest.mark.usefixtures("both_paths")

torch = pytest.importorskip("torch")

LAYOUTS = ["NHWC", "HWC", "NCHW", "CHW"]
ACTS = [None, "relu", "relu6", "silu", "hardswish"]
SIZES = [(1, 1), (3, 5), (7, 7), (17, 13)]
CHANNELS = [1, 2, 3, 5, 8, 12, 16, 31, 64, 67]
BATCHES = [0, 1, 2, 3]
TUTORIAL_X = [[[1, 2], [3, 4], [5, 6]], [[7, 8], [9, 10], [11, 12]], [[13, 14], [15, 16], [17, 18]]]
TUTORIAL_Y = [[[5], [11], [17]], [[23], [29], [35]], [[41], [47], [53]]]


def make(layout, n, hw, c, f, groups, bias, dtype, seed=0, weight_2d=False):
    """Random x, w, b in ``layout`` with the layout's own weight format."""
    rng = np.random.default_rng(seed)
    h, w_ = hw
    shape = {"NHWC": (n, h, w_, c), "HWC": (h, w_, c), "NCHW": (n, c, h, w_), "CHW": (c, h, w_)}
    x = rng.standard_normal(shape[layout]).astype(dtype)
    cg = c // groups
    if layout in ("NHWC", "HWC"):
        wshape = (cg, f) if weight_2d else (1, 1, cg, f)
    else:
        wshape = (f, cg) if weight_2d else (f, cg, 1, 1)
    w = rng.standard_normal(wshape).astype(dtype)
    b = rng.standard_normal(f).astype(dtype) if bias else None
    return x, w, b


def grid_cases():
    """Every (layout, stride, padding, activation), each with a rotating choice of the rest.

    The full product of the issue's grid is ~10^5 cases; rotating the other axes through it
    covers every value of every axis many times, in every combination of the four above.
    """
    cases = []
    for i, (layout, stride, padding, act) in enumerate(
        itertools.product(LAYOUTS, [1, 2, 3], [0, 1], ACTS)
    ):
        c = CHANNELS[i % len(CHANNELS)]
        gchoice = [1, 2, 4, c][(i // 3) % 4]
        groups = gchoice if c % gchoice == 0 else 1
        f = groups * (1 + (i * 7) % 9)
        n = BATCHES[(i // 2) % 4] if layout in ("NHWC", "NCHW") else 1
        cases.append((layout, n, SIZES[i % 4], c, f, groups, stride, padding, act, i % 2 == 0))
    return cases


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(
    "layout,n,hw,c,f,groups,stride,padding,act,bias", grid_cases(),
    ids=lambda v: str(v),
)
def test_grid_against_torch(layout, n, hw, c, f, groups, stride, padding, act, bias, dtype):
    x, w, b = make(layout, n, hw, c, f, groups, bias, dtype, seed=c * 31 + f)
    check_against_torch(x, w, b, layout=layout, stride=stride, padding=padding, groups=groups,
                        activation=act)


GROUP_CASES = sorted({(c, g) for c in [1, 2, 3, 4, 8, 12, 67] for g in (1, 2, 4, c) if c % g == 0})


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("c,groups", GROUP_CASES)
def test_groups_against_torch(layout, c, groups):
    x, w, b = make(layout, 2, (3, 5), c, 2 * groups, groups, True, np.float64, seed=c)
    check_against_torch(x, w, b, layout=layout, groups=groups, activation="relu")


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("act", ACTS)
def test_backward_without_y_recomputes(layout, act):
    x, w, b = make(layout, 2, (4, 3), 6, 4, 2, True, np.float64, seed=5)
    check_against_torch(x, w, b, layout=layout, groups=2, padding=1, stride=2, activation=act,
                        pass_y=False)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_two_dimensional_weight(layout):
    x, w, b = make(layout, 2, (3, 4), 6, 4, 2, True, np.float64, weight_2d=True)
    check_against_torch(x, w, b, layout=layout, groups=2, activation="silu")


# ------------------------------------------------------------- NumPy-only references
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("act", ACTS)
def test_matches_einsum_reference(layout, act):
    x, w, b = make(layout, 3, (5, 6), 12, 8, 4, True, np.float64, seed=7)
    opts = dict(layout=layout, stride=(2, 1), padding=(1, 2), groups=4, activation=act)
    np.testing.assert_allclose(pw.conv1x1(x, w, b, **opts), reference_conv(x, w, b, **opts),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("act", ACTS)
def test_backward_matches_finite_differences(layout, act):
    x, w, b = make(layout, 2, (4, 5), 6, 4, 2, True, np.float64, seed=11)
    opts = dict(layout=layout, stride=2, padding=1, groups=2, activation=act)
    g = np.random.default_rng(3).standard_normal(pw.conv1x1(x, w, b, **opts).shape)
    for name, idx, numeric, analytic in numeric_grads(g, x, w, b, **opts):
        assert abs(numeric - analytic) <= 1e-6 * max(1.0, abs(numeric)), (name, idx, numeric,
                                                                          analytic)


def test_fp32_backward_against_torch_large_channels():
    x, w, b = make("NHWC", 2, (9, 9), 130, 96, 1, True, np.float32, seed=2)
    check_against_torch(x, w, b, layout="NHWC", activation="hardswish")


# --------------------------------------------------------------------- tutorial, exact
def test_tutorial_example_is_exact_integers():
    y = pw.conv1x1(TUTORIAL_X, [[[[1], [2]]]], layout="HWC")
    assert y.dtype.kind == "i"
    assert y.tolist() == TUTORIAL_Y


def test_tutorial_example_in_every_layout():
    x = np.array(TUTORIAL_X)  # (H, W, C)
    expect = np.array(TUTORIAL_Y)  # (H, W, F)
    assert pw.conv1x1(x[None], [[1], [2]]).tolist() == [expect.tolist()]
    assert pw.conv1x1(x.transpose(2, 0, 1), [[1, 2]], layout="CHW").tolist() == (
        expect.transpose(2, 0, 1).tolist()
    )
    assert pw.conv1x1(x.transpose(2, 0, 1)[None], [[[[1]], [[2]]]], layout="NCHW").tolist() == (
        [expect.transpose(2, 0, 1).tolist()]
    )


def test_integers_are_exact_beyond_float64():
    # Products near 2**62 lose low bits in float64 but are exact in int64.
    x = np.full((1, 1, 2, 2), 3**19, dtype=np.int64)  # NHWC
    w = np.array([[3**19 + 1], [1]], dtype=np.int64)
    y = pw.conv1x1(x, w)
    assert int(y[0, 0, 0, 0]) == 3**19 * (3**19 + 1) + 3**19
    assert float(3**19 * (3**19 + 1) + 3**19) != 3**19 * (3**19 + 1) + 3**19


# ---------------------------------------------------------------------------- dtypes
@pytest.mark.parametrize("half", ["float16", "bfloat16"])
@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_half_types_keep_dtype_and_accumulate_in_float32(half, layout):
    if half == "bfloat16":
        ml_dtypes = pytest.importorskip("ml_dtypes")
        dt = np.dtype(ml_dtypes.bfloat16)
    else:
        dt = np.dtype(np.float16)
    # 4096 ones: a half-precision running sum stalls at 2048 (fp16) / 256 (bf16).
    c = 4096
    x = np.ones((1, 2, 1, c) if layout == "NHWC" else (1, c, 2, 1), dt)
    w = np.ones((c, 3) if layout == "NHWC" else (3, c), dt)
    y = pw.conv1x1(x, w, np.zeros(3, dt), layout=layout, activation="relu")
    assert y.dtype == dt
    assert np.all(y.astype(np.float32) == 4096.0)


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_half_matches_float32_compute(layout):
    x, w, b = make(layout, 2, (5, 5), 16, 8, 2, True, np.float32, seed=3)
    opts = dict(layout=layout, groups=2, stride=2, padding=1, activation="silu")
    h = pw.conv1x1(x.astype(np.float16), w.astype(np.float16), b.astype(np.float16), **opts)
    ref = reference_conv(x.astype(np.float16), w.astype(np.float16), b.astype(np.float16), **opts)
    assert h.dtype == np.float16
    np.testing.assert_allclose(h.astype(np.float64), ref, rtol=2e-3, atol=2e-3)
    gx, gw, gb = pw.conv1x1_backward(np.ones_like(h), x.astype(np.float16), w.astype(np.float16),
                                     bias=b.astype(np.float16), **opts)
    assert gx.dtype == gw.dtype == gb.dtype == np.float16


def test_mixed_float_dtypes_raise_type_error():
    x = np.ones((1, 2, 2, 3), np.float32)
    with pytest.raises(TypeError, match="float32.*float64"):
        pw.conv1x1(x, np.ones((3, 2), np.float64))
    with pytest.raises(TypeError, match="bias is float64"):
        pw.conv1x1(x, np.ones((3, 2), np.float32), np.ones(2))


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int16, np.int32, np.uint64])
def test_narrow_integers_accumulate_in_int64(dtype):
    x = np.full((1, 1, 1, 2), 100, dtype)
    y = pw.conv1x1(x, np.full((2, 1), 100, dtype), np.array([7], dtype))
    assert y.dtype == np.int64 and y.item() == 100 * 100 * 2 + 7


def test_integer_input_with_float_weight_takes_float_dtype():
    y = pw.conv1x1(np.ones((1, 1, 1, 2), np.int32), np.ones((2, 1), np.float32))
    assert y.dtype == np.float32 and y.item() == 2.0


# ------------------------------------------------------------------------ edge cases
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("act", ACTS)
def test_zero_input_channels_give_activation_of_bias(layout, act):
    x, w, b = make(layout, 2, (3, 4), 0, 5, 1, True, np.float64)
    y = pw.conv1x1(x, w, b, layout=layout, activation=act, padding=1)
    expected = reference_conv(np.zeros((1, 1, 1, 1)), np.zeros((1, 5)), b, activation=act)[0, 0, 0]
    ch_axis = -1 if layout in ("NHWC", "HWC") else (1 if layout == "NCHW" else 0)
    assert y.shape[ch_axis] == 5 and y.size > 0
    np.testing.assert_allclose(np.moveaxis(y, ch_axis, -1), np.broadcast_to(expected,
                               np.moveaxis(y, ch_axis, -1).shape))
    gx, gw, gb = pw.conv1x1_backward(np.ones_like(y), x, w, bias=b, layout=layout,
                                     activation=act, padding=1)
    assert gx.shape == x.shape and gw.shape == w.shape and gb.shape == b.shape


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
@pytest.mark.parametrize("dims", [dict(n=0), dict(h=0), dict(f=0), dict(n=0, c=0)])
def test_zero_size_axes(layout, dims):
    n, h, c, f = dims.get("n", 2), dims.get("h", 3), dims.get("c", 4), dims.get("f", 3)
    x, w, b = make(layout, n, (h, 5), c, f, 1, True, np.float64)
    for padding in (0, 1):
        opts = dict(layout=layout, padding=padding, activation="relu")
        y = pw.conv1x1(x, w, b, **opts)
        ref = reference_conv(x, w, b, **opts)
        assert y.shape == ref.shape
        np.testing.assert_allclose(y, ref)
        gx, gw, gb = pw.conv1x1_backward(np.ones_like(y), x, w, bias=b, **opts)
        assert gx.shape == x.shape and gw.shape == w.shape and gb.shape == b.shape
        np.testing.assert_allclose(gb, np.ones_like(y).sum(axis=(0, 1, 2) if layout == "NHWC"
                                                            else (0, 2, 3)) * (b > 0))


def test_noncontiguous_fortran_and_negative_strides():
    rng = np.random.default_rng(0)
    base = rng.standard_normal((3, 10, 12, 8))
    w = rng.standard_normal((8, 6))
    b = rng.standard_normal(6)
    views = {
        "sliced": base[:, ::2, 1::3, :],
        "fortran": np.asfortranarray(base),
        "negative": base[::-1, :, ::-1, ::-1],
        "channel-slice": base[..., 1:7],
    }
    for name, xv in views.items():
        ww = w[: xv.shape[-1]]
        for opts in (dict(), dict(stride=2, padding=1, activation="relu")):
            got = pw.conv1x1(xv, ww, b, **opts)
            np.testing.assert_allclose(got, reference_conv(xv, ww, b, **opts), rtol=1e-12,
                                       atol=1e-12, err_msg=name)
            g = np.ones_like(got)
            gx, _, _ = pw.conv1x1_backward(g, xv, ww, bias=b, **opts)
            gx_ref, _, _ = pw.conv1x1_backward(g, np.ascontiguousarray(xv), ww, bias=b, **opts)
            np.testing.assert_allclose(gx, gx_ref, rtol=1e-12, atol=1e-12, err_msg=name)


def test_channels_last_memory_passed_as_nchw():
    # A torch-style channels_last tensor: NCHW shape over NHWC memory.
    x, w, b = make("NHWC", 2, (5, 7), 16, 8, 1, True, np.float32)
    xcf = x.transpose(0, 3, 1, 2)  # (N, C, H, W) view, strides of NHWC
    wcf = w[0, 0].T[:, :, None, None].copy()  # OIHW
    check_against_torch(np.ascontiguousarray(xcf), wcf, b, layout="NCHW", activation="relu")
    np.testing.assert_allclose(
        pw.conv1x1(xcf, wcf, b, layout="NCHW", activation="relu"),
        pw.conv1x1(np.ascontiguousarray(xcf), wcf, b, layout="NCHW", activation="relu"),
        rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_stride_larger_than_image(layout):
    x, w, b = make(layout, 2, (3, 2), 4, 3, 1, True, np.float64)
    check_against_torch(x, w, b, layout=layout, stride=5)
    check_against_torch(x, w, b, layout=layout, stride=(7, 4), padding=(0, 1), activation="relu")


@pytest.mark.parametrize("act", ACTS)
def test_padding_border_equals_activation_of_bias(act):
    x, w, b = make("NHWC", 2, (4, 4), 3, 5, 1, True, np.float64)
    b[0], b[1] = -2.0, 7.0  # exercise relu and relu6 clipping on the border
    y = pw.conv1x1(x, w, b, padding=2, activation=act)
    border = np.concatenate([y[:, :2].reshape(-1, 5), y[:, -2:].reshape(-1, 5),
                             y[:, :, :2].reshape(-1, 5), y[:, :, -2:].reshape(-1, 5)])
    np.testing.assert_allclose(border, np.broadcast_to(reference_conv(
        np.zeros((1, 1, 1, 3)), w, b, activation=act)[0, 0, 0], border.shape))
    y0 = pw.conv1x1(x, w, None, padding=2, activation=act)
    assert np.all(y0[:, :2] == 0) and np.all(y0[:, :, -2:] == 0)


def test_nan_and_inf_propagate():
    x = np.ones((1, 2, 3, 2))
    x[0, 0, 0, 0] = np.nan
    x[0, 1, 1, 1] = np.inf
    w = np.array([[1.0, 0.0], [2.0, -1.0]])
    y = pw.conv1x1(x, w, activation="relu")
    with np.errstate(invalid="ignore"):
        ref = reference_conv(x, w, activation="relu")
    np.testing.assert_array_equal(y, ref)  # NaN == NaN and inf == inf for this assertion
    assert np.isnan(y[0, 0, 0]).all()
    assert y[0, 1, 1, 0] == np.inf and y[0, 1, 1, 1] == 0  # relu(-inf) = 0
    assert np.isfinite(y[0, 0, 1:]).all()


# --------------------------------------------------------------------- out= and purity
def test_out_is_filled_and_returned():
    x, w, b = make("NHWC", 2, (6, 6), 8, 4, 1, True, np.float32)
    out = np.full((2, 4, 4, 4), np.nan, np.float32)
    y = pw.conv1x1(x, w, b, out=out, stride=2, padding=1, activation="relu6")
    assert y is out
    np.testing.assert_allclose(out, reference_conv(x, w, b, stride=2, padding=1,
                                                   activation="relu6"), rtol=1e-5, atol=1e-5)


def test_out_noncontiguous_view():
    x, w, b = make("NCHW", 2, (6, 6), 8, 4, 1, True, np.float64)
    big = np.zeros((2, 8, 6, 6))
    view = big[:, ::2]  # (2, 4, 6, 6) with a channel stride of 2
    pw.conv1x1(x, w, b, layout="NCHW", out=view, activation="silu")
    np.testing.assert_allclose(view, reference_conv(x, w, b, layout="NCHW", activation="silu"))
    assert np.all(big[:, 1::2] == 0)


def test_out_errors():
    x, w, _ = make("NHWC", 1, (2, 2), 3, 4, 1, False, np.float32)
    with pytest.raises(ValueError, match=r"expected out of shape \(1, 2, 2, 4\)"):
        pw.conv1x1(x, w, out=np.empty((1, 2, 2, 3), np.float32))
    with pytest.raises(ValueError, match="dtype float32"):
        pw.conv1x1(x, w, out=np.empty((1, 2, 2, 4), np.float64))
    with pytest.raises(ValueError, match="overlap"):
        xx = np.zeros((1, 2, 2, 4), np.float32)
        pw.conv1x1(xx, np.eye(4, dtype=np.float32), out=xx)
    with pytest.raises(TypeError, match="numpy.ndarray"):
        pw.conv1x1(x, w, out=[0])


def test_inputs_are_never_modified():
    for layout, opts in itertools.product(["NHWC", "NCHW"], [
        dict(), dict(activation="silu"), dict(stride=2, padding=1, groups=2, activation="relu"),
    ]):
        x, w, b = make(layout, 2, (5, 5), 4, 6, opts.get("groups", 1), True, np.float32)
        for a in (x, w, b):
            a.setflags(write=False)  # any write would raise
        copies = [a.copy() for a in (x, w, b)]
        y = pw.conv1x1(x, w, b, layout=layout, **opts)
        g = np.ones_like(y)
        g.setflags(write=False)
        pw.conv1x1_backward(g, x, w, bias=b, layout=layout, **opts)
        for a, c in zip((x, w, b), copies, strict=True):
            np.testing.assert_array_equal(a, c)


def test_large_blocked_paths_match_reference(monkeypatch):
    # Small blocks force many blocks, so block edges are exercised in both layouts.
    import pointwise.kernels.gemm as conv

    monkeypatch.setattr(conv, "BLOCK_BYTES", 1024)
    monkeypatch.setattr(conv, "MIN_BLOCK_ROWS", 7)
    monkeypatch.setattr(conv, "POOL_MIN_MACS", 0)  # share the blocks among the cores
    shared = _count_pool_calls(monkeypatch)
    for layout in ("NHWC", "NCHW"):
        x, w, b = make(layout, 3, (11, 13), 10, 6, 2, True, np.float64, seed=4)
        for opts in (dict(), dict(stride=(2, 3), padding=(1, 0))):
            opts = dict(layout=layout, groups=2, activation="hardswish", **opts)
            np.testing.assert_allclose(pw.conv1x1(x, w, b, **opts),
                                       reference_conv(x, w, b, **opts), rtol=1e-12, atol=1e-12)
            plain = {**opts, "activation": None}  # plain calls share the cores too
            np.testing.assert_allclose(pw.conv1x1(x, w, **plain),
                                       reference_conv(x, w, **plain), rtol=1e-12, atol=1e-12)
    assert shared  # the pool really ran (it declines on a one-core machine: see _blas)


@pytest.mark.parametrize("merge_bytes", [1, 3000, 1 << 30])  # one image a chunk, some, all
def test_merged_channels_first_backward_in_chunks(monkeypatch, merge_bytes):
    # Images under MERGE_PIXELS pixels take the merged backward; small MERGE_BYTES forces
    # chunks of one or a few images, so chunk edges and the accumulation of grad_w are hit.
    import pointwise.conv as conv

    monkeypatch.setattr(conv, "MERGE_BYTES", merge_bytes)
    x, w, b = make("NCHW", 5, (7, 6), 12, 8, 4, True, np.float64, seed=5)
    for opts in (dict(), dict(stride=2, padding=1), dict(activation="silu")):
        check_against_torch(x, w, b, layout="NCHW", groups=4, **opts)
    xh, wh, bh = make("NCHW", 3, (5, 5), 8, 4, 1, True, np.float16, seed=6)
    g = np.ones((3, 4, 5, 5), np.float16)
    gx, gw, _ = pw.conv1x1_backward(g, xh, wh, bias=bh, layout="NCHW")
    gx32, gw32, _ = pw.conv1x1_backward(g.astype(np.float32), xh.astype(np.float32),
                                        wh.astype(np.float32), bias=bh.astype(np.float32),
                                        layout="NCHW")
    assert gx.dtype == np.float16  # half: the copy back goes through a cast
    np.testing.assert_allclose(gx, gx32, rtol=2e-3, atol=2e-3)
    np.testing.assert_allclose(gw, gw32, rtol=2e-3, atol=2e-2)


def _count_pool_calls(monkeypatch) -> list[int]:
    """Record each time the fused path hands blocks to the cores (True when they took them)."""
    import pointwise.kernels.gemm as gemm

    calls: list[int] = []
    real = gemm.parallel_rows

    def counted(total, work, min_rows):
        took = real(total, work, min_rows)
        if took:
            calls.append(total)
        return took

    monkeypatch.setattr(gemm, "parallel_rows", counted)
    if gemm.cores() < 2:
        calls.append(0)  # one core: nothing to share, and nothing to check here
    return calls


def test_parallel_blocks_restore_blas_threads_and_propagate_errors(monkeypatch):
    from pointwise.kernels import blas as _blas

    if _blas.openblas() is None:
        pytest.skip("no OpenBLAS found in this process to steer")  # not counted as a pass
    import pointwise.kernels.gemm as gemm

    monkeypatch.setattr(gemm, "POOL_MIN_MACS", 0)
    shared = _count_pool_calls(monkeypatch)
    before = _blas.openblas().get_threads()
    # float64: the compiled float32 kernels would take the call off the pool
    x, w, b = make("NHWC", 8, (32, 32), 64, 64, 1, True, np.float64)
    y = pw.conv1x1(x, w, b, activation="relu")
    np.testing.assert_allclose(y, reference_conv(x, w, b, activation="relu"), rtol=1e-4,
                               atol=1e-4)
    assert _blas.openblas().get_threads() == before and shared

    def boom(r0, r1):
        raise RuntimeError("share failed")

    monkeypatch.setattr(_blas, "cores", lambda: 2)
    with pytest.raises(RuntimeError, match="share failed"):
        _blas.parallel_rows(10, boom, 1)
    assert _blas.openblas().get_threads() == before


def test_parallel_path_works_in_a_forked_child(monkeypatch):
    # The pool's threads do not survive fork(); a child must build its own, not hang.
    import pointwise.kernels.gemm as gemm
    from pointwise.kernels import fastpath as _fastpath

    monkeypatch.setattr(gemm, "POOL_MIN_MACS", 0)  # the fused blocks go to the pool
    monkeypatch.setattr(_fastpath, "MAX_MACS", 0)  # not to the small-call path
    shared = _count_pool_calls(monkeypatch)
    x, w, b = make("NHWC", 4, (16, 16), 32, 16, 1, True, np.float64)
    expected = reference_conv(x, w, b, activation="relu")
    np.testing.assert_allclose(pw.conv1x1(x, w, b, activation="relu"), expected)  # pool made
    assert shared

    def child():
        return bool(np.allclose(pw.conv1x1(x, w, b, activation="relu"), expected))

    assert answer_from_forked_child(child), "the forked child hung or computed a wrong result"
