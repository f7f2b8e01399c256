"""What :func:`pointwise.nn.convert` and :func:`pointwise.nn.compress` did to a model."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import accumulate

__all__ = ["CompressReport", "ConvertReport", "LayerCompression", "rank_for_energy"]


def rank_for_energy(spectrum: Sequence[float], energy: float) -> int:
    """The fewest leading directions of ``spectrum`` (variances, largest first) that keep
    ``energy`` of the total: the first k with ``Σ_{i≤k} λᵢ ≥ energy · Σ λᵢ`` (to 1e-12
    relative, so that energy 1 is reached despite rounding); 1 where the total is 0."""
    sums = list(accumulate(float(v) for v in spectrum))
    total = sums[-1] if sums else 0.0
    if not total > 0:
        return 1
    goal = energy * (1 - 1e-12) * total
    return next((i + 1 for i, s in enumerate(sums) if s >= goal), len(sums))


@dataclass
class ConvertReport:
    """What :func:`convert` did, by qualified module name.

    Attributes:
        replaced: the ``nn.Conv2d`` modules now ``Conv1x1``.
        kxk: the k×k ``nn.Conv2d`` modules now :class:`pointwise.nn.Conv2d` (taps kernels).
        folded: ``(conv, batchnorm)`` pairs; the BN is now ``nn.Identity``.
        fused: ``(conv, activation module, activation)``; the module is now ``nn.Identity``.
        inplace: ``(conv, activation module)`` for an activation after a k×k ``nn.Conv2d``
            (with ``fold_all``): it stays, and now overwrites the conv's output in place.
        shortcuts: ``(block, conv)``: the block's residual addition is now in the conv.
        blocks: the blocks now one fused module (``fused_block()``, MobileNet's).
        head: ``(module, "nn.Linear -> Linear")`` and the like: the head's modules now on
            the head's kernels (:mod:`pointwise.nn.head`).
        skipped: ``(module, reason)`` for what was left as it was.
        pools: the ``nn.MaxPool2d`` modules now :class:`pointwise.nn.pool.MaxPool2d`.
    """

    replaced: list[str] = field(default_factory=list)
    kxk: list[str] = field(default_factory=list)
    folded: list[tuple[str, str]] = field(default_factory=list)
    fused: list[tuple[str, str, str]] = field(default_factory=list)
    inplace: list[tuple[str, str]] = field(default_factory=list)
    shortcuts: list[tuple[str, str]] = field(default_factory=list)
    blocks: list[str] = field(default_factory=list)
    head: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    pools: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [
            f"convert: {len(self.replaced) + len(self.kxk)} replaced, "
            f"{len(self.folded)} BatchNorm folded, "
            f"{len(self.fused)} activations fused, {len(self.shortcuts)} shortcuts fused, "
            f"{len(self.skipped)} skipped"
            + (f", {len(self.head)} head modules replaced" if self.head else "")
        ]
        lines += [f"  replaced  {n}: nn.Conv2d -> Conv1x1" for n in self.replaced]
        lines += [f"  replaced  {n}: nn.Conv2d -> pointwise.nn.Conv2d" for n in self.kxk]
        lines += [f"  replaced  {n}: nn.MaxPool2d -> pointwise.nn.MaxPool2d" for n in self.pools]
        lines += [f"  folded    {bn} into {c}" for c, bn in self.folded]
        lines += [f"  fused     {a} into {c} (activation={act!r})" for c, a, act in self.fused]
        lines += [f"  in place  {a} after {c}" for c, a in self.inplace]
        lines += [f"  shortcut  of {b} into {c}" for b, c in self.shortcuts]
        lines += [f"  fused     block {b}" for b in self.blocks]
        lines += [f"  replaced  {n}: {what}" for n, what in self.head]
        lines += [f"  skipped   {n}: {why}" for n, why in self.skipped]
        return "\n".join(lines)


@dataclass
class LayerCompression:
    """One 1×1 conv as :func:`pointwise.nn.compress` found it.

    Attributes:
        name: its qualified name.
        in_channels, out_channels, groups: C, F and G.
        rank: k, the channels the pair would pass through.
        energy: the share of the layer's response variance that k keeps.
        macs_before, macs_after: MACs per image at the size the data had; equal when the
            layer was left alone.
        replaced: whether it is now a ``LowRankConv1x1``.
        reason: why not, when it was not.
        spectrum: the variance of the layer's responses along each principal direction,
            largest first (F values): what every k and energy above derives from.
    """

    name: str
    in_channels: int
    out_channels: int
    groups: int
    rank: int
    energy: float
    macs_before: int
    macs_after: int
    replaced: bool
    reason: str = ""
    spectrum: list[float] = field(default_factory=list)

    @property
    def break_even(self) -> int:
        """The largest k whose pair costs fewer MACs than the layer, ``C·k + k·F < C/G·F``:
        ``⌈(C/G·F) / (C + F)⌉ − 1``, half of C when F = C (0: no k saves)."""
        c, f = self.in_channels, self.out_channels
        return math.ceil(c // self.groups * f / (c + f)) - 1

    def rank_at(self, energy: float) -> int:
        """The k that :func:`compress` chooses for ``energy`` (at most min(C, F))."""
        k = rank_for_energy(self.spectrum, energy)
        return min(k, self.in_channels, self.out_channels)

    def energy_at(self, k: int) -> float:
        """The share of the response variance that the top ``k`` directions keep."""
        total = math.fsum(self.spectrum)
        return math.fsum(self.spectrum[:k]) / total if total > 0 else 1.0

    def macs_at(self, k: int) -> int:
        """MACs per image of the rank-k pair (``macs_before`` scaled by ``k·(C + F)`` over
        ``C/G·F``: both convs run at the layer's output pixels)."""
        c, f = self.in_channels, self.out_channels
        return self.macs_before // (c // self.groups * f) * k * (c + f)


@dataclass
class CompressReport:
    """What :func:`pointwise.nn.compress` did: the layers (in model order) and the
    BatchNorms it folded first (``(conv, batchnorm)``), the images it fitted on, and whether
    the pairs were refitted to the compressed model's inputs (``asymmetric``)."""

    layers: list[LayerCompression] = field(default_factory=list)
    folded: list[tuple[str, str]] = field(default_factory=list)
    images: int = 0
    asymmetric: bool = False

    @property
    def ranks(self) -> dict[str, int]:
        """The replaced layers' k, by name: what ``compress_structure`` needs."""
        return {la.name: la.rank for la in self.layers if la.replaced}

    @property
    def macs_before(self) -> int:
        """MACs per image of the 1×1 layers considered, before."""
        return sum(la.macs_before for la in self.layers)

    @property
    def macs_after(self) -> int:
        return sum(la.macs_after for la in self.layers)

    def __str__(self) -> str:
        saved = 1 - self.macs_after / self.macs_before if self.macs_before else 0.0
        lines = [f"compress: {sum(la.replaced for la in self.layers)} of {len(self.layers)} "
                 f"1×1 convs replaced, {len(self.folded)} BatchNorm folded, fitted on "
                 f"{self.images} images{' (asymmetric)' if self.asymmetric else ''}; "
                 f"1×1 MACs per image {self.macs_before:,} -> "
                 f"{self.macs_after:,} ({100 * saved:.1f}% fewer)"]
        width = max([5, *(len(la.name) for la in self.layers)])
        lines.append(f"  {'layer':<{width}}  {'C -> k -> F':>15}  {'energy':>8}  "
                     f"{'saves if k ≤':>12}  {'MACs before':>12}  {'MACs after':>12}")
        for la in self.layers:
            shape = f"{la.in_channels} -> {la.rank} -> {la.out_channels}"
            tail = "" if la.replaced else "  kept: " + la.reason
            lines.append(f"  {la.name:<{width}}  {shape:>15}  {la.energy:8.5f}  "
                         f"{la.break_even or '-':>12}  {la.macs_before:>12,}  "
                         f"{la.macs_after:>12,}{tail}")
        return "\n".join(lines)
