"""The one computation under every rate: half the log-determinant of I + a X^T X.

    h(X) = 1/2 logdet(I_m + a X^T X) = 1/2 logdet(I_n + a X X^T),   X (n, m), a > 0.

The two sides agree (Sylvester's determinant identity), so we factor the
smaller Gram matrix: n x n when there are fewer rows than columns, m x m
otherwise. M = I + a G is symmetric with every eigenvalue >= 1, so its
Cholesky factor L exists and logdet M = 2 sum log diag L: no determinant is
ever formed (det of a 384 x 384 matrix overflows float32 easily).

Gradient. dh = a tr(M^{-1} X^T dX) on the m-side, so

    dh/dX = a X (I_m + a X^T X)^{-1} = a (I_n + a X X^T)^{-1} X,

the second form by the push-through identity X (I + a X^T X) = (I + a X X^T) X.
The backward applies the inverse of the same small matrix the forward
factored (the inverse is computed afresh; the Cholesky factor is not reused).
Forming that k x k inverse, k = min(n, m), is as accurate as a solve in
practice (every eigenvalue of M is >= 1, so M is well conditioned) and about
as fast, and it keeps one code path for NumPy and CuPy.
"""
import numpy as np

from ..backend import get_array_module

SIDES = ("auto", "rows", "cols")


def gram_side(n, m, side="auto"):
    """'rows' (factor the n x n Gram X X^T) or 'cols' (the m x m Gram X^T X)."""
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}, got {side!r}")
    if side == "auto":
        return "rows" if n <= m else "cols"
    return side


def _identity_plus(G, a):
    """M = I + a G for a stack of square matrices G (..., k, k)."""
    xp = get_array_module(G)
    M = a * G
    k = G.shape[-1]
    idx = xp.arange(k)
    M[..., idx, idx] += 1
    return M


def _cholesky(M):
    """Batched Cholesky with a clear error when a matrix is not positive definite."""
    xp = get_array_module(M)
    try:
        L = xp.linalg.cholesky(M)
    except np.linalg.LinAlgError as err:  # CuPy raises NumPy's LinAlgError too
        raise RuntimeError(
            "Cholesky factorization of I + a Z^T Z failed: the matrix is not positive "
            "definite, which happens only when the features are enormous or a is "
            "negative. Normalise the features (for example to unit rows).") from err
    return L


def gram_logdet_forward(X, a, side="auto"):
    """h = 1/2 logdet(I + a X^T X) for a stack of matrices, factoring the smaller Gram.

    Inputs: X (..., n, m) floating; a a positive float; side 'auto' (the smaller
    Gram), 'rows' (force the n x n Gram X X^T) or 'cols' (force X^T X).
    Returns: h (...,) in X's dtype, cache for :func:`gram_logdet_backward`.
    """
    n, m = X.shape[-2:]
    side = gram_side(n, m, side)
    xp = get_array_module(X)
    # a contiguous transpose keeps the batched product on the BLAS path
    Xt = xp.ascontiguousarray(X.swapaxes(-1, -2))       # (..., m, n)
    G = X @ Xt if side == "rows" else Xt @ X            # (..., n, n) or (..., m, m)
    M = _identity_plus(G, a)
    L = _cholesky(M)
    h = xp.log(xp.diagonal(L, axis1=-2, axis2=-1)).sum(axis=-1)   # (...,)
    # CuPy does not raise on a failed factorization: it leaves NaNs behind.
    if not bool(xp.all(xp.isfinite(h))):
        raise RuntimeError("log-determinant of I + a Z^T Z is not finite: the matrix is "
                           "not positive definite in this precision. Normalise the features "
                           "or pass accumulate='float64'.")
    return h, (X, a, M, side)


def gram_logdet_backward(dout, cache):
    """dX = dout * a X (I_m + a X^T X)^{-1} = dout * a (I_n + a X X^T)^{-1} X.

    Inputs: dout (...,) the upstream gradient of h (or None for ones); cache.
    Returns: dX (..., n, m).
    """
    X, a, M, side = cache
    xp = get_array_module(X)
    M_inv = xp.linalg.inv(M)                  # (..., k, k), symmetric like M
    dX = M_inv @ X if side == "rows" else X @ M_inv                 # (..., n, m)
    dX *= a
    if dout is not None:
        dX *= dout[..., None, None]
    return dX
