"""Frozen weights (pointwise.nn.frozen): the planned taps calls read a weight packed once,
packed again whenever torch's storage or version counter of it moves, dropped by
``refresh``/``thaw``, never carried into a copy or pickle; the results those of float64."""

from __future__ import annotations

import copy
import gc
import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from oracle import randomize_bn  # noqa: E402
from plans import check_copies_and_pickles, spy_at  # noqa: E402
from pointwise.kernels import native as _native  # noqa: E402
from pointwise.models.mobilenet import DepthwiseSeparable, InvertedResidual  # noqa: E402
from pointwise.nn import (  # noqa: E402
    Conv1x1,
    Conv2d,
    _native_taps,
    convert,
    freeze,
    frozen,
    refresh,
    thaw,
    to_conv2d,
)
from pointwise.nn import _native_torch as NT  # noqa: E402

F = nn.functional
CL = torch.channels_last
needs_kernels = pytest.mark.skipif(not NT.available(), reason="compiled kernels not used")


def expected(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """float64 torch: the conv, then its activation."""
    z = F.conv2d(x.double(), m.weight.double(), None if m.bias is None else m.bias.double(),
                 m.stride, m.padding, getattr(m, "dilation", 1), m.groups)
    return {None: z, "relu": F.relu(z)}[m.activation]


def close(y: torch.Tensor, want: torch.Tensor) -> None:
    """Within float32 rounding of sums of up to 4,608 terms, relative to the output's scale."""
    y, want = y.detach().double(), want.detach()
    assert y.shape == want.shape
    err = float((y - want).abs().max()) if y.numel() else 0.0
    assert err <= 1e-5 * max(1.0, float(want.abs().max())), err


def counted_packs(monkeypatch) -> list[int]:
    """Counts the weights frozen modules pack for the taps kernels."""
    seen: list[int] = []
    real = _native.pack_taps
    monkeypatch.setattr(_native, "pack_taps", lambda w: seen.append(1) or real(w))
    return seen


def layers() -> list[nn.Module]:
    """A 3×3 ``Conv2d`` and a ``Conv1x1`` large enough for the taps plans (C·F ≥ 2^18)."""
    torch.manual_seed(0)
    return [Conv2d(32, 48, 3, padding=1, activation="relu"),
            Conv1x1(512, 512, activation="relu")]


def inputs(m: nn.Module, n: int = 2, h: int = 12) -> torch.Tensor:
    return torch.randn(n, m.in_channels, h, h).contiguous(memory_format=CL)


@needs_kernels
@pytest.mark.usefixtures("isa")
@pytest.mark.parametrize("which", [0, 1])
def test_frozen_calls_pack_once_and_match_float64(monkeypatch, which):
    m = freeze(layers()[which])
    x = inputs(m)
    packs = counted_packs(monkeypatch)
    seen = spy_at(monkeypatch, "taps_at")
    with torch.inference_mode():
        ys = [m(x) for _ in range(4)]
    assert seen == ["taps_at"] * 3  # the first call plans on the general path
    assert len(packs) == 1
    for y in ys:
        close(y, expected(m, x))
    thawed = thaw(copy.deepcopy(m))
    with torch.inference_mode():
        thawed(x)
        torch.testing.assert_close(thawed(x), ys[-1], rtol=0, atol=0)  # the same sums
    assert len(packs) == 1


@needs_kernels
@pytest.mark.parametrize("edit", ["no_grad", "load_state_dict", "parameter", "data_assign",
                                  "optimizer", "copy_"])
def test_edits_torch_counts_are_seen(edit):
    for m in layers():
        freeze(m)
        x = inputs(m)
        with torch.inference_mode():
            m(x)
            m(x)
        new = torch.randn_like(m.weight)
        if edit == "no_grad":
            with torch.no_grad():
                m.weight.mul_(-2)
        elif edit == "load_state_dict":
            m.load_state_dict({**m.state_dict(), "weight": new})
        elif edit == "parameter":
            m.weight = nn.Parameter(new)
        elif edit == "data_assign":
            m.weight.data = new
        elif edit == "copy_":
            with torch.no_grad():
                m.weight.detach().copy_(new)
        else:
            opt = torch.optim.SGD(m.parameters(), lr=1.0)
            m(x.requires_grad_()).square().sum().backward()
            opt.step()
        with torch.inference_mode():
            close(m(x.detach()), expected(m, x.detach()))


@needs_kernels
def test_an_uncounted_edit_needs_refresh_or_thaw():
    for m in layers():
        freeze(m)
        x = inputs(m)
        with torch.inference_mode():
            m(x)
            before = m(x)
            m.weight.data.mul_(-1)  # torch's version counter does not see this
            stale = m(x)
        torch.testing.assert_close(stale, before, rtol=0, atol=0)  # the documented caveat
        refresh(m)
        with torch.inference_mode():
            close(m(x), expected(m, x))
            m.weight.detach().numpy()[...] *= 3  # a NumPy view: neither
            thaw(m)
            close(m(x), expected(m, x))
        assert not frozen.is_frozen(m)


@needs_kernels
def test_copies_and_pickles_carry_the_flag_not_the_packed_weight():
    for m in layers():
        freeze(m)
        x = inputs(m)
        check_copies_and_pickles(m, x, expected)
        for other in (copy.deepcopy(m), pickle.loads(pickle.dumps(m))):
            assert frozen.is_frozen(other)
            assert other not in frozen._PACKS
        n = len(frozen._PACKS)
        other = copy.deepcopy(m)
        with torch.inference_mode():
            other(x)
            other(x)
        assert len(frozen._PACKS) == n + 1
        del other
        gc.collect()
        assert len(frozen._PACKS) == n  # a module's packed weight goes with it


@needs_kernels
def test_an_instruction_set_switch_repacks():
    from pointwise.kernels import _kernel as kernel

    before = kernel.isa()
    if not kernel.select("avx2"):
        pytest.skip("this CPU lacks AVX2")
    try:
        for m in layers():
            freeze(m)
            x = inputs(m)
            with torch.inference_mode():
                for isa in ("avx2", before, "avx2"):
                    kernel.select(isa)
                    m(x)
                    close(m(x), expected(m, x))  # the panels' widths differ by ISA
    finally:
        kernel.select(before or "none")


@needs_kernels
def test_inference_tensor_weights_are_packed_per_call(monkeypatch):
    with torch.inference_mode():  # weights made here: torch does not count their versions
        m = freeze(Conv2d(32, 48, 3, padding=1))
        x = inputs(m)
        packs = counted_packs(monkeypatch)
        seen = spy_at(monkeypatch, "taps_at")
        m(x)
        m(x)
        m.weight.mul_(2)
        close(m(x), expected(m, x))
    assert packs == [] and seen == ["taps_at"] * 2


@needs_kernels
@settings(max_examples=25, deadline=None)
@given(c=st.sampled_from([3, 16, 40]), f=st.sampled_from([8, 33, 64, 128]),
       k=st.sampled_from([1, 3, 5, 7]), stride=st.sampled_from([1, 2]),
       h=st.sampled_from([5, 12]), n=st.sampled_from([1, 3]), seed=st.integers(0, 99))
def test_frozen_conv2d_matches_float64(c, f, k, stride, h, n, seed):
    torch.manual_seed(seed)
    m = freeze(Conv2d(c, f, k, stride=stride, padding=k // 2, activation="relu"))
    x = inputs(m, n, h)
    with pytest.MonkeyPatch.context() as mp, torch.inference_mode():
        mp.setattr(_native_taps, "NATIVE_MIN_MACS", 0)  # every size on the kernels
        m(x)
        close(m(x), expected(m, x))
        assert m in frozen._PACKS


@needs_kernels
def test_convert_freezes_a_model_and_keeps_its_outputs():
    from pointwise.models import create

    torch.manual_seed(0)
    model = create("resnet18", num_classes=10).eval()
    x = torch.randn(1, 3, 64, 64).contiguous(memory_format=CL)
    ours, _ = convert(model, freeze=True)
    plain, _ = convert(model)
    convs = [m for m in ours.modules() if isinstance(m, (Conv1x1, Conv2d))]
    assert convs and all(frozen.is_frozen(m) for m in convs)
    assert not any(frozen.is_frozen(m) for m in plain.modules())
    with torch.inference_mode():
        ref = copy.deepcopy(model).double()(x.double())
        for _ in range(2):
            y, y0 = ours(x), plain(x)
    torch.testing.assert_close(y.double(), ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(y, y0, rtol=1e-6, atol=1e-6)
    assert sum(m in frozen._PACKS for m in convs) >= 17  # the stem and the 3×3s at least


def test_bad_arguments_are_named():
    for fn in (freeze, thaw, refresh):
        with pytest.raises(TypeError, match="expects an nn.Module, got str"):
            fn("model")


def test_without_kernels_freezing_changes_nothing(monkeypatch):
    monkeypatch.setattr(_native, "_kernel", None)
    m = freeze(Conv2d(8, 16, 3, padding=1))
    x = inputs(m)
    with torch.inference_mode():
        close(m(x), expected(m, x))
    assert frozen.packed(m) is None


BLOCKS = {
    "ir-residual": lambda: InvertedResidual(24, 24, 1, 6),
    "ir-s2": lambda: InvertedResidual(24, 40, 2, 6),
    "ir-t1": lambda: InvertedResidual(32, 16, 1, 1),
    "ds-s2": lambda: DepthwiseSeparable(40, 24, 2),
}


def fused_block(name: str) -> tuple[nn.Module, nn.Module, int]:
    """(the frozen fused block, its float64 torch original, its input channels)."""
    torch.manual_seed(len(name))
    block = randomize_bn(BLOCKS[name]())
    c = (block.conv_dw if isinstance(block, DepthwiseSeparable) else block.conv[0][0]).in_channels
    fused, _ = convert(block, freeze=True)
    return fused, copy.deepcopy(block).double(), c


@needs_kernels
@pytest.mark.usefixtures("isa")
@pytest.mark.parametrize("name", sorted(BLOCKS))
@pytest.mark.parametrize("n, hw", [(1, 7), (3, 15)])
def test_frozen_blocks_pack_once_and_match_float64(monkeypatch, name, n, hw):
    fused, ref, c = fused_block(name)
    assert frozen.is_frozen(fused)
    seen = spy_at(monkeypatch, "block_at")
    packs = counted_packs(monkeypatch)
    x = torch.randn(n, c, hw, hw).contiguous(memory_format=CL)
    with torch.inference_mode():
        for _ in range(3):
            close(fused(x), ref(x.double()))
    assert seen == ["block_at"] * 2  # the first call plans on the general path
    assert len(packs) == (1 if name in ("ds-s2", "ir-t1") else 2)  # the 1×1s, packed once
    addresses = frozen._PACKS[fused].addresses
    assert (addresses[0] == 0) == (name in ("ds-s2", "ir-t1")) and all(addresses[1:])


@needs_kernels
def test_frozen_blocks_see_counted_edits_and_refresh_the_others():
    fused, _, c = fused_block("ir-residual")
    x = torch.randn(2, c, 9, 9).contiguous(memory_format=CL)
    with torch.inference_mode():
        fused(x)
        fused(x)
    with torch.no_grad():
        fused.dw.weight.mul_(-1.5)  # counted: the depthwise copy is made again
    fused.project.weight = nn.Parameter(torch.randn_like(fused.project.weight))
    with torch.inference_mode():
        close(fused(x), to_conv2d(fused)(x.double().float()).double())
        before = fused(x)
        fused.expand.weight.data.mul_(2)  # uncounted: needs refresh
        torch.testing.assert_close(fused(x), before, rtol=0, atol=0)
        refresh(fused)
        close(fused(x), to_conv2d(fused)(x).double())
