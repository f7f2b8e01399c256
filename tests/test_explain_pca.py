"""explain_pca and `pointwise explain --pca`: the best C→k conv beside a filter.

What a filter keeps is checked against an independent least-squares fit (``np.linalg.lstsq``
of the pixels on the filter's outputs and a constant), and PCA's against ``np.cov``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from pointwise.cli import main
from pointwise.explain import explain_pca

TUTORIAL_X = [[[1, 2], [3, 4], [5, 6]], [[7, 8], [9, 10], [11, 12]], [[13, 14], [15, 16], [17, 18]]]


def lstsq_error(pixels: np.ndarray, w: np.ndarray) -> float:
    """Mean squared error per pixel of the best x̂ = A·z + c, z = pixels @ w (C, F)."""
    design = np.hstack([pixels @ w, np.ones((len(pixels), 1))])  # (P, F + 1)
    coef, *_ = np.linalg.lstsq(design, pixels, rcond=None)  # (F + 1, C)
    return float(((pixels - design @ coef) ** 2).sum(1).mean())


def test_tutorial_filter_and_pca_both_keep_everything():
    e = explain_pca()
    r = e.pca
    np.testing.assert_allclose(r.weight, [[2 ** -0.5], [2 ** -0.5]], rtol=1e-12)
    np.testing.assert_allclose(r.eigenvalues, [160 / 3, 0], atol=1e-12)
    assert r.energy == pytest.approx(1.0) and e.filter_kept == pytest.approx(1.0)
    assert e.filter_error == pytest.approx(0, abs=1e-9)
    pixels = np.array(TUTORIAL_X, np.float64).reshape(-1, 2)
    assert lstsq_error(pixels, np.array([[1.0], [2.0]])) == pytest.approx(0, abs=1e-20)
    # [1, 2]/√5 against (1, 1)/√2: cos = 3/√10
    assert e.angle == pytest.approx(np.degrees(np.arccos(3 / 10 ** 0.5)), rel=1e-12)
    text = e.to_text()
    assert "the tutorial's filter, (1, 1, 2, 1) HWIO:" in text
    assert "pixel (0,0): z = 0.7071·1 + 0.7071·2 + (-13.44) = -11.31  →  x̂ = (1, 2)" in text
    assert "variance kept: 53.33 of 53.33 (100%); reconstruction error 0 per pixel" in text
    assert "The pixels lie on a line: 1 channel keeps all of their variance" in text


@pytest.mark.parametrize("layout", ["HWC", "NHWC", "CHW", "NCHW"])
def test_random_input_pca_beats_the_filter_by_eckart_young(layout):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 10, (2, 5, 4, 6) if layout.startswith("N") else (5, 4, 6))
    if layout in ("CHW", "NCHW"):
        x = np.moveaxis(x, -1, -3)  # channels first
    w = rng.integers(-3, 4, (6, 2))  # (C, F)
    weight = w if layout in ("HWC", "NHWC") else w.T
    e = explain_pca(x, weight, layout=layout)
    pixels = e.pixels
    assert pixels.shape == ((40 if layout.startswith("N") else 20), 6)
    assert e.filter_error == pytest.approx(lstsq_error(pixels, w.astype(float)), rel=1e-9)
    ref = np.linalg.eigvalsh(np.cov(pixels.T, bias=True))[::-1]
    assert e.pca.residual == pytest.approx(ref[2:].sum(), rel=1e-9)
    assert lstsq_error(pixels, e.pca.components.T) == pytest.approx(ref[2:].sum(), rel=1e-9)
    assert e.pca.residual < e.filter_error  # a random integer filter is not optimal
    assert e.pca.k == 2 and e.angle is None
    assert "points more of the variance" in e.to_text()


def test_cli_text_json_and_errors(capsys):
    assert main(["explain", "--pca"]) == 0
    out, err = capsys.readouterr()
    assert err == "" and "the 1×1 conv that best reduces 2 channels to 1" in out
    assert main(["explain", "--pca", "--json", "-"]) == 0
    d = json.loads(capsys.readouterr()[0])
    assert d["pca"]["variance_kept"] == pytest.approx(1.0)
    assert d["filter_result"]["error"] == pytest.approx(0, abs=1e-9)
    assert d["eigenvalues"] == pytest.approx([160 / 3, 0], abs=1e-12)
    assert main(["explain", "--pca", "--random", "3x4x4", "--filters", "2",
                 "--max-pixels", "3"]) == 0
    out = capsys.readouterr()[0]
    assert out.count("\npixel (") == 3 and "… 13 more pixels" in out
    for argv, message in ((["--bias", "1"], "expected no --bias with --pca"),
                          (["--png", "x.png"], "expected no --png with --pca"),
                          (["--random", "2x3x3", "--filters", "3"],
                           "expected a filter that reduces 2 channels to at most 2")):
        assert main(["explain", "--pca", *argv]) == 2
        err = capsys.readouterr()[1]
        assert err.startswith("error: " + message) and err.count("\n") <= 2
