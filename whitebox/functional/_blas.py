"""Products and reductions arranged so that the fast kernels do the work.

NumPy multiplies a stacked (B, N, k) array by a matrix as B separate
products (far slower still when the matrix is a transposed view); folding
the leading axes into rows gives BLAS one large product instead.

Reductions:

- over the LAST axis (`mean_last`, `sum_last`): `einsum`, on one core; a
  BLAS product with a column of ones would use the BLAS threads, which wait
  on each other when a core is busy.
- over the LEADING axes (`sum_leading`): a BLAS product of a row of ones with
  the rows.

benchmarks/README.md gives the measurements that chose them
(benchmarks/bench_reductions.py).

These helpers serve NumPy and CuPy alike.
"""
from ..backend import get_array_module


def matmul_rows(x, M):
    """x (..., k) @ M (k, m) -> (..., m), computed as ONE 2-D matrix product."""
    lead = x.shape[:-1]
    return (x.reshape(-1, x.shape[-1]) @ M).reshape(*lead, M.shape[-1])


def sum_last(x):
    """Sum over the last axis, kept as a length-1 axis: (..., k) -> (..., 1)."""
    xp = get_array_module(x)
    return xp.einsum("...k->...", x)[..., None]


def sum_last_product(x, y):
    """Sum over the last axis of x * y, without forming x * y: (..., k) -> (..., 1)."""
    xp = get_array_module(x)
    return xp.einsum("...k,...k->...", x, y)[..., None]


def mean_last(x):
    """Mean over the last axis, kept as a length-1 axis: (..., k) -> (..., 1)."""
    s = sum_last(x)
    s *= 1.0 / x.shape[-1]                               # in place: s is a fresh array
    return s


def sum_leading(x):
    """Sum over every axis but the last: (..., k) -> (k,)."""
    xp = get_array_module(x)
    rows = x.reshape(-1, x.shape[-1])                    # (rows, k)
    return xp.ones(rows.shape[0], dtype=x.dtype) @ rows
