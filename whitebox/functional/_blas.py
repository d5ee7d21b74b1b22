"""Products and reductions arranged so that BLAS does the work.

NumPy multiplies a stacked (B, N, k) array by a matrix as B separate
products (far slower still when the matrix is a transposed view), and it
reduces along a short last axis with a slow strided loop. Folding the
leading axes into rows gives BLAS one large product instead, and a sum over
the last axis is a product with a column of ones. These helpers serve NumPy
and CuPy alike.
"""
from ..backend import get_array_module


def matmul_rows(x, M):
    """x (..., k) @ M (k, m) -> (..., m), computed as ONE 2-D matrix product."""
    lead = x.shape[:-1]
    return (x.reshape(-1, x.shape[-1]) @ M).reshape(*lead, M.shape[-1])


def mean_last(x):
    """Mean over the last axis, kept as a length-1 axis: (..., k) -> (..., 1)."""
    xp = get_array_module(x)
    k = x.shape[-1]
    return matmul_rows(x, xp.full((k, 1), 1.0 / k, dtype=x.dtype))


def sum_last(x):
    """Sum over the last axis, kept as a length-1 axis: (..., k) -> (..., 1)."""
    xp = get_array_module(x)
    return matmul_rows(x, xp.ones((x.shape[-1], 1), dtype=x.dtype))


def sum_leading(x):
    """Sum over every axis but the last: (..., k) -> (k,)."""
    xp = get_array_module(x)
    rows = x.reshape(-1, x.shape[-1])
    return xp.ones(rows.shape[0], dtype=x.dtype) @ rows
