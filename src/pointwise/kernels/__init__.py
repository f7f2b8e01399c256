"""How the operator is fast: the compiled float32 kernels and the NumPy/BLAS paths around them.

* :mod:`~pointwise.kernels.native`: the compiled kernels (``csrc/``, built at install time
  into ``pointwise.kernels._kernel``), what they take, and the switch that turns them off;
* :mod:`~pointwise.kernels.fastpath`: small plain calls, spotted and run without planning;
* :mod:`~pointwise.kernels.gemm`: the blocked GEMMs of the NumPy path, epilogue in cache;
* :mod:`~pointwise.kernels.blas`: OpenBLAS's thread count and the pool that shares blocks.

This layer knows nothing of the operators above it: it takes arrays and writes arrays.
"""
