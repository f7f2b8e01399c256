"""The 1×1 conv that best reduces C channels to k, written out beside a given filter.

:func:`explain_pca` fits :func:`pointwise.fit_reduction` to the pixels of ``x`` (by default
the tutorial's), with k the given filter's output channels (the tutorial's [1, 2]: k = 1), and
compares the two on what they keep: for any C→k filter w, the best affine reconstruction of
the pixels from its outputs ``z = wᵀx`` leaves the error ``tr Σ − tr(Σw (wᵀΣw)⁺ wᵀΣ)`` (Σ the
channel covariance; a least-squares fit x̂ = A z + c, so the filter's scale and bias do not
matter), and no filter leaves less than PCA's, the sum of the discarded eigenvalues.

>>> e = explain_pca()
>>> e.pca.weight.round(4).tolist(), round(e.pca.energy, 12), round(e.filter_kept, 12)
([[0.7071], [0.7071]], 1.0, 1.0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from pointwise.explain.examples import AXES, tutorial_example
from pointwise.explain.text import factor, fmt_number, labelled
from pointwise.layout import LAYOUTS, as_array, check_forward
from pointwise.reduction import PCAReduction, fit_reduction

__all__ = ["PCAExplanation", "explain_pca"]

# Below this share of the total variance, an error or an eigenvalue is rounding: zero.
ZERO = 1e-12


@dataclass(frozen=True)
class PCAExplanation:
    """What :func:`explain_pca` found.

    Attributes:
        input, filter: the arrays, in ``layout`` and its weight format.
        layout: as passed.
        pca: the fitted :class:`~pointwise.reduction.PCAReduction` (k = the filter's F).
        pixels: (P, C) float64, every pixel vector of the input.
        filter_kept: the share of the variance the filter's outputs keep (best affine
            reconstruction), 0..1.
        filter_error: that reconstruction's mean squared error per pixel.
        max_pixels: how many pixel lines :meth:`to_text` writes out.
        filter_name: how the text names the filter ("the tutorial's filter" by default).
    """

    input: np.ndarray
    filter: np.ndarray
    layout: str
    pca: PCAReduction
    pixels: np.ndarray
    filter_kept: float
    filter_error: float
    max_pixels: int = 16
    filter_name: str = "the given filter"

    @property
    def total_variance(self) -> float:
        return float(self.pca.eigenvalues.sum())

    @property
    def angle(self) -> float | None:
        """Degrees between a one-channel filter and the first principal direction."""
        if self.pca.k != 1:
            return None
        w = _matrix(self.filter, self.layout)[:, 0]  # (C,)
        cos = abs(w @ self.pca.components[0]) / max(np.linalg.norm(w), 1e-300)
        return math.degrees(math.acos(min(1.0, cos)))

    def pixel_lines(self) -> list[str]:
        """``pixel (i,j): z = … → x̂ = (…)`` for the first ``max_pixels`` pixels."""
        r, out = self.pca, []
        w = r.components  # (k, C)
        z = np.round((self.pixels - r.mean) @ w.T, 10)  # (P, C) @ (C, k); 1e-15 is 0
        back = np.round(z @ w + r.mean, 10)  # (P, k) @ (k, C)
        h, wd = _spatial(self.input, self.layout)
        for p in range(min(self.max_pixels, len(self.pixels))):
            n, rest = divmod(p, h * wd)
            where = f"{n},{rest // wd},{rest % wd}" if LAYOUTS[self.layout][1] else \
                f"{rest // wd},{rest % wd}"
            sums = []
            for j in range(r.k):
                terms = " + ".join(f"{fmt_number(float(c))}·{factor(float(x))}"
                                   for c, x in zip(w[j], self.pixels[p], strict=True))
                sums.append(f"{terms} + {factor(float(-w[j] @ r.mean))} = "
                            f"{fmt_number(float(z[p, j]))}")
            rebuilt = ", ".join(fmt_number(float(v)) for v in back[p])
            out.append(f"pixel ({where}): z = {'; '.join(sums)}  →  x̂ = ({rebuilt})")
        return out

    def to_text(self, max_items: int = 100) -> str:
        r, total = self.pca, self.total_variance
        c, k = r.channels, r.k
        values = ", ".join(fmt_number(float(v)) for v in r.eigenvalues)
        out = [f"PCA of the {len(self.pixels)} pixel vectors of x {self.input.shape} "
               f"({AXES[self.layout]}), {c} channels:",
               "  " + labelled("mean", r.mean, max_items),
               "  " + labelled("covariance", r.covariance, max_items),
               f"  variance along each principal direction: {values} (total "
               f"{fmt_number(total)})", "",
               f"the 1×1 conv that best reduces {c} channels to {k} (the least squared "
               f"reconstruction error):",
               "  " + labelled("w", r.weight, max_items)
               + f"   ({'the first principal direction' if k == 1 else 'principal directions'})",
               "  " + labelled("b", -r.components @ r.mean, max_items)  # (k, C) @ (C,)
               + "   (−wᵀ·mean: z is centred)",
               f"  variance kept: {_kept(r.energy * total, total)}; reconstruction error "
               f"{fmt_number(_clean(r.residual, total))} per pixel",
               f"  rebuilt by the {k}→{c} conv  " + labelled("w'", r.reconstruction_weight,
                                                             max_items)
               + ",  b' = mean"]
        out += self.pixel_lines()
        if len(self.pixels) > self.max_pixels:
            out.append(f"… {len(self.pixels) - self.max_pixels} more pixels")
        out += ["", f"{self.filter_name}, {self.filter.shape} {_FORMAT[LAYOUTS[self.layout][0]]}:",
                "  " + labelled("w", self.filter, max_items)]
        if self.angle is not None:
            out.append(f"  direction {_unit(self.filter, self.layout)}, "
                       f"{self.angle:.1f}° from the first principal direction")
        out.append(f"  variance kept: {_kept(self.filter_kept * total, total)}; "
                   f"reconstruction error {fmt_number(_clean(self.filter_error, total))} per "
                   f"pixel (the best x̂ = A·z + c from its outputs z)")
        out += ["", self._verdict()]
        return "\n".join(out)

    def _verdict(self) -> str:
        total, r = self.total_variance, self.pca
        if r.residual <= ZERO * max(total, 1e-300):
            shape = {0: "point", 1: "line", 2: "plane"}.get(
                int((r.eigenvalues > ZERO * total).sum()), "subspace")
            also = ("so any filter whose outputs tell the pixels apart keeps everything, "
                    "as this one does" if self.filter_error <= ZERO * max(total, 1e-300) else
                    "yet the given filter loses some of it")
            return (f"The pixels lie on a {shape}: {r.k} channel{'s' * (r.k != 1)} "
                    f"keep{'s' * (r.k == 1)} all "
                    f"of their variance, {also}. PCA's conv is the one with unit-length "
                    f"weights along the {shape} and a centred output.")
        gap = self.filter_error - r.residual
        return (f"PCA keeps {fmt_number(100 * (r.energy - self.filter_kept))} points more of "
                f"the variance (error {fmt_number(gap)} less per pixel); no {r.channels}→{r.k} "
                f"1×1 conv keeps more (Eckart–Young).")

    def to_dict(self) -> dict[str, Any]:
        """Plain lists and floats, for ``json.dumps``."""
        r = self.pca
        return {
            "layout": self.layout, "input": self.input.tolist(), "filter": self.filter.tolist(),
            "mean": r.mean.tolist(), "covariance": r.covariance.tolist(),
            "eigenvalues": r.eigenvalues.tolist(), "total_variance": self.total_variance,
            "pca": {"weight": r.weight.tolist(), "bias": None if r.bias is None else
                    r.bias.tolist(), "reconstruction_weight": r.reconstruction_weight.tolist(),
                    "reconstruction_bias": None if r.reconstruction_bias is None else
                    r.reconstruction_bias.tolist(),
                    "variance_kept": r.energy, "error": r.residual},
            "filter_result": {"variance_kept": self.filter_kept, "error": self.filter_error,
                              "angle_degrees": self.angle},
        }


_FORMAT = {True: "HWIO", False: "OIHW"}


def explain_pca(x: Any = None, weight: Any = None, *, layout: str = "HWC",
                max_pixels: int = 16) -> PCAExplanation:
    """Fit the best C→k 1×1 conv to ``x``'s pixels, k = ``weight``'s F, and compare them.

    ``x`` and ``weight`` left None are the tutorial's; see the module docstring.

    Raises:
        ValueError, TypeError: as :func:`pointwise.conv1x1` for ``x`` and ``weight``.
    """
    name = "the tutorial's filter" if weight is None else "the given filter"
    if x is None or weight is None:
        tx, tw = tutorial_example(layout if layout in LAYOUTS else "HWC")
        x, weight = (tx if x is None else x), (tw if weight is None else weight)
    xa, wa = as_array(x, "x"), as_array(weight, "weight")
    p = check_forward(xa, wa, None, layout=layout)
    if p.groups != 1 or p.f > p.c:
        raise ValueError(f"expected a filter that reduces {p.c} channels to at most {p.c}, "
                         f"but got {p.f} output channels; pass a filter with F <= C")
    r = fit_reduction(xa, p.f, layout=layout)
    pixels = _pixels(xa, layout)
    cov = r.covariance
    w = _matrix(wa, layout).astype(np.float64)  # (C, F)
    cz = w.T @ cov @ w  # (F, C) @ (C, C) @ (C, F)
    cross = cov @ w  # (C, C) @ (C, F)
    explained = float(np.trace(cross @ np.linalg.pinv(cz, hermitian=True) @ cross.T))
    total = float(np.trace(cov))
    error = max(0.0, total - explained)
    kept = explained / total if total > 0 else 1.0
    return PCAExplanation(xa, wa, layout, r, pixels, min(1.0, kept), error, max_pixels, name)


def _pixels(x: np.ndarray, layout: str) -> np.ndarray:
    channels_last, batched = LAYOUTS[layout]
    x4 = x if batched else x[None]
    nhwc = x4 if channels_last else x4.transpose(0, 2, 3, 1)  # (N, H, W, C)
    return nhwc.reshape(-1, nhwc.shape[-1]).astype(np.float64)  # (N·H·W, C)


def _spatial(x: np.ndarray, layout: str) -> tuple[int, int]:
    channels_last, batched = LAYOUTS[layout]
    s = x.shape[1:] if batched else x.shape
    return (s[0], s[1]) if channels_last else (s[1], s[2])


def _matrix(w: np.ndarray, layout: str) -> np.ndarray:
    """(C, F): the filter as a matrix, whatever its format."""
    if LAYOUTS[layout][0]:
        return w[0, 0] if w.ndim == 4 else w
    return (w[:, :, 0, 0] if w.ndim == 4 else w).T


def _unit(w: np.ndarray, layout: str) -> str:
    v = _matrix(w, layout)[:, 0].astype(np.float64)
    v = v / np.linalg.norm(v)
    return "[" + ", ".join(fmt_number(float(a)) for a in v) + "]"


def _kept(part: float, total: float) -> str:
    share = 100 * part / total if total > 0 else 100.0
    return f"{fmt_number(_clean(part, total))} of {fmt_number(total)} ({share:.4g}%)"


def _clean(v: float, total: float) -> float:
    """Rounding noise (below ZERO of the total) written as 0."""
    return 0.0 if abs(v) <= ZERO * max(total, 1e-300) else v
