"""``fit_reduction``: the 1×1 conv that best reduces C channels to k, fitted by PCA.

Over the pixel vectors x ∈ Rᶜ of a data set, with mean μ and covariance
``Σ = mean((x − μ)(x − μ)ᵀ)`` = Σᵢ λᵢ pᵢ pᵢᵀ (λ₁ ≥ … ≥ λ_C), the affine rank-k map that
reconstructs them with the least mean squared error is

    z = Pᵀ (x − μ)        a C→k 1×1 conv: weight Pᵀ, bias −Pᵀμ
    x̂ = P z + μ           a k→C 1×1 conv: weight P,  bias μ

with P = [p₁ … p_k] (C, k); the error left, ``mean ‖x − x̂‖²``, is λ_{k+1} + … + λ_C
(Eckart–Young). Unlike scikit-learn's ``PCA``, Σ divides by the pixel count n, not n − 1, so
that this identity holds exactly; the components are the same.

How it is computed: one pass over the data, then one ``eigh`` of the C×C covariance. The
pass is the symmetric product ``Xᵀ X`` (one triangle of it) over blocks of pixel vectors
taken in float64, each core taking its share of the pixels: in the compiled kernel where it
runs, else on NumPy (:class:`pointwise.moments.ChannelMoments` says how the sums stay
exact). Nothing of the data's size is allocated: the extra memory is one block per core and
the C×C sums.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from pointwise.conv import conv1x1
from pointwise.layout import as_array, check_layout
from pointwise.moments import ChannelMoments

__all__ = ["PCAReduction", "fit_reduction", "principal_axes"]

def principal_axes(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (descending, negatives from rounding set to 0) and unit eigenvectors
    (columns, same order) of a symmetric (C, C) matrix. Each vector's largest-magnitude
    entry is positive, so a fit's signs are reproducible (scikit-learn's ``svd_flip`` rule
    on the components)."""
    values, vectors = np.linalg.eigh(matrix)  # ascending
    values = np.maximum(values[::-1], 0.0)
    vectors = vectors[:, ::-1]  # (C, C), column i is the i-th axis
    rows = np.argmax(np.abs(vectors), axis=0)  # (C,)
    signs = np.sign(vectors[rows, np.arange(vectors.shape[1])])
    signs[signs == 0] = 1.0
    return values, np.ascontiguousarray(vectors * signs)  # (C, C) · (C,)


@dataclass(frozen=True, eq=False)
class PCAReduction:
    """A fitted reduction of C channels to k: a C→k 1×1 conv and its best k→C inverse.

    Not to be confused with :class:`pointwise.cost.Reduction`, which compares the cost of a
    conv with and without a 1×1 reduction in front of it.

    Attributes:
        weight: the C→k conv's weight in ``layout``'s convention: (C, k) for NHWC/HWC,
            (k, C) for NCHW/CHW, in the data's float dtype (float64 for integer data).
        bias: (k,), ``−Pᵀμ``; None when fitted with ``center=False``.
        reconstruction_weight: the k→C conv's weight, (k, C) for NHWC/HWC, (C, k) otherwise.
        reconstruction_bias: (C,), μ; None with ``center=False``.
        components: (k, C) float64, the principal directions as rows (scikit-learn's
            ``components_``), in order of decreasing variance.
        eigenvalues: (C,) float64, every eigenvalue of the covariance (of ``mean(x xᵀ)``
            with ``center=False``), descending.
        covariance: (C, C) float64, that matrix: the channel covariance (divided by the
            pixel count), or ``mean(x xᵀ)`` with ``center=False``.
        mean: (C,) float64, the channel mean (zeros with ``center=False``).
        count: pixel vectors fitted.
        layout, center: as passed to :func:`fit_reduction`.
    """

    weight: np.ndarray
    bias: np.ndarray | None
    reconstruction_weight: np.ndarray
    reconstruction_bias: np.ndarray | None
    components: np.ndarray
    eigenvalues: np.ndarray
    covariance: np.ndarray
    mean: np.ndarray
    count: int
    layout: str
    center: bool

    @property
    def k(self) -> int:
        return int(self.components.shape[0])

    @property
    def channels(self) -> int:
        return int(self.components.shape[1])

    @property
    def explained_variance(self) -> np.ndarray:
        """(k,): the variance along each component, ``eigenvalues[:k]``."""
        return self.eigenvalues[: self.k]

    @property
    def explained_variance_ratio(self) -> np.ndarray:
        """(k,): each component's share of the total variance."""
        return self.explained_variance / _positive(self.eigenvalues.sum())

    @property
    def energy(self) -> float:
        """The share of the total variance kept, Σ_{i≤k} λᵢ / Σ λᵢ (1.0 for constant data)."""
        total = self.eigenvalues.sum()
        return float(self.explained_variance.sum() / total) if total > 0 else 1.0

    @property
    def residual(self) -> float:
        """Mean squared reconstruction error per pixel, ``Σ_{i>k} λᵢ``."""
        return float(self.eigenvalues[self.k:].sum())

    def transform(self, x: Any) -> Any:
        """The k reduced channels of ``x``: ``conv1x1(x, weight, bias, layout=layout)``."""
        return conv1x1(x, self.weight, self.bias, layout=self.layout)

    def reconstruct(self, z: Any) -> Any:
        """The C channels rebuilt from the k of ``z``."""
        return conv1x1(z, self.reconstruction_weight, self.reconstruction_bias,
                       layout=self.layout)

    def __repr__(self) -> str:
        return (f"PCAReduction({self.channels} -> {self.k} channels, layout={self.layout!r}, "
                f"energy={self.energy:.6g}, count={self.count})")


def _positive(v: float) -> float:
    return v if v > 0 else 1.0


def fit_reduction(x: Any, k: int, *, layout: str = "NHWC", center: bool = True) -> PCAReduction:
    r"""Fit the C→k 1×1 conv that loses the least squared error: PCA of the channel vectors.

    See the module docstring for the formula. ``x`` is read once; nothing of its size is
    allocated, so a generator over a data set larger than memory works.

    Args:
        x: an array (or nested lists) in ``layout``, or an iterable of such batches: a list
            or tuple of arrays, a generator, a DataLoader yielding arrays or CPU tensors.
        k: components to keep, 1 ≤ k ≤ C.
        layout: ``"NHWC"``, ``"HWC"``, ``"NCHW"`` or ``"CHW"``: where the channels are, and
            the convention of the weights returned.
        center: subtract the channel mean first (the affine optimum). With False, fit the
            best linear map without bias (eigenvectors of ``mean(x xᵀ)``).

    Returns:
        A :class:`PCAReduction`: ``pw.conv1x1(x, r.weight, r.bias, layout=layout)`` reduces,
        ``r.reconstruct(z)`` rebuilds, ``r.explained_variance`` and ``r.energy`` say how much
        is kept.

    Raises:
        TypeError: ``k`` is not an int; a batch is not a numeric array.
        ValueError: k < 1 or k > C; no pixel vectors at all; a batch of the wrong rank or
            channel count; NaN or infinity in the data.

    Examples:
        The tutorial's 9 pixels lie on the line x₂ = x₁ + 1, so one channel keeps everything:

        >>> import pointwise as pw
        >>> x = [[[1, 2], [3, 4], [5, 6]], [[7, 8], [9, 10], [11, 12]],
        ...      [[13, 14], [15, 16], [17, 18]]]
        >>> r = pw.fit_reduction(x, 1, layout="HWC")
        >>> r.weight.round(4).tolist(), r.bias.round(4).tolist(), round(r.energy, 12)
        ([[0.7071], [0.7071]], [-13.435], 1.0)
        >>> r.reconstruct(r.transform(x)).round(9).tolist()[0]
        [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"expected k to be an int, but got {type(k).__name__} {k!r}")
    channels_last, batched = check_layout(layout)
    moments: ChannelMoments | None = None
    dtypes: set[np.dtype] = set()
    for i, batch in enumerate(_batches(x)):
        arr = _batch_array(batch, i, layout, batched)
        c = arr.shape[-1] if channels_last else arr.shape[1 if batched else 0]
        if moments is None:
            _check_k(k, c, layout, arr.shape)
            moments = ChannelMoments(c)
        elif c != moments.channels:
            raise ValueError(
                f"expected every batch to have {moments.channels} channels (as batch 0), but "
                f"got {c} in batch {i} of shape {arr.shape} in layout {layout!r}"
            )
        if arr.dtype.kind not in "iu":
            dtypes.add(arr.dtype)
        _accumulate(moments, arr if batched else arr[None], channels_last, i)
    if moments is None or moments.count == 0:
        raise ValueError(
            f"expected at least one pixel vector to fit, but got an empty data set "
            f"({'no batches' if moments is None else 'every batch empty'})"
        )
    if not np.isfinite(moments.scatter).all():
        raise ValueError(
            "expected finite data, but the channel covariance overflowed float64; scale the "
            "data down first"
        )
    return _reduction(moments, k, layout, channels_last, center, _weight_dtype(dtypes))


def _check_k(k: int, c: int, layout: str, shape: tuple[int, ...]) -> None:
    if not 1 <= k <= c:
        raise ValueError(
            f"expected 1 <= k <= C = {c} (the channels of x of shape {shape} in layout "
            f"{layout!r}), but got k={k}"
        )


def _batches(x: Any) -> Iterator[Any]:
    """One array, or the batches of an iterable (a list or tuple of arrays is batches)."""
    if isinstance(x, np.ndarray) or hasattr(x, "__array__") or hasattr(x, "__array_interface__"):
        yield x
    elif isinstance(x, (list, tuple)):
        if all(hasattr(b, "__array__") for b in x):  # batches (none, for an empty list)
            yield from x
        else:
            yield x  # nested lists of numbers: one array
    elif isinstance(x, Iterable) and not isinstance(x, (str, bytes)):
        yield from x
    else:
        raise TypeError(
            f"expected x to be an array or an iterable of arrays, but got {type(x).__name__}"
        )


def _batch_array(batch: Any, i: int, layout: str, batched: bool) -> np.ndarray:
    if type(batch).__module__.partition(".")[0] == "torch":
        batch = batch.detach().cpu().numpy()  # a view of a CPU tensor, no copy
    elif isinstance(batch, (tuple, list)) and batch and hasattr(batch[0], "__array__"):
        raise TypeError(
            f"expected batch {i} to be an array, but got a {type(batch).__name__} of "
            f"{len(batch)} arrays; for (inputs, labels) pairs pass (x for x, _ in loader)"
        )
    arr = as_array(batch, f"batch {i}" if i else "x")
    ndim = 4 if batched else 3
    if arr.ndim != ndim:
        axes = {"NHWC": "(N, H, W, C)", "HWC": "(H, W, C)", "NCHW": "(N, C, H, W)",
                "CHW": "(C, H, W)"}[layout]
        raise ValueError(
            f"expected {'batch ' + str(i) if i else 'x'} to be {ndim}-D {axes} in layout "
            f"{layout!r}, but got shape {arr.shape}"
        )
    return arr


def _accumulate(moments: ChannelMoments, x: np.ndarray, channels_last: bool, i: int) -> None:
    """Add a 4-D batch to ``moments``; stop at the first batch with NaN or infinity."""
    before = moments.count
    moments.add_images(x, channels_last)
    if moments.count > before and not np.isfinite(moments.mean).all():
        raise ValueError(
            f"expected finite data, but got NaN or infinity in {'batch ' + str(i) if i else 'x'}"
            f" (np.isnan(x).any() finds it); drop or impute those pixels first"
        )


def _weight_dtype(dtypes: set[np.dtype]) -> np.dtype:
    """The data's float dtype, so the weights apply to it (float64 for integer data)."""
    if len(dtypes) == 1:
        return next(iter(dtypes))
    try:
        return np.result_type(*dtypes) if dtypes else np.dtype(np.float64)
    except TypeError:
        return np.dtype(np.float64)


def _reduction(m: ChannelMoments, k: int, layout: str, channels_last: bool, center: bool,
               dtype: np.dtype) -> PCAReduction:
    matrix = m.covariance if center else m.second_moment  # (C, C)
    values, vectors = principal_axes(matrix)
    p = vectors[:, :k]  # (C, k)
    mean = m.mean.copy() if center else np.zeros(m.channels)
    bias = -(mean @ p)  # (C,) @ (C, k) -> (k,)
    reduce_w, expand_w = (p, p.T) if channels_last else (p.T, p)  # (C, k), (k, C) / swapped
    return PCAReduction(
        weight=np.ascontiguousarray(reduce_w, dtype=dtype),
        bias=bias.astype(dtype) if center else None,
        reconstruction_weight=np.ascontiguousarray(expand_w, dtype=dtype),
        reconstruction_bias=mean.astype(dtype) if center else None,
        components=np.ascontiguousarray(p.T),  # (k, C)
        eigenvalues=values,
        covariance=matrix,
        mean=mean,
        count=m.count,
        layout=layout,
        center=center,
    )

