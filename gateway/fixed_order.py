"""Floating-point sums in a fixed order: the same bits on every CPU, whatever the batch.

Why not ``np.sum``: NumPy picks pairwise or vectorised orders by memory layout
and length (and may change them between versions). An elementwise IEEE
addition gives the same bits on every instruction set, so ``ordered_sum``
depends only on its terms: not on how many requests share the array, nor on
the CPU. The explainers call no BLAS (no dot, matmul or einsum), so their
NumPy side has no instruction-set-dependent step at all.
"""

from __future__ import annotations

import numpy as np

__all__ = ["ordered_sum"]


def ordered_sum(terms: np.ndarray, axis: int) -> np.ndarray:
    """Sum along ``axis`` strictly in index order, one elementwise float64 addition per term."""
    moved = np.moveaxis(terms, axis, 0)
    total = np.zeros(moved.shape[1:], dtype=np.float64)
    for term in moved:
        total += term
    return total
