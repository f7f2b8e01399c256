"""compress(): each 1×1 conv replaced by a rank-k pair fitted to its responses.

The reference collects every layer's responses itself (torch float64 conv2d on the layer's
input, captured by a hook), takes ``np.cov`` and ``eigh``, and builds the projector
``P Pᵀ``; the pair must equal ``P Pᵀ (W x + b − ȳ) + ȳ`` with the k the energy asks for.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import pointwise.models as pm  # noqa: E402
from pointwise.nn import (  # noqa: E402
    Conv1x1,
    LowRankConv1x1,
    compress,
    compress_structure,
    convert,
    to_conv2d,
)
from pointwise.nn.report import LayerCompression, rank_for_energy  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def low_rank_images(n: int, c: int, r: int, size: int = 6, seed: int = 0) -> torch.Tensor:
    """(N, C, H, W) float64 images whose pixel vectors span an r-dim affine subspace."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, r, size, size, generator=g, dtype=torch.float64)
    mix = torch.randn(c, r, generator=g, dtype=torch.float64)
    return torch.einsum("cr,nrhw->nchw", mix, z) + torch.randn(c, 1, 1, generator=g,
                                                               dtype=torch.float64)


def responses(model: nn.Module, conv: nn.Module, x: torch.Tensor) -> np.ndarray:
    """(P, F): the pre-activation responses of ``conv`` on x, from F.conv2d in float64."""
    got = []

    def hook(m, args):
        w, b = m.weight.double(), None if m.bias is None else m.bias.double()
        y = nn.functional.conv2d(args[0].double(), w, b, m.stride, m.padding, groups=m.groups)
        got.append(y.permute(0, 2, 3, 1).reshape(-1, y.shape[1]))  # (N·Ho·Wo, F)

    h = conv.register_forward_pre_hook(hook)
    with torch.no_grad():
        model(x)
    h.remove()
    return torch.cat(got).numpy()


def reference_pair(y: np.ndarray, energy: float) -> tuple[int, np.ndarray, np.ndarray]:
    """k, the projector P Pᵀ and ȳ, from the responses alone."""
    values, vectors = np.linalg.eigh(np.cov(y.T, bias=True))
    values, vectors = values[::-1], vectors[:, ::-1]
    kept = np.cumsum(values) / values.sum()
    k = int(np.argmax(kept >= energy * (1 - 1e-12)) + 1)
    p = vectors[:, :k]  # (F, k)
    return k, p @ p.T, y.mean(0)  # (F, F)


def composed(pair: LowRankConv1x1) -> tuple[np.ndarray, np.ndarray]:
    """The pair as one affine map: (F, C) weight and (F,) bias."""
    w1 = pair.reduce.weight.detach().double()[:, :, 0, 0].numpy()  # (k, C)
    w2 = pair.expand.weight.detach().double()[:, :, 0, 0].numpy()  # (F, k)
    b1, b2 = pair.reduce.bias.detach().double().numpy(), pair.expand.bias.detach().double().numpy()
    return w2 @ w1, w2 @ b1 + b2  # (F, k) @ (k, C)


# ----------------------------------------------------------------------------- the formula
@pytest.mark.parametrize("energy", [0.5, 0.9, 0.99])
@pytest.mark.parametrize("geometry", [{}, {"stride": 2}, {"stride": 2, "padding": 1},
                                      {"groups": 4}])
def test_pair_is_the_projection_of_the_responses(energy, geometry):
    torch.manual_seed(0)
    conv = Conv1x1(16, 48, **geometry).double().eval()
    model = nn.Sequential(conv, nn.ReLU()).eval()
    x = low_rank_images(40, 16, 12, seed=1)
    small, report = compress(model, x, energy=energy)
    y = responses(model, model[0], x)  # from the original model
    k, proj, mean = reference_pair(y, energy)
    (layer,) = report.layers
    assert layer.rank == k and layer.replaced == (k * 16 + k * 48 < 16 // conv.groups * 48)
    assert layer.replaced == (k <= layer.break_even) and layer.rank_at(energy) == k
    size = 6 if not geometry.get("stride") else (6 + 2 * geometry.get("padding", 0) - 1) // 2 + 1
    assert layer.macs_at(k) == size * size * (16 * k + k * 48)
    if not layer.replaced:
        assert isinstance(small[0], Conv1x1) and layer.macs_after == layer.macs_before
        return
    pair = small[0]
    assert isinstance(pair, LowRankConv1x1) and pair.rank == k
    assert pair.expand.activation == "relu" and isinstance(small[1], nn.Identity)  # fused
    w_pair, b_pair = composed(pair)
    w = np.zeros((48, 16))  # the original weight, groups laid out block-diagonally
    g = conv.groups
    for i in range(g):
        rows, cols = slice(i * 48 // g, (i + 1) * 48 // g), slice(i * 16 // g, (i + 1) * 16 // g)
        w[rows, cols] = conv.weight.detach()[rows, :, 0, 0].numpy()
    b = conv.bias.detach().numpy()
    np.testing.assert_allclose(w_pair, proj @ w, atol=1e-10)  # P Pᵀ W
    np.testing.assert_allclose(b_pair, proj @ (b - mean) + mean, atol=1e-10)
    # and on the data: the reconstruction error is what the discarded eigenvalues say
    y_hat = responses(small, pair.reduce, x) @ pair.expand.weight.detach()[:, :, 0, 0].numpy().T
    y_hat += pair.expand.bias.detach().numpy()
    error = ((y - y_hat) ** 2).sum(1).mean()
    values = np.linalg.eigvalsh(np.cov(y.T, bias=True))[::-1]
    assert error == pytest.approx(values[k:].sum(), rel=1e-8, abs=1e-12)
    assert layer.energy == pytest.approx(values[:k].sum() / values.sum(), rel=1e-9)
    assert layer.macs_before == size * size * 16 // g * 48
    assert layer.macs_after == size * size * (16 * k + k * 48)


def test_full_rank_energy_reproduces_the_model_exactly():
    """Data in a 5-dim affine subspace: energy 1 keeps k = 5, and the output is unchanged."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(24, 64, 1), nn.BatchNorm2d(64), nn.Identity(),
                          nn.Conv2d(64, 64, 1, stride=2, padding=1), nn.ReLU6()).double()
    with torch.no_grad():  # a BatchNorm that is not the identity
        bn = model[1]
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
    model.eval()
    x = low_rank_images(30, 24, 5, seed=2)
    small, report = compress(model, x, energy=1.0)
    assert report.folded == [("0", "1")] and isinstance(small[1], nn.Identity)
    assert [la.rank for la in report.layers] == [5, 6]  # the padded pixels add a 6th
    assert all(la.replaced for la in report.layers)
    with torch.no_grad():
        np.testing.assert_allclose(small(x).numpy(), model(x).numpy(), atol=1e-10)
    assert report.macs_after < report.macs_before
    assert "2 of 2 1×1 convs replaced, 1 BatchNorm folded, fitted on 30 images" in str(report)


def test_float32_model_and_a_data_loader_of_pairs():
    torch.manual_seed(2)
    model = nn.Sequential(Conv1x1(32, 64, activation="relu"), Conv1x1(64, 64)).eval()
    x = low_rank_images(64, 32, 6, seed=3).float()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, torch.zeros(64)),
                                         batch_size=16)
    a, report_a = compress(model, loader, energy=0.999)
    b, report_b = compress(model, x, energy=0.999, batch_size=7)
    assert report_a.ranks == report_b.ranks and report_a.images == 64
    assert a[0].expand.weight.dtype == torch.float32
    assert a[0].expand.activation == "relu"
    with torch.no_grad():
        ya, yb, y = a(x), b(x), model(x)
    torch.testing.assert_close(ya, yb, rtol=1e-4, atol=1e-4)
    assert (ya - y).abs().max() < 0.05 * y.abs().max()


def test_rank_and_layer_selection():
    torch.manual_seed(3)
    model = nn.Sequential()
    model.add_module("a", Conv1x1(32, 32))
    model.add_module("b", nn.Sequential(Conv1x1(32, 64), Conv1x1(64, 8)))
    model.eval()
    x = torch.randn(8, 32, 5, 5)
    _, report = compress(model, x, rank=4)
    assert [(la.name, la.rank) for la in report.layers] == [("a", 4), ("b.0", 4), ("b.1", 4)]
    assert [la.replaced for la in report.layers] == [True, True, True]
    small, report = compress(model, x, rank=12, layers="b.*")
    assert [la.name for la in report.layers] == ["b.0", "b.1"]
    assert isinstance(small.a, Conv1x1) and isinstance(small.b[0], LowRankConv1x1)
    assert isinstance(small.b[1], Conv1x1)  # 64·8 + 8·8 < 64·12 + 12·8: no saving
    assert report.layers[1].rank == 8 and "kept: C·k + k·F" in str(report)
    assert isinstance(model.a, Conv1x1)  # not inplace: the original is untouched


def test_fused_shortcut_passes_through_the_pair():
    torch.manual_seed(4)
    model = pm.create("resnet_digits").eval()
    fast, _ = convert(model)  # every bottleneck adds its shortcut in conv3
    x = torch.rand(16, 1, 8, 8)
    small, _ = compress(fast, x, rank=8, layers="features.2.conv3")
    assert isinstance(small.features[2].conv3, LowRankConv1x1)
    with torch.no_grad():
        got = small(x)
        block = small.features[2]
        assert block.shortcut_fused
    assert got.shape == (16, 10) and torch.isfinite(got).all()
    # the pair with a residual: expand(reduce(x)) + residual, then the activation
    pair = LowRankConv1x1(8, 3, 16, activation="relu").eval()
    xi, r = torch.randn(2, 8, 4, 4), torch.randn(2, 16, 4, 4)
    with torch.no_grad():
        z = pair.expand.weight[:, :, 0, 0] @ (pair.reduce.weight[:, :, 0, 0] @ xi.flatten(2)
                                              + pair.reduce.bias[:, None])
        want = torch.relu(z + pair.expand.bias[:, None] + r.flatten(2)).reshape(2, 16, 4, 4)
        torch.testing.assert_close(pair(xi, residual=r), want, rtol=1e-5, atol=1e-5)


def test_structure_rebuilds_for_the_state_dict_and_to_conv2d():
    torch.manual_seed(5)
    model = pm.create("nin_digits").eval()
    x = torch.rand(32, 1, 8, 8)
    small, report = compress(model, x, energy=0.9)
    assert report.ranks  # something was replaced
    fresh = compress_structure(pm.create("nin_digits").eval(), report.ranks)
    fresh.load_state_dict(small.state_dict())  # strict: the same keys and shapes
    plain = to_conv2d(small)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), small(x))
        torch.testing.assert_close(plain(x), small(x), rtol=1e-4, atol=1e-5)
    assert not any(isinstance(m, Conv1x1) for m in plain.modules())
    with pytest.raises(ValueError, match="expected a Conv1x1 named 'nope'"):
        compress_structure(pm.create("nin_digits").eval(), {"nope": 2})


# ----------------------------------------------------------------- the spectrum and the bound
@given(c=st.integers(1, 300), f=st.integers(1, 300), g=st.sampled_from([1, 2, 4]))
def test_break_even_is_the_largest_rank_that_saves(c, f, g):
    layer = LayerCompression("x", c * g, f * g, g, 1, 1.0, 0, 0, False)
    k, before = layer.break_even, c * f * g  # C/G·F with C = c·g, F = f·g
    assert k >= 0 and (k == 0 or k * (c * g + f * g) < before)
    assert (k + 1) * (c * g + f * g) >= before


def test_rank_for_energy_at_the_edges():
    assert rank_for_energy([3.0, 1.0], 0.75) == 1 and rank_for_energy([3.0, 1.0], 0.76) == 2
    assert rank_for_energy([2.0, 1.0, 1.0, 0.0], 1.0) == 3  # the zero direction is not needed
    assert rank_for_energy([0.0, 0.0], 0.5) == 1 and rank_for_energy([], 0.9) == 1


def test_the_spectrum_gives_the_rank_compress_chooses_at_every_energy():
    """One fit's report predicts the rank, energy kept, MACs and replacement at any energy."""
    torch.manual_seed(6)
    model = pm.create("nin_digits").eval()
    x = torch.rand(24, 1, 8, 8)
    _, report = compress(model, x, energy=0.99)
    assert all(len(la.spectrum) == la.out_channels for la in report.layers)
    for energy in (0.5, 0.9, 0.95, 0.999, 1.0):
        _, other = compress(model, x, energy=energy)
        for la, got in zip(report.layers, other.layers, strict=True):
            assert la.rank_at(energy) == got.rank
            assert la.energy_at(got.rank) == pytest.approx(got.energy, rel=1e-12)
            assert got.replaced == (got.rank <= la.break_even)
            if got.replaced:
                assert la.macs_at(got.rank) == got.macs_after
    assert "saves if k ≤" in str(report)
    cccp = report.layers[0]  # 32 -> k -> 32: saves for k ≤ 15
    assert cccp.break_even == 15 and f"{cccp.macs_before:>12,}" in str(report)


# ------------------------------------------------------------------- the asymmetric fit
def test_asymmetric_fit_is_the_reduced_rank_regression_on_the_compressed_inputs():
    """Layer 2 of the pair model fitted to layer 1's compressed output: the rank-k least-
    squares map from those inputs to the original responses, computed here from arrays."""
    torch.manual_seed(7)
    model = nn.Sequential(Conv1x1(12, 40, activation="relu"), Conv1x1(40, 40)).double().eval()
    x = low_rank_images(48, 12, 9, seed=4)
    plain, report = compress(model, x, rank=5)
    small, again = compress(model, x, rank=5, asymmetric=True)
    assert again.ranks == report.ranks == {"0": 5, "1": 5}
    assert "48 images (asymmetric); 1×1 MACs" in str(again) and "(asymmetric)" not in str(report)
    assert again.macs_after == report.macs_after
    for key in ("reduce.weight", "reduce.bias", "expand.weight", "expand.bias"):
        torch.testing.assert_close(small[0].state_dict()[key], plain[0].state_dict()[key],
                                   rtol=1e-7, atol=1e-9)  # the first layer sees x itself
    y = responses(model, model[1], x)  # (P, F): the original model's responses
    x_hat = torch.cat(_inputs_of(plain, plain[1], x)).numpy()  # (P, C), compressed inputs
    xc, yc = x_hat - x_hat.mean(0), y - y.mean(0)
    ols = np.linalg.lstsq(xc, yc, rcond=None)[0]  # (C, F)
    _, _, vt = np.linalg.svd(xc @ ols, full_matrices=False)  # the fitted responses' axes
    proj = vt[:5].T @ vt[:5]  # (F, F)
    want = proj @ ols.T  # (F, C), the rank-5 map
    w, b = composed(small[1])
    np.testing.assert_allclose(w, want, atol=1e-8)
    np.testing.assert_allclose(b, y.mean(0) - want @ x_hat.mean(0), atol=1e-8)
    # on the data it was fitted to, it reproduces the original responses better
    errors = []
    for m in (plain, small):
        z = torch.cat(_inputs_of(m, m[1].expand, x)).numpy()  # (P, k)
        w2, b2 = m[1].expand.weight.detach()[:, :, 0, 0].numpy(), m[1].expand.bias.detach()
        y_hat = z @ w2.T + b2.numpy()  # (P, k) @ (k, F)
        errors.append(((y - y_hat) ** 2).sum(1).mean())
    assert errors[1] < 0.999 * errors[0]


def _inputs_of(model: nn.Module, module: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """(N·H·W, C) per batch: the input pixel vectors of ``module`` when ``model`` runs on x."""
    got: list[torch.Tensor] = []
    h = module.register_forward_pre_hook(
        lambda m, a: got.append(a[0].detach().permute(0, 2, 3, 1).reshape(-1, a[0].shape[1])))
    with torch.no_grad():
        model(x)
    h.remove()
    return got


def test_asymmetric_fit_refuses_a_one_shot_iterator():
    model = nn.Sequential(Conv1x1(8, 8), Conv1x1(8, 8)).eval()
    x = torch.randn(4, 8, 3, 3)
    with pytest.raises(ValueError, match="expected data that can be read once per layer"):
        compress(model, iter([x]), rank=2, asymmetric=True)
    small, _ = compress(model, [x[:2], x[2:]], rank=2, asymmetric=True)  # a list: read again
    assert isinstance(small[1], LowRankConv1x1)


# ------------------------------------------------------------------------------ bad input
def test_bad_input():
    model = nn.Sequential(nn.Conv2d(4, 8, 1)).eval()
    x = torch.randn(2, 4, 3, 3)
    with pytest.raises(ValueError, match="expected a model with at least one 1×1 conv"):
        compress(nn.Sequential(nn.Conv2d(4, 8, 3)).eval(), x)
    with pytest.raises(ValueError, match="expected the model in eval mode"):
        compress(nn.Sequential(nn.Conv2d(4, 8, 1)), x)
    for energy in (0, -0.5, 1.5):
        with pytest.raises(ValueError, match="expected 0 < energy <= 1"):
            compress(model, x, energy=energy)
    with pytest.raises(ValueError, match="expected energy or rank, but got both"):
        compress(model, x, energy=0.9, rank=2)
    for rank in (0, 2.5, True):
        with pytest.raises(ValueError, match="expected rank to be an int >= 1"):
            compress(model, x, rank=rank)
    with pytest.raises(ValueError, match="expected data with at least one image"):
        compress(model, x[:0])
    with pytest.raises(ValueError, match="expected data with at least one image"):
        compress(model, [])
    bad = x.clone()
    bad[1, 2, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinity in the input of '0'"):
        compress(model, bad)
    with pytest.raises(TypeError, match="expected data to be a tensor, an array or an "
                                        "iterable"):
        compress(model, 5)
    with pytest.raises(ValueError, match=r"match none; its 1×1 convs: 0"):
        compress(model, x, layers=["features.*"])
    with pytest.raises(ValueError, match="expected rank >= 1"):
        LowRankConv1x1(4, 0, 8)
