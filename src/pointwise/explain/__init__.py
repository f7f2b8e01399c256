"""The explainer: a 1×1 convolution written out, pixel by pixel, with its cost.

* :mod:`~pointwise.explain.trace`: :func:`explain` and the :class:`Trace` it returns;
* :mod:`~pointwise.explain.pca`: :func:`explain_pca`, the best C→k 1×1 conv (PCA) beside a
  given filter;
* :mod:`~pointwise.explain.taps`: :func:`explain_taps`, a k×k conv as k² shifted 1×1 convs;
* :mod:`~pointwise.explain.examples`: the tutorial's example and small random inputs;
* :mod:`~pointwise.explain.text`: how numbers and arrays are written;
* :mod:`~pointwise.explain.draw`: the PNG drawing (matplotlib, the ``plot`` extra).
"""

from pointwise.explain.examples import random_filter, random_input, tutorial_example
from pointwise.explain.pca import PCAExplanation, explain_pca
from pointwise.explain.taps import Tap, TapsTrace, explain_taps
from pointwise.explain.text import fmt_number
from pointwise.explain.trace import PixelLine, Trace, explain

__all__ = ["PCAExplanation", "PixelLine", "Tap", "TapsTrace", "Trace", "explain", "explain_pca",
           "explain_taps", "fmt_number", "random_filter", "random_input", "tutorial_example"]
