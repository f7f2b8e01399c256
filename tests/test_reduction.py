"""fit_reduction: the PCA 1×1 conv, against np.cov + eigvalsh, scikit-learn and einsum.

The references never go through pointwise's accumulator: the covariance comes from
``np.cov`` on the whole (N·H·W, C) matrix, the reconstruction from ``np.einsum``. The
exactness tests run on both accumulators (``both_paths``): NumPy's float64 blocks, and the
compiled kernel (``csrc/moments.c``) where it is built.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pointwise as pw
from oracle import to_nhwc
from pointwise import moments

LAYOUTS = ["NHWC", "HWC", "NCHW", "CHW"]


def pixels(x: np.ndarray, layout: str) -> np.ndarray:
    """(P, C) float64 pixel vectors of x in any layout."""
    x = to_nhwc(x, layout)
    return np.asarray(x, np.float64).reshape(-1, x.shape[-1])


def from_pixels(p: np.ndarray, shape4: tuple[int, ...], layout: str) -> np.ndarray:
    """Pixel vectors back to the layout (inverse of ``pixels`` for an (N, H, W, C) shape)."""
    y = p.reshape(shape4)
    return {"NHWC": y, "HWC": y[0], "NCHW": y.transpose(0, 3, 1, 2),
            "CHW": y[0].transpose(2, 0, 1)}[layout]


def sample(rng: np.random.Generator, n: int, h: int, w: int, c: int, layout: str,
           offset: float = 3.0, dtype=np.float64) -> np.ndarray:
    """Correlated pixel vectors with distinct variances (a mixing matrix) and an offset."""
    z = rng.standard_normal((n, h, w, c)) * np.geomspace(4.0, 0.05, c)  # (N, H, W, C)
    q, _ = np.linalg.qr(rng.standard_normal((c, c)))  # (C, C)
    x = (z @ q + offset * rng.standard_normal(c)).astype(dtype)  # (N, H, W, C)
    return from_pixels(x.reshape(-1, c), (n, h, w, c), layout) if layout != "NHWC" else x


def reference_eigenvalues(p: np.ndarray) -> np.ndarray:
    """Descending eigenvalues of the (ddof 0) channel covariance of the (P, C) pixels."""
    return np.linalg.eigvalsh(np.atleast_2d(np.cov(p.T, bias=True)))[::-1]  # (C,)


@pytest.fixture
def tiny_blocks(monkeypatch):
    """Blocks of 16..64 rows (the kernel's of 7), so a small test walks many blocks,
    segments and cores' shares."""
    monkeypatch.setattr(moments, "MIN_ROWS", 16)
    monkeypatch.setattr(moments, "MAX_ROWS", 64)
    monkeypatch.setattr(moments, "SEGMENT_BLOCKS", 3)
    monkeypatch.setattr(moments, "KERNEL_BLOCK_BYTES", 1)
    monkeypatch.setattr(moments, "KERNEL_MIN_ROWS", 7)


# ----------------------------------------------------------------------------------- exact
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("blocks", ["default", "tiny"])
@pytest.mark.usefixtures("both_paths")
def test_reconstruction_error_is_the_discarded_eigenvalues(layout, blocks, request):
    if blocks == "tiny":
        request.getfixturevalue("tiny_blocks")
    rng = np.random.default_rng(1)
    n = 1 if layout in ("HWC", "CHW") else 30
    x = sample(rng, n, 11, 9, 12, layout)
    p = pixels(x, layout)
    ref = reference_eigenvalues(p)
    np.testing.assert_allclose(pw.fit_reduction(x, 1, layout=layout).eigenvalues, ref,
                               rtol=1e-9, atol=1e-12 * ref[0])
    for k in (1, 3, 7, 12):
        r = pw.fit_reduction(x, k, layout=layout)
        w = np.asarray(r.weight) if layout in ("NHWC", "HWC") else np.asarray(r.weight).T
        z = p @ w + r.bias  # (P, C) @ (C, k): the C→k conv, by hand
        rw = (np.asarray(r.reconstruction_weight) if layout in ("NHWC", "HWC")
              else np.asarray(r.reconstruction_weight).T)
        back = np.einsum("pk,kc->pc", z, rw) + r.reconstruction_bias  # (P, k) @ (k, C)
        error = ((p - back) ** 2).sum(axis=1).mean()
        discarded = ref[k:].sum()
        if k == 12:
            assert error < 1e-20 * ref.sum()
        else:
            assert error == pytest.approx(discarded, rel=1e-9)
            assert r.residual == pytest.approx(discarded, rel=1e-9)
        # the operator applies the weights as they are: conv1x1(x, r.weight, r.bias, layout)
        y = pw.conv1x1(x, r.weight, r.bias, layout=layout)
        np.testing.assert_allclose(pixels(y, layout), z, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(pixels(r.reconstruct(y), layout), back, atol=1e-9)
        assert r.energy == pytest.approx(ref[:k].sum() / ref.sum(), rel=1e-12)


@pytest.mark.usefixtures("both_paths")
def test_components_match_scikit_learn_up_to_sign():
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(2)
    x = sample(rng, 40, 7, 7, 16, "NHWC")
    p = pixels(x, "NHWC")
    for k in (1, 5, 16):
        r = pw.fit_reduction(x, k)
        sk = PCA(n_components=k, svd_solver="full").fit(p)
        for mine, theirs in zip(r.components, sk.components_, strict=True):
            sign = np.sign(mine @ theirs)
            np.testing.assert_allclose(mine, sign * theirs, atol=1e-10)
        n = p.shape[0]  # scikit-learn divides by n - 1, we by n
        np.testing.assert_allclose(r.explained_variance * n / (n - 1), sk.explained_variance_,
                                   rtol=1e-10)
        np.testing.assert_allclose(r.mean, sk.mean_, rtol=1e-12)
        # orthonormal rows; each row's largest-magnitude entry is positive
        np.testing.assert_allclose(r.components @ r.components.T, np.eye(k), atol=1e-12)
        rows = np.arange(k)
        assert (r.components[rows, np.abs(r.components).argmax(axis=1)] > 0).all()


@pytest.mark.parametrize("blocks", ["default", "tiny"])
@pytest.mark.usefixtures("both_paths")
def test_streaming_100_batches_equals_one_array(blocks, request):
    if blocks == "tiny":
        request.getfixturevalue("tiny_blocks")
    rng = np.random.default_rng(3)
    x = sample(rng, 200, 8, 8, 16, "NHWC", offset=50.0)  # 12,800 pixels: one array goes
    one = pw.fit_reduction(x, 6)  # to both cores, each batch of 128 to one
    sizes = np.diff(np.linspace(0, 200, 101).astype(int))
    assert len(sizes) == 100 and sizes.sum() == 200
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    streamed = pw.fit_reduction((x[a:b] for a, b in itertools.pairwise(bounds)), 6)
    for name in ("weight", "bias", "reconstruction_weight", "reconstruction_bias",
                 "components", "mean"):
        a, b = getattr(streamed, name), getattr(one, name)
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10 * np.abs(b).max(),
                                   err_msg=name)
    np.testing.assert_allclose(streamed.eigenvalues, one.eigenvalues, rtol=1e-10)
    assert streamed.count == one.count == 12_800


@pytest.mark.usefixtures("both_paths")
def test_far_from_zero_data_keep_their_digits(tiny_blocks):
    """A mean 10⁶ times the spread: a naive Σxxᵀ − nμμᵀ would lose 12 of 16 digits."""
    rng = np.random.default_rng(4)
    x = sample(rng, 20, 9, 9, 6, "NHWC", offset=0.0) + 1e6
    np.testing.assert_allclose(pw.fit_reduction(x, 2).eigenvalues,
                               reference_eigenvalues(pixels(x, "NHWC")), rtol=1e-9)


def test_center_false_fits_the_second_moment():
    rng = np.random.default_rng(5)
    x = sample(rng, 10, 6, 6, 5, "NCHW")
    p = pixels(x, "NCHW")
    r = pw.fit_reduction(x, 2, layout="NCHW", center=False)
    assert r.bias is None and r.reconstruction_bias is None
    ref = np.linalg.eigvalsh(p.T @ p / len(p))[::-1]  # (C,)
    np.testing.assert_allclose(r.eigenvalues, ref, rtol=1e-9)
    back = p @ r.components.T @ r.components  # (P, C) @ (C, k) @ (k, C)
    assert ((p - back) ** 2).sum(1).mean() == pytest.approx(ref[2:].sum(), rel=1e-9)
    y = pw.conv1x1(x, r.weight, layout="NCHW")
    np.testing.assert_allclose(pixels(y, "NCHW"), p @ r.components.T, atol=1e-10)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int16])
def test_kernel_and_numpy_accumulators_agree(dtype, tiny_blocks, monkeypatch):
    """The same moments from the compiled kernel (float data) and NumPy's blocks; integer
    data take NumPy's path either way."""
    from pointwise.kernels import native

    rng = np.random.default_rng(9)
    x = (sample(rng, 7, 9, 11, 17, "NCHW", offset=20.0) * 100).astype(dtype)
    rows = pixels(x, "NCHW")
    ours = moments.ChannelMoments(17)
    ours.add_images(x, channels_last=False)
    monkeypatch.setattr(native, "_kernel", None)
    theirs = moments.ChannelMoments(17)
    theirs.add_images(x, channels_last=False)
    for m in (ours, theirs):
        assert m.count == len(rows)
        np.testing.assert_allclose(m.mean, rows.mean(0), rtol=1e-13)
        np.testing.assert_allclose(m.covariance, np.cov(rows.T, bias=True), rtol=1e-11,
                                   atol=1e-13 * np.abs(m.covariance).max())
    np.testing.assert_allclose(ours.scatter, theirs.scatter, rtol=1e-12,
                               atol=1e-13 * np.abs(ours.scatter).max())


# -------------------------------------------------------------------------- inputs, types
def test_tutorial_example_keeps_everything_in_one_channel():
    x = [[[1, 2], [3, 4], [5, 6]], [[7, 8], [9, 10], [11, 12]], [[13, 14], [15, 16], [17, 18]]]
    r = pw.fit_reduction(x, 1, layout="HWC")
    assert r.weight.dtype == np.float64  # integer data: float64 weights
    np.testing.assert_allclose(r.weight, [[2 ** -0.5], [2 ** -0.5]], rtol=1e-12)
    np.testing.assert_allclose(r.bias, [-19 / 2 ** 0.5], rtol=1e-12)  # −Pᵀμ, μ = (9, 10)
    assert r.energy == pytest.approx(1.0, abs=1e-15)
    np.testing.assert_allclose(r.eigenvalues, [2 * 80 / 3, 0.0], atol=1e-12)  # 2·var(1,3,…,17)
    np.testing.assert_allclose(r.reconstruct(r.transform(x)), x, atol=1e-12)


@pytest.mark.usefixtures("both_paths")
def test_strided_and_channels_last_views_equal_a_contiguous_copy():
    rng = np.random.default_rng(6)
    base = sample(rng, 12, 10, 10, 8, "NHWC")
    for view, layout in ((base[:, ::2, 1::3], "NHWC"),
                         (base.transpose(0, 3, 1, 2), "NCHW"),  # channels-last memory
                         (base[:, :, :, ::-1].transpose(0, 3, 2, 1)[:, :, ::2], "NCHW")):
        a = pw.fit_reduction(view, 3, layout=layout)
        b = pw.fit_reduction(np.ascontiguousarray(view), 3, layout=layout)
        np.testing.assert_allclose(a.components, b.components, atol=1e-12)
        # a view the kernel declines (a negative stride) is summed by NumPy: rounding apart
        np.testing.assert_allclose(a.eigenvalues, b.eigenvalues, rtol=1e-12,
                                   atol=1e-14 * b.eigenvalues[0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_channels_last_crops_go_to_the_kernel_as_views(both_paths, dtype, monkeypatch):
    """A crop is one kernel call over its N·H rows of pixels, on a view of the data (no
    copy), and equals a contiguous copy. A negative stride, which the kernel declines, is
    copied one image at a time."""
    from pointwise.kernels import native

    rng = np.random.default_rng(11)
    base = sample(rng, 5, 9, 11, 12, "NHWC", dtype=dtype)
    calls: list[tuple[int, bool]] = []
    kernel = native.moments

    def spy(x, *args, **kw):  # the calls the kernel took
        took = kernel(x, *args, **kw)
        if took:
            calls.append((x.ndim, np.shares_memory(x, base)))
        return took

    monkeypatch.setattr(native, "moments", spy)
    on_kernels = both_paths == "kernels"
    for view, want in ((base[:, :, 2:9], [(4, True)]),
                       (base[:, 1:8, ::2], [(4, True)]),
                       (base[:, :, ::-1], [(2, False)] * 5)):
        calls.clear()
        a = pw.fit_reduction(view, 4)
        assert calls == (want if on_kernels else [])
        b = pw.fit_reduction(np.ascontiguousarray(view), 4)
        np.testing.assert_allclose(a.components, b.components, atol=1e-10)
        np.testing.assert_allclose(a.eigenvalues, b.eigenvalues, rtol=1e-10)


@pytest.mark.usefixtures("both_paths")
def test_float32_data_get_float32_weights_the_operator_accepts():
    rng = np.random.default_rng(7)
    x = sample(rng, 8, 6, 6, 10, "NCHW", dtype=np.float32)
    r = pw.fit_reduction(x, 4, layout="NCHW")
    assert r.weight.dtype == r.bias.dtype == r.reconstruction_weight.dtype == np.float32
    assert r.weight.shape == (4, 10) and r.reconstruction_weight.shape == (10, 4)
    assert r.components.dtype == np.float64  # the fit itself stays float64
    ref = reference_eigenvalues(pixels(x, "NCHW"))  # float32 values, exact products in float64
    np.testing.assert_allclose(r.eigenvalues, ref, rtol=1e-9, atol=1e-12 * ref[0])
    assert r.transform(x).shape == (8, 4, 6, 6)


def test_torch_batches_from_a_data_loader():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(8)
    x = sample(rng, 64, 5, 5, 6, "NCHW", dtype=np.float32)
    loader = torch.utils.data.DataLoader(torch.from_numpy(x).requires_grad_(), batch_size=10)
    a = pw.fit_reduction(loader, 2, layout="NCHW")
    b = pw.fit_reduction(x, 2, layout="NCHW")
    np.testing.assert_allclose(a.weight, b.weight, rtol=1e-6, atol=1e-7)
    assert a.count == b.count == 64 * 25


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_property_error_is_discarded_variance(data):
    layout = data.draw(st.sampled_from(LAYOUTS))
    c = data.draw(st.integers(1, 9))
    n = 1 if layout in ("HWC", "CHW") else data.draw(st.integers(1, 4))
    h, w = data.draw(st.integers(1, 6)), data.draw(st.integers(1, 6))
    k = data.draw(st.integers(1, c))
    rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 32 - 1)))
    x = sample(rng, n, h, w, c, layout)
    r = pw.fit_reduction(x, k, layout=layout)
    p = pixels(x, layout)
    back = pixels(r.reconstruct(r.transform(x)), layout)
    ref = reference_eigenvalues(p) if len(p) > 1 else np.zeros(c)
    error = ((p - back) ** 2).sum(1).mean()
    assert error == pytest.approx(ref[k:].sum(), rel=1e-7, abs=1e-9 * max(ref.sum(), 1))


# ------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("k", [0, -1, 5])
def test_k_outside_one_to_c(k):
    with pytest.raises(ValueError, match=r"expected 1 <= k <= C = 4 .* but got k=" + str(k)):
        pw.fit_reduction(np.zeros((2, 3, 3, 4)), k)


@pytest.mark.parametrize("k", [1.5, True, "2", None])
def test_k_not_an_int(k):
    with pytest.raises(TypeError, match="expected k to be an int"):
        pw.fit_reduction(np.zeros((2, 3, 3, 4)), k)


@pytest.mark.parametrize("empty", [np.zeros((0, 3, 3, 4)), [], iter(())])
def test_empty_data(empty):
    with pytest.raises(ValueError, match="expected at least one pixel vector"):
        pw.fit_reduction(empty, 1)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.usefixtures("both_paths")
def test_nan_or_inf_names_the_batch(bad):
    batches = [np.ones((2, 3, 3, 4)) * i for i in range(5)]
    batches[3][1, 2, 0, 1] = bad
    with pytest.raises(ValueError, match="expected finite data, but got NaN or infinity in "
                                         "batch 3"):
        pw.fit_reduction(batches, 2)
    with pytest.raises(ValueError, match="in x"):
        pw.fit_reduction(np.concatenate(batches), 2)


def test_wrong_rank_channels_and_pairs():
    with pytest.raises(ValueError,
                       match=r"expected x to be 4-D \(N, H, W, C\) .* shape \(3, 3, 4\)"):
        pw.fit_reduction(np.zeros((3, 3, 4)), 1)
    with pytest.raises(ValueError, match="expected every batch to have 4 channels .* got 5 in "
                                         "batch 1"):
        pw.fit_reduction([np.ones((1, 2, 2, 4)), np.ones((1, 2, 2, 5))], 1)
    with pytest.raises(TypeError, match=r"for \(inputs, labels\) pairs pass"):
        pw.fit_reduction(iter([(np.ones((1, 2, 2, 4)), np.ones(1))]), 1)
    with pytest.raises(ValueError, match="expected layout to be one of"):
        pw.fit_reduction(np.ones((1, 2, 2, 4)), 1, layout="NWHC")
    with pytest.raises(TypeError, match="expected x to be an array or an iterable"):
        pw.fit_reduction(3.0, 1)
    with pytest.raises(TypeError, match="dtype bool"):
        pw.fit_reduction(np.ones((1, 2, 2, 4), bool), 1)
