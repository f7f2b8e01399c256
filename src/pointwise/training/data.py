"""Training data: scikit-learn's digits with a seeded split, or the user's own ``.npz``.

Everything comes back as one :class:`Dataset` of in-memory NumPy arrays, images NCHW
float32 and labels int64, so the trainer, ``export`` and ``predict`` see one shape.

* ``"digits"``: the 1,797 8×8 grey images that ship inside scikit-learn (no network). Pixels
  are integers 0..16, scaled to 0..1. The train/test split is stratified and seeded; its
  indices are returned (``Dataset.split``), stored in the checkpoint, and reused on resume
  and by ``predict``, so a different scikit-learn cannot silently move the split.
* ``"PATH.npz"``: arrays ``x`` (N, H, W, C) or (N, C, H, W) (or (N, H, W) for one
  channel), ``y`` (N,) integer labels 0..K−1, and optionally ``x_test``/``y_test``. Without
  a test set, one is split off as for digits. Loaded with ``allow_pickle=False``: an object
  array is refused rather than unpickled. ``uint8`` images are scaled from 0..255 to 0..1;
  other dtypes are used as they are.

Which axis holds the channels? The one of axes 1 and 3 that is at most 4 (grey, RGB,
RGBA) while the other is not; when both or neither are, channels-last (NHWC, the layout
of most saved image arrays). Pass NCHW arrays with H, W > 4 to be unambiguous.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Dataset", "load", "load_digits", "load_npz", "stored_split"]

TEST_FRACTION = 0.25


@dataclass
class Dataset:
    """Images NCHW float32, labels int64 in ``0..num_classes-1``.

    ``split`` holds what is needed to rebuild the same split: ``{"seed", "test_fraction",
    "train_index", "test_index"}`` (index lists into the source's arrays), or ``{}`` when
    the source came with its own test set.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    split: dict[str, Any] = field(default_factory=dict)

    @property
    def in_channels(self) -> int:
        return int(self.x_train.shape[1])

    def __str__(self) -> str:
        _, c, h, w = self.x_train.shape
        return (f"{self.name}: {len(self.y_train)} train, {len(self.y_test)} test, "
                f"{c}×{h}×{w}, {self.num_classes} classes")


def load(spec: str, *, seed: int = 0, split: dict[str, Any] | None = None) -> Dataset:
    """``"digits"`` or a path to an ``.npz``; ``split`` (from a checkpoint) fixes the split."""
    if spec == "digits":
        return load_digits(seed=seed, split=split)
    if str(spec).endswith(".npz"):
        return load_npz(spec, seed=seed, split=split)
    raise ValueError(f"expected --data digits or a path ending in .npz, but got {spec!r}")


def load_digits(*, seed: int = 0, split: dict[str, Any] | None = None) -> Dataset:
    """scikit-learn's digits, (N, 1, 8, 8) in 0..1, with a stratified seeded split."""
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError:
        raise ModuleNotFoundError("expected scikit-learn for --data digits, but it is not "
                                  "installed (the 'train' extra)", name="sklearn") from None
    bunch = sk_load_digits()
    x = (bunch.images.astype(np.float32) / 16.0)[:, None]  # (N, 1, 8, 8), pixels 0..16 → 0..1
    y = bunch.target.astype(np.int64)
    return _split("digits", x, y, 10, seed, split)


def load_npz(path: str | Path, *, seed: int = 0,
             split: dict[str, Any] | None = None) -> Dataset:
    """The user's arrays; every problem raises ``ValueError`` naming the array and the fix."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"expected an .npz file, but {str(path)!r} does not exist")
    if not zipfile.is_zipfile(path):  # np.load would try to read it as a pickle
        raise ValueError(f"expected an .npz archive at {str(path)!r}, but it is not a zip "
                         f"file; write it with np.savez(path, x=x, y=y)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except ValueError as e:  # an object array needs pickle, which we refuse
        raise ValueError(f"expected numeric arrays in {str(path)!r}, but got {e} (save "
                         f"numbers, not Python objects: np.savez(path, x=x, y=y))") from None
    except (OSError, EOFError) as e:  # not a zip, or truncated
        raise ValueError(f"expected an .npz archive at {str(path)!r}, but could not read it: "
                         f"{e}") from None
    missing = [k for k in ("x", "y") if k not in arrays]
    if missing:
        raise ValueError(f"expected arrays 'x' and 'y' in {str(path)!r}, but got "
                         f"{sorted(arrays)} (missing {missing})")
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise ValueError(f"expected both 'x_test' and 'y_test' or neither in {str(path)!r}, "
                         f"but got {sorted(arrays)}")
    x = _images(arrays["x"], "x")
    y = _labels(arrays["y"], "y", len(x))
    has_test = "x_test" in arrays
    if has_test:
        x_test = _images(arrays["x_test"], "x_test")
        y_test = _labels(arrays["y_test"], "y_test", len(x_test))
        if x_test.shape[1:] != x.shape[1:]:
            raise ValueError(f"expected x_test images shaped like x's {x.shape[1:]} (C, H, W), "
                             f"but got {x_test.shape[1:]}")
    num_classes = int(y.max()) + 1
    if has_test:
        if int(y_test.max()) >= num_classes:
            raise ValueError(f"expected y_test labels within y's 0..{num_classes - 1}, but got "
                             f"{int(y_test.max())}; the model only learns labels seen in y")
        return Dataset(str(path), x, y, x_test, y_test, num_classes)
    return _split(str(path), x, y, num_classes, seed, split)


def _images(a: np.ndarray, name: str) -> np.ndarray:
    if a.dtype.kind not in "fiub":
        raise ValueError(f"expected {name} of a real dtype (float or integer), but got "
                         f"{a.dtype}")
    if a.ndim == 3:  # (N, H, W): one channel
        a = a[:, None]
    if a.ndim != 4:
        raise ValueError(f"expected {name} shaped (N, H, W, C) or (N, C, H, W), but got "
                         f"{a.shape}")
    if len(a) == 0:
        raise ValueError(f"expected at least one image in {name}, but got shape {a.shape}")
    if not a.shape[1] <= 4 < a.shape[3]:  # not clearly NCHW: channels-last, as documented
        a = a.transpose(0, 3, 1, 2)  # (N, H, W, C) → (N, C, H, W)
    scale = 255.0 if a.dtype == np.uint8 else 1.0
    out = np.ascontiguousarray(a, dtype=np.float32) / np.float32(scale)
    if not np.isfinite(out).all():
        raise ValueError(f"expected finite values in {name}, but got NaN or inf")
    return out


def _labels(a: np.ndarray, name: str, n: int) -> np.ndarray:
    if a.dtype.kind not in "iu":
        raise ValueError(f"expected {name} of an integer dtype (class indices), but got "
                         f"{a.dtype}; convert with {name}.astype(np.int64)")
    if a.shape != (n,):
        raise ValueError(f"expected {name} shaped ({n},), one label per image, but got "
                         f"{a.shape}")
    if a.min() < 0:
        raise ValueError(f"expected {name} labels 0..K-1, but got {int(a.min())}")
    return a.astype(np.int64)


def _split(name: str, x: np.ndarray, y: np.ndarray, num_classes: int, seed: int,
           split: dict[str, Any] | None) -> Dataset:
    if split:  # the checkpoint's split: reuse it exactly
        train_i, test_i = stored_split(split, len(y), name)
    else:
        train_i, test_i = _stratified(y, seed, TEST_FRACTION)
    record = {"seed": int(seed), "test_fraction": TEST_FRACTION,
              "train_index": train_i.tolist(), "test_index": test_i.tolist()}
    return Dataset(name, x[train_i], y[train_i], x[test_i], y[test_i], num_classes, record)


def stored_split(split: Any, n: int, name: str) -> tuple[np.ndarray, np.ndarray]:
    """The train and test indices of a split read from a file, checked: two non-empty 1-D
    lists of distinct indices into ``n`` samples that share none. A negative index would
    count from the end and an overlap would score training images as test images, so both
    are refused rather than silently changing the result."""
    if not isinstance(split, dict):
        raise ValueError(f"expected the stored split as a dict, but got {type(split).__name__}")
    out = []
    for key in ("train_index", "test_index"):
        try:
            a = np.asarray(split.get(key))
        except (ValueError, TypeError, OverflowError):  # ragged lists, huge ints
            a = np.asarray(None)
        if a.ndim != 1 or a.size == 0 or a.dtype.kind not in "iu":
            raise ValueError(f"expected the stored split's {key!r} as a non-empty list of "
                             f"indices, but got {_brief(split.get(key))}")
        lo, hi = int(a.min()), int(a.max())
        if lo < 0 or hi >= n:
            raise ValueError(f"expected the stored split's {key!r} to index {name}'s {n} "
                             f"samples (0..{n - 1}), but it holds {lo if lo < 0 else hi}; is "
                             f"it the same data the model was trained on?")
        a = a.astype(np.int64)
        if len(np.unique(a)) != len(a):
            raise ValueError(f"expected the stored split's {key!r} to name each sample once, "
                             f"but it repeats some")
        out.append(a)
    shared = np.intersect1d(out[0], out[1])
    if shared.size:
        raise ValueError(f"expected the stored train and test indices to be disjoint, but "
                         f"{shared.size} samples are in both (e.g. {int(shared[0])}); the "
                         f"test score would include training images")
    return out[0], out[1]


def _brief(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def _stratified(y: np.ndarray, seed: int, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """A seeded split keeping class proportions: each class gives ``round(fraction·n)`` to
    test (at least one when it has two or more samples).

    Written here, not taken from scikit-learn, so the split depends on NumPy's seeded
    generator only; and an .npz needs no scikit-learn.
    """
    rng = np.random.default_rng(seed)
    test: list[np.ndarray] = []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        k = max(1, round(fraction * len(idx))) if len(idx) > 1 else 0  # a lone sample trains
        test.append(idx[:k])
    test_i = np.sort(np.concatenate(test))
    train_i = np.setdiff1d(np.arange(len(y)), test_i)
    if len(test_i) == 0:
        raise ValueError(f"expected at least 2 samples of some class to split off a test set, "
                         f"but got {len(y)} samples; add x_test and y_test to the .npz")
    return train_i, test_i
