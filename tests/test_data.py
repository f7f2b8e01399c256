"""pointwise.training.data: digits with a seeded stratified split, the user's .npz, validated."""

from __future__ import annotations

import numpy as np
import pytest

from pointwise.training.data import load, load_digits, load_npz


def test_digits_are_scaled_nchw_and_split_stratified():
    d = load_digits(seed=0)
    assert d.x_train.shape[1:] == (1, 8, 8) and d.x_train.dtype == np.float32
    assert len(d.y_train) + len(d.y_test) == 1797
    assert d.x_train.min() == 0.0 and d.x_train.max() == 1.0  # 0..16 → 0..1
    # stratified: every class keeps about a quarter of its samples in the test set
    share = np.bincount(d.y_test, minlength=10) / np.bincount(
        np.concatenate([d.y_train, d.y_test]), minlength=10)
    np.testing.assert_allclose(share, 0.25, atol=0.02)
    assert set(d.split["train_index"]).isdisjoint(d.split["test_index"])


def test_digits_split_is_seeded_and_a_stored_split_is_reused():
    a, b, c = load_digits(seed=0), load_digits(seed=0), load_digits(seed=1)
    assert a.split["test_index"] == b.split["test_index"]
    assert a.split["test_index"] != c.split["test_index"]
    again = load("digits", seed=1, split=a.split)  # the checkpoint's split wins over the seed
    np.testing.assert_array_equal(again.y_test, a.y_test)


def _save(tmp_path, **arrays):
    path = tmp_path / "d.npz"
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("layout", ["NHWC", "NCHW", "NHW"])
def test_npz_layouts_become_nchw(tmp_path, layout):
    rng = np.random.default_rng(0)
    x = rng.random((40, 3, 6, 6), dtype=np.float32)  # NCHW
    stored = {"NHWC": x.transpose(0, 2, 3, 1), "NCHW": x, "NHW": x[:, 0]}[layout]
    d = load_npz(_save(tmp_path, x=stored, y=np.arange(40) % 4), seed=0)
    channels = 1 if layout == "NHW" else 3
    assert d.x_train.shape[1:] == (channels, 6, 6) and d.num_classes == 4
    full = np.concatenate([d.x_train, d.x_test])
    want = x[:, :1] if layout == "NHW" else x
    np.testing.assert_array_equal(np.sort(full.ravel()), np.sort(want.ravel()))


def test_npz_with_its_own_test_set_and_uint8_scaling(tmp_path):
    x = np.full((10, 5, 5, 1), 255, np.uint8)
    path = _save(tmp_path, x=x, y=np.arange(10) % 2, x_test=x[:4], y_test=np.array([0, 1, 1, 0]))
    d = load_npz(path)
    assert len(d.y_train) == 10 and len(d.y_test) == 4 and d.split == {}
    assert d.x_train.max() == 1.0


@pytest.mark.parametrize("arrays, match", [
    ({"x": np.zeros((4, 8, 8, 1))}, r"expected arrays 'x' and 'y'.*missing \['y'\]"),
    ({"x": np.zeros((4, 8)), "y": np.zeros(4, int)}, r"expected x shaped \(N, H, W, C\)"),
    ({"x": np.zeros((4, 8, 8, 1)), "y": np.zeros(4)}, r"expected y of an integer dtype.*float64"),
    ({"x": np.zeros((4, 8, 8, 1)), "y": np.zeros(3, int)}, r"expected y shaped \(4,\).*\(3,\)"),
    ({"x": np.zeros((4, 8, 8, 1)), "y": np.array([0, 1, -1, 0])}, r"labels 0..K-1, but got -1"),
    ({"x": np.array(["a"] * 4).reshape(4, 1, 1, 1), "y": np.zeros(4, int)}, r"real dtype.*<U1"),
    ({"x": np.full((4, 8, 8, 1), np.nan), "y": np.zeros(4, int)}, r"finite values in x"),
    ({"x": np.zeros((4, 8, 8, 1)), "y": np.zeros(4, int), "x_test": np.zeros((2, 8, 8, 1))},
     r"both 'x_test' and 'y_test'"),
    ({"x": np.zeros((4, 8, 8, 1)), "y": np.array([0, 1, 0, 1]),
      "x_test": np.zeros((2, 8, 8, 1)), "y_test": np.array([0, 5])}, r"y_test labels within"),
    ({"x": np.zeros((4, 8, 8, 1)), "y": np.array([0, 1, 0, 1]),
      "x_test": np.zeros((2, 9, 9, 1)), "y_test": np.array([0, 1])}, r"x_test images shaped"),
])
def test_bad_npz_is_refused_with_the_reason(tmp_path, arrays, match):
    with pytest.raises(ValueError, match=match):
        load_npz(_save(tmp_path, **arrays))


def test_npz_objects_are_never_unpickled(tmp_path):
    path = _save(tmp_path, x=np.array([{"a": 1}] * 4, dtype=object), y=np.zeros(4, int))
    with pytest.raises(ValueError, match="expected numeric arrays"):
        load_npz(path)


def test_not_an_npz_and_unknown_spec(tmp_path):
    path = tmp_path / "junk.npz"
    path.write_bytes(b"this is not a zip archive")
    with pytest.raises(ValueError, match="expected an .npz archive"):
        load_npz(path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load(str(tmp_path / "missing.npz"))
    with pytest.raises(ValueError, match="expected --data digits or a path ending in .npz"):
        load("mnist")


@pytest.mark.parametrize(("change", "match"), [
    ({"test_index": [-1, 5]}, r"'test_index' to index digits's 1797 samples.* -1"),
    ({"train_index": [0, 1797]}, "holds 1797"),
    ({"test_index": []}, "non-empty list of indices"),
    ({"test_index": [1.5]}, "non-empty list of indices"),
    ({"test_index": [[1, 2]]}, "non-empty list of indices"),
    ({"test_index": [True]}, "non-empty list of indices"),
    ({"test_index": "0,1"}, "non-empty list of indices"),
    ({"test_index": [2**70]}, "non-empty list of indices"),
    ({"test_index": [3, 3]}, "each sample once"),
    ({"test_index": [0, 1], "train_index": [1, 2]}, "disjoint, but 1 samples are in both"),
])
def test_a_stored_split_is_checked_before_it_is_used(change, match):
    """A split read from a checkpoint or an .onnx: a negative index would count from the end
    and an overlap would score training images as test images."""
    split = {**load_digits(seed=0).split, **change}
    with pytest.raises(ValueError, match=match):
        load("digits", split=split)
    with pytest.raises(ValueError, match="stored split as a dict"):
        load("digits", split=[1, 2])
