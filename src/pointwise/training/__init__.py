"""Training tools: train a zoo model on a data set, checkpoint it, export it to ONNX.

* :mod:`~pointwise.training.config`: the settings of a run (no torch, so ``--help`` is fast);
* :mod:`~pointwise.training.train`: the loop, resumable and distributed;
* :mod:`~pointwise.training.data`: the data sets (scikit-learn's digits, ``.npz`` files);
* :mod:`~pointwise.training.checkpoint`: atomic, ``weights_only`` checkpoints;
* :mod:`~pointwise.training.distributed`: ``torchrun`` process groups;
* :mod:`~pointwise.training.export`: ONNX export, verified in onnxruntime, and prediction.

Each module imports what it needs when it is imported; this package imports nothing.
"""
