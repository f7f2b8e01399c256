"""pointwise: the 1×1 (pointwise) convolution, exact and fast, and tools to see into it.

The core needs only NumPy; importing :mod:`pointwise` never imports torch.

>>> import pointwise as pw
>>> pw.conv1x1([[[1, 2], [3, 4]]], [[1], [2]], layout="HWC").tolist()
[[[5], [11]]]
"""

from pointwise import _moved
from pointwise._version import __version__
from pointwise.blocks import depthwise_separable, inverted_residual
from pointwise.conv import conv1x1, conv1x1_backward
from pointwise.conv2d import conv2d
from pointwise.cost import Cost, conv_cost
from pointwise.explain import Trace, explain
from pointwise.layout import ACTIVATIONS, LAYOUTS
from pointwise.problem import output_size
from pointwise.reduction import PCAReduction, fit_reduction

_moved.install()

cost = conv_cost

__all__ = [
    "ACTIVATIONS",
    "LAYOUTS",
    "Cost",
    "PCAReduction",
    "Trace",
    "__version__",
    "conv1x1",
    "conv1x1_backward",
    "conv2d",
    "conv_cost",
    "cost",
    "depthwise_separable",
    "explain",
    "fit_reduction",
    "inverted_residual",
    "output_size",
]
