"""``compress(model, data)``: each 1×1 conv replaced by a C→k→F pair fitted to its responses.

Zhang, Zou, He and Sun ("Accelerating Very Deep Convolutional Networks for Classification
and Detection", 2015, the linear case): a layer's responses ``y = W x + b`` (F channels, before
its activation) over the pixels of a data set have mean ȳ and covariance ``Σ_y``; with P (F, k)
its top-k eigenvectors, ``y ≈ P Pᵀ (y − ȳ) + ȳ`` is the rank-k approximation with the least
mean squared error, and it is two 1×1 convs:

    z = Pᵀ W x + Pᵀ (b − ȳ)        reduce: C→k, weight PᵀW, bias Pᵀ(b − ȳ)
    y ≈ P z + ȳ                    expand: k→F, weight P,   bias ȳ

(the paper writes the same map with the whole bias on the second conv, ``(I − PPᵀ) ȳ + PPᵀ b``;
keeping ``Pᵀ(b − ȳ)`` on the first makes a padded pixel, whose response is b, come out as the
same projection of b). The responses are never stored: ``Σ_y = W Σ_x Wᵀ`` and
``ȳ = W x̄ + b`` follow exactly from the mean and covariance of the layer's input pixels (those
its stride reads, and its zero padding), which :class:`pointwise.reduction.ChannelMoments`
accumulates in float64 during one pass of the model over the data.

k is the smallest that keeps ``energy`` of the variance (``Σ_{i≤k} λᵢ ≥ energy · Σ λᵢ``), or
``rank``. A layer is replaced only where ``C·k + k·F < C/G · F``, fewer MACs per pixel.
Every layer is fitted on the original model's responses, in one pass; with
``asymmetric=True`` each replaced layer is then refitted, in model order, to reproduce the
original responses from the inputs the compressed model gives it (same k,
:mod:`pointwise.nn.asymmetric`).
"""

from __future__ import annotations

import copy
import fnmatch
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from pointwise.cost import conv_cost
from pointwise.moments import ChannelMoments
from pointwise.nn.asymmetric import read_pixels, refit
from pointwise.nn.convert import convert
from pointwise.nn.lowrank import LowRankConv1x1
from pointwise.nn.module import Conv1x1
from pointwise.nn.report import CompressReport, LayerCompression, rank_for_energy
from pointwise.reduction import principal_axes

__all__ = ["CompressReport", "LayerCompression", "compress", "compress_structure"]

DEFAULT_ENERGY = 0.99


def compress(
    model: nn.Module,
    data: Any,
    *,
    energy: float | None = None,
    rank: int | None = None,
    layers: str | Sequence[str] | None = None,
    inplace: bool = False,
    batch_size: int = 256,
    asymmetric: bool = False,
) -> tuple[nn.Module, CompressReport]:
    """Replace the 1×1 convs of ``model`` by rank-k pairs fitted to their responses on ``data``.

    See the module docstring for the formula. The model is first converted as
    ``convert(model, fold_all=False)`` does: every 1×1 ``nn.Conv2d`` becomes a ``Conv1x1``,
    the BatchNorm that directly follows one is folded into it (so the pair reproduces the
    normalised responses), its activation is fused (the pair's ``expand`` carries it) and so
    are the zoo's residual shortcuts. k×k convs are left as they are.

    Args:
        model: an ``nn.Module`` in eval mode.
        data: the inputs to fit on: a tensor or array (N, C, H, W), cut into ``batch_size``
            batches, or an iterable of batches (a DataLoader); a batch that is a tuple or list
            (inputs, labels, ...) contributes its first element.
        energy: keep this share of each layer's response variance, 0 < energy ≤ 1
            (default 0.99 when ``rank`` is not given).
        rank: instead of ``energy``, the same k for every layer (at most F).
        layers: qualified names or glob patterns (``"features.*"``) of the layers to
            compress; default every ``Conv1x1``.
        inplace: modify ``model`` itself instead of a deep copy.
        batch_size: for ``data`` given as one tensor.
        asymmetric: then refit each replaced layer, in model order, to the inputs the
            compressed model gives it (Zhang et al.'s asymmetric reconstruction: the same k
            and MACs, less error passed on); one more pass over ``data`` per replaced layer,
            so ``data`` must be readable again (not a one-shot iterator).

    Returns:
        ``(model, CompressReport)``. Replaced layers are :class:`LowRankConv1x1`; the report
        gives per layer C, F, k, the energy kept and the MACs per image before and after, and
        ``report.ranks`` rebuilds the structure (:func:`compress_structure`).

    Raises:
        ValueError: the model is in training mode or has no 1×1 conv; ``layers`` selects
            none; ``energy`` outside (0, 1] or given with ``rank``; rank < 1; no data; NaN
            or infinity in a layer's input; a one-shot iterator with ``asymmetric``.

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> from pointwise.nn import compress
        >>> torch.manual_seed(0) and None
        >>> m = nn.Sequential(nn.Conv2d(3, 64, 1), nn.ReLU(), nn.Conv2d(64, 64, 1)).eval()
        >>> small, report = compress(m, torch.randn(32, 3, 8, 8), energy=0.999)
        >>> [(l.name, l.rank, l.replaced) for l in report.layers]
        [('0', 3, False), ('2', 29, True)]
        >>> x = torch.randn(4, 3, 8, 8)  # new data: the error is about the 0.1% left out
        >>> with torch.no_grad():
        ...     y, y_small = m(x), small(x)
        >>> centred = y - y.mean((0, 2, 3), keepdim=True)
        >>> round(float(((y - y_small) ** 2).sum() / (centred ** 2).sum()), 3)
        0.001
    """
    energy = _check_target(energy, rank)
    if model.training:
        raise ValueError(
            "expected the model in eval mode (compress folds BatchNorm, and fits the "
            "responses the model gives in eval mode), but got training=True; call "
            "model.eval() first"
        )
    if asymmetric and isinstance(data, Iterator):
        raise ValueError(
            f"expected data that can be read once per layer with asymmetric=True (a tensor, "
            f"an array, a list or a DataLoader), but got a one-shot {type(data).__name__}; "
            f"pass a list of its batches")
    if not inplace:
        model = copy.deepcopy(model)
    model, converted = convert(model, fold_all=False, inplace=True)
    targets = _select(model, layers)
    moments, sizes = _collect(model, targets, data, batch_size)
    report = CompressReport(folded=list(converted.folded), asymmetric=asymmetric)
    new: dict[int, nn.Module] = {}
    for name, conv in targets:
        entry, pair = _fit(name, conv, moments[id(conv)], sizes[id(conv)], energy, rank)
        report.layers.append(entry)
        if pair is not None:
            new[id(conv)] = pair
    report.images = moments[id(targets[0][1])].images
    original = copy.deepcopy(model) if asymmetric and new else None
    model = _swap(model, new)
    if original is not None:
        weights = {name: (_dense_weight(conv), _bias(conv)) for name, conv in targets
                   if id(conv) in new}
        refit(original, model, list(weights), weights, lambda: _batches(data, batch_size))
    return model, report


def compress_structure(model: nn.Module, ranks: dict[str, int]) -> nn.Module:
    """``model`` (eval mode, modified in place) shaped as :func:`compress` left it with these
    ``ranks`` (``report.ranks``), so a compressed model's ``state_dict`` loads into it."""
    model, _ = convert(model, fold_all=False, inplace=True)
    convs = dict(_select(model, None))
    new: dict[int, nn.Module] = {}
    for name, k in ranks.items():
        conv = convs.get(name)
        if conv is None:
            raise ValueError(f"expected a Conv1x1 named {name!r} in the model, but got none; "
                             f"its 1×1 convs: {', '.join(convs) or 'none'}")
        new[id(conv)] = _pair(conv, int(k))
    return _swap(model, new)


def _check_target(energy: float | None, rank: int | None) -> float | None:
    if energy is not None and rank is not None:
        raise ValueError(f"expected energy or rank, but got both (energy={energy}, rank={rank})")
    if rank is not None:
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
            raise ValueError(f"expected rank to be an int >= 1, but got rank={rank!r}")
        return None
    energy = DEFAULT_ENERGY if energy is None else energy
    if not 0.0 < float(energy) <= 1.0:
        raise ValueError(f"expected 0 < energy <= 1 (the share of variance kept), but got "
                         f"energy={energy}")
    return float(energy)


def _select(model: nn.Module, layers: str | Sequence[str] | None) -> list[tuple[str, Conv1x1]]:
    convs = [(n or "(model)", m) for n, m in model.named_modules() if isinstance(m, Conv1x1)]
    if not convs:
        raise ValueError(
            f"expected a model with at least one 1×1 conv (Conv1x1 or nn.Conv2d with "
            f"kernel_size=1), but got none in {type(model).__name__}; compress replaces 1×1 "
            f"convs only"
        )
    if layers is None:
        return convs
    patterns = [layers] if isinstance(layers, str) else list(layers)
    chosen = [(n, m) for n, m in convs if any(fnmatch.fnmatchcase(n, p) for p in patterns)]
    unmatched = [p for p in patterns if not any(fnmatch.fnmatchcase(n, p) for n, _ in convs)]
    if unmatched:
        raise ValueError(f"expected layers to name 1×1 convs of the model, but got "
                         f"{unmatched!r}, which match none; its 1×1 convs: "
                         f"{', '.join(n for n, _ in convs)}")
    return chosen


# --------------------------------------------------------------------------------- collect
class _Inputs:
    """The input pixels one conv reads (its stride's, and its zero padding), as moments."""

    def __init__(self, conv: Conv1x1) -> None:
        self.moments = ChannelMoments(conv.in_channels)
        self.stride, self.padding = conv.stride, conv.padding
        self.images = 0

    def add(self, x: torch.Tensor) -> None:
        x = x.detach()
        if x.dim() == 3:
            x = x.unsqueeze(0)  # (1, C, H, W)
        x = read_pixels(x, self.stride, self.padding)  # (N, C, Ho, Wo)
        if x.dtype not in (torch.float32, torch.float64):
            x = x.float()
        self.moments.add_images(x.cpu().numpy(), channels_last=False)
        self.images += int(x.shape[0])


def _collect(model: nn.Module, targets: list[tuple[str, Conv1x1]], data: Any,
             batch_size: int) -> tuple[dict[int, _Inputs], dict[int, tuple[int, int]]]:
    inputs = {id(conv): _Inputs(conv) for _, conv in targets}
    sizes: dict[int, tuple[int, int]] = {}
    names = {id(conv): name for name, conv in targets}

    def hook(conv: nn.Module, args: tuple[Any, ...]) -> None:
        x = args[0]
        sizes.setdefault(id(conv), (int(x.shape[-2]), int(x.shape[-1])))
        before = inputs[id(conv)].moments.count
        inputs[id(conv)].add(x)
        got = inputs[id(conv)].moments
        if got.count > before and not np.isfinite(got.mean).all():
            raise ValueError(f"expected finite inputs to every layer, but got NaN or infinity "
                             f"in the input of {names[id(conv)]!r}; check the data")

    handles = [conv.register_forward_pre_hook(hook) for _, conv in targets]
    try:
        with torch.no_grad():
            for batch in _batches(data, batch_size):
                model(batch)
    finally:
        for h in handles:
            h.remove()
    first = inputs[id(targets[0][1])]
    if first.images == 0 or len(sizes) < len(targets):
        missing = [n for n, c in targets if id(c) not in sizes]
        raise ValueError(
            "expected data with at least one image, but got none" if first.images == 0 else
            f"expected every selected layer to run on the data, but {missing!r} never ran"
        )
    return inputs, sizes


def _batches(data: Any, batch_size: int) -> Iterator[torch.Tensor]:
    if isinstance(data, (torch.Tensor, np.ndarray)):
        t = torch.as_tensor(data)
        for i in range(0, t.shape[0], batch_size):
            yield t[i:i + batch_size]
        return
    if not isinstance(data, Iterable):
        raise TypeError(f"expected data to be a tensor, an array or an iterable of batches "
                        f"(a DataLoader), but got {type(data).__name__}")
    for batch in data:
        if isinstance(batch, (tuple, list)):
            batch = batch[0]  # (inputs, labels, ...)
        yield torch.as_tensor(batch)


# ------------------------------------------------------------------------------------- fit
def _dense_weight(conv: Conv1x1) -> np.ndarray:
    """(F, C) float64: the weight with its groups laid out block-diagonally."""
    w = conv.weight.detach().to("cpu", torch.float64).numpy()[:, :, 0, 0]  # (F, C/G)
    g = conv.groups
    if g == 1:
        return w
    f, cg = w.shape
    dense = np.zeros((f, cg * g))
    for i in range(g):
        fs, cs = slice(i * f // g, (i + 1) * f // g), slice(i * cg, (i + 1) * cg)
        dense[fs, cs] = w[fs]
    return dense


def _bias(conv: Conv1x1) -> np.ndarray:
    """(F,) float64: the bias, zeros where there is none."""
    if conv.bias is None:
        return np.zeros(conv.out_channels)
    return conv.bias.detach().to("cpu", torch.float64).numpy()


def _fit(name: str, conv: Conv1x1, inputs: _Inputs, size: tuple[int, int],
         energy: float | None, rank: int | None) -> tuple[LayerCompression, nn.Module | None]:
    c, f, g = conv.in_channels, conv.out_channels, conv.groups
    w, b = _dense_weight(conv), _bias(conv)  # (F, C), (F,)
    m = inputs.moments
    mean_y = w @ m.mean + b  # (F, C) @ (C,) -> (F,)
    cov_y = w @ m.covariance @ w.T  # (F, C) @ (C, C) @ (C, F)
    values, vectors = principal_axes((cov_y + cov_y.T) / 2)
    total = values.sum()
    if rank is not None:
        k = rank
    else:
        assert energy is not None
        k = rank_for_energy(values.tolist(), energy)  # the first k with kept ≥ energy
    k = min(k, c, f)  # the responses span at most min(C, F) directions
    kept_k = float(values[:k].sum() / total) if total > 0 else 1.0
    st, pad = conv.stride, conv.padding
    before = conv_cost(c, f, groups=g, input_size=size, stride=st, padding=pad).macs
    after = (conv_cost(c, k, input_size=size, stride=st, padding=pad).macs
             + conv_cost(k, f, input_size=_out(size, conv)).macs)
    entry = LayerCompression(name, c, f, g, k, kept_k, before, before, False,
                             spectrum=values.tolist())
    if after >= before:
        entry.reason = f"C·k + k·F = {c * k + k * f} >= C/G·F = {c // g * f} MACs per pixel"
        return entry, None
    p = vectors[:, :k]  # (F, k)
    pair = _pair(conv, k)
    with torch.no_grad():
        dt = conv.weight.dtype
        pair.reduce.weight.copy_(torch.from_numpy(p.T @ w)[:, :, None, None].to(dt))  # (k, C)
        pair.reduce.bias.copy_(torch.from_numpy(p.T @ (b - mean_y)).to(dt))  # (k,)
        pair.expand.weight.copy_(torch.from_numpy(p)[:, :, None, None].to(dt))  # (F, k)
        pair.expand.bias.copy_(torch.from_numpy(mean_y).to(dt))  # (F,)
    entry.macs_after, entry.replaced = after, True
    return entry, pair


def _out(size: tuple[int, int], conv: Conv1x1) -> tuple[int, int]:
    (h, w), (sh, sw), (ph, pw) = size, conv.stride, conv.padding
    return (h + 2 * ph - 1) // sh + 1, (w + 2 * pw - 1) // sw + 1


def _pair(conv: Conv1x1, k: int) -> LowRankConv1x1:
    w = conv.weight
    pair = LowRankConv1x1(conv.in_channels, k, conv.out_channels, stride=conv.stride,
                          padding=conv.padding, activation=conv.activation,
                          device=w.device, dtype=w.dtype)
    return pair.train(conv.training)


def _swap(model: nn.Module, new: dict[int, nn.Module]) -> nn.Module:
    """Put ``new[id(conv)]`` at every place the model holds that conv; the new model."""
    if id(model) in new:  # the model is itself one conv
        return new[id(model)]
    for qualname, child in list(model.named_modules(remove_duplicate=False))[1:]:
        if id(child) in new:
            parent, _, attr = qualname.rpartition(".")
            setattr(model.get_submodule(parent), attr, new[id(child)])
    return model
