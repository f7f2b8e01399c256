"""PyTorch integration: the ``Conv1x1`` module, its function, and model conversion.

* :func:`pointwise.nn.functional.conv1x1` — ``pointwise.conv1x1`` for torch tensors, with
  autograd; ``pointwise.conv1x1`` routes tensors to it. Its kernels (torch's conv2d and
  addmm, the NumPy core, pointwise's compiled kernels) and the rule that picks one are in
  :mod:`pointwise.nn.kernels`.
* :class:`Conv1x1` — a drop-in ``nn.Conv2d(kernel_size=1)`` whose forward calls it.
* :class:`Conv2d` — ``nn.Conv2d`` for any kernel, whose inference runs on the taps
  kernels (:func:`pointwise.conv2d`), with a fused activation and residual.
* :func:`convert` — swaps every 1×1 ``nn.Conv2d`` of a model for ``Conv1x1`` (and every
  k×k one with one group for ``Conv2d``), folding a
  following BatchNorm and fusing a following activation where that is provably safe;
  :func:`to_conv2d` swaps them back, for torch alone.
* :func:`freeze` (``convert(..., freeze=True)``) — the converted convs read their weights
  packed once, as an inference engine does, instead of packing them on every call;
  :func:`refresh` and :func:`thaw` undo it.
* :class:`FusedInvertedResidual`, :class:`FusedDepthwiseSeparable` — MobileNet's blocks
  in one pass (:func:`pointwise.inverted_residual`), which :func:`convert` swaps in.
* :class:`Linear`, :class:`GlobalAvgPool2d` — a network's head (``nn.Linear``,
  ``nn.AdaptiveAvgPool2d((1, 1))``) on the head's kernels, which :func:`convert` swaps in.
* :func:`compress` — replaces each 1×1 conv by a rank-k pair (:class:`LowRankConv1x1`)
  fitted to its responses on data (PCA, as Zhang, Zou, He and Sun), where that saves MACs.

This package imports torch; ``import pointwise`` does not.
"""

from pointwise.nn import functional
from pointwise.nn.blocks import FusedDepthwiseSeparable, FusedInvertedResidual
from pointwise.nn.compress import compress, compress_structure
from pointwise.nn.conv2d import Conv2d
from pointwise.nn.convert import ConvertReport, convert, to_conv2d
from pointwise.nn.frozen import freeze, refresh, thaw
from pointwise.nn.head import GlobalAvgPool2d, Linear
from pointwise.nn.lowrank import LowRankConv1x1
from pointwise.nn.module import Conv1x1
from pointwise.nn.report import CompressReport, LayerCompression

__all__ = ["CompressReport", "Conv1x1", "Conv2d", "ConvertReport", "FusedDepthwiseSeparable",
           "FusedInvertedResidual", "GlobalAvgPool2d", "LayerCompression", "Linear",
           "LowRankConv1x1", "compress", "compress_structure", "convert", "freeze",
           "functional", "refresh", "thaw", "to_conv2d"]
