"""Products and reductions arranged so that the fast kernels do the work.

NumPy multiplies a stacked (B, N, k) array by a matrix as B separate
products (far slower still when the matrix is a transposed view); folding
the leading axes into rows gives BLAS one large product instead.

Reductions were chosen per operation by measurement (float32, rows x k from
(1576, 384) to (12480, 64), 1 and 2 BLAS threads, idle and beside a busy
process, 2-core x86 with OpenBLAS; see benchmarks/bench_reductions.py):

- over the LAST axis (`mean_last`, `sum_last`): `einsum`. It runs on one
  core in 0.06-0.12 ms, level with a single-thread BLAS product with a column
  of ones and 2.5-4x faster than `x.sum(-1)` (a strided loop over a short
  axis). The BLAS product is 3x faster still with 2 idle threads, but its
  threads wait on each other when a core is busy: its MEAN time rose to
  0.5-1.8 ms (single calls of 6-8 ms) under load. A reduction must never
  cost that, so einsum it is.
- over the LEADING axes (`sum_leading`): a BLAS product of a row of ones with
  the rows. Fastest at 1 and 2 threads (0.03-0.11 ms against einsum's
  0.07-0.14 ms and `x.sum(0)`'s 0.09-0.2 ms), and its 2-thread tail under
  load stayed mild (mean within 1.5x of its median).

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
