"""The explainer: a 1×1 convolution written out, pixel by pixel, with its cost.

* :mod:`~pointwise.explain.trace`: :func:`explain` and the :class:`Trace` it returns;
* :mod:`~pointwise.explain.examples`: the tutorial's example and small random inputs;
* :mod:`~pointwise.explain.text`: how numbers and arrays are written;
* :mod:`~pointwise.explain.draw`: the PNG drawing (matplotlib, the ``plot`` extra).
"""

from pointwise.explain.examples import random_filter, random_input, tutorial_example
from pointwise.explain.text import fmt_number
from pointwise.explain.trace import PixelLine, Trace, explain

__all__ = ["PixelLine", "Trace", "explain", "fmt_number", "random_filter", "random_input",
           "tutorial_example"]
