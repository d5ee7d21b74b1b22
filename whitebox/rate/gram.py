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

Precision: never silently wrong. Every eigenvalue of M is >= 1, so its
condition number is at most its largest eigenvalue, and Gershgorin's theorem
bounds that by the largest absolute row sum:

    cond(M) <= kappa = 1 + a max_i sum_j |G_ij|          (cheap: O(k^2) on G).

Rounding G and M in a precision with unit roundoff u perturbs each eigenvalue
of M by about u ||M||, so the log-determinant and the gradient carry a
relative error of order kappa u (measured: at kappa u <= 1e-3 the value is
within 1e-4 and the gradient within 3e-4 relative). The rule, the same for
every rate function and gradient built on this one:

- a result is computed in a precision only when kappa u <= 1e-3 there
  (``ROUNDOFF_BUDGET``): in float32 that means kappa <= 8.4e3, in float64
  kappa <= 4.5e12;
- ``accumulate=None`` (the default) works in X's dtype and, when float32
  cannot hold the answer, redoes the Gram matrix and factorization in float64
  (from the exact inputs) and returns the result in X's dtype: correct, at the
  price of a float64 Gram on those calls only;
- ``accumulate='float32'`` refuses (ValueError naming accumulate='float64')
  instead of promoting; ``accumulate='float64'`` always works in float64;
- when even float64 cannot hold it (eps tiny for features this large), a
  ValueError names eps and the smallest usable eps for these features.

kappa is reduced over the whole batch on the host: one device-to-host
transfer per call (the rate functions are measurements and objectives, not
the CRATE layers' per-step path).
"""
import math

import numpy as np

from ..backend import get_array_module

SIDES = ("auto", "rows", "cols")
ROUNDOFF_BUDGET = 1e-3      # largest accepted (condition bound) x (unit roundoff)


def gram_side(n, m, side="auto"):
    """'rows' (factor the n x n Gram X X^T) or 'cols' (the m x m Gram X^T X)."""
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}, got {side!r}")
    if side == "auto":
        return "rows" if n <= m else "cols"
    return side


def condition_limit(dtype):
    """The largest condition bound kappa a dtype is trusted with: ROUNDOFF_BUDGET / u."""
    return ROUNDOFF_BUDGET / float(np.finfo(dtype).eps)


def _gram(X, side):
    xp = get_array_module(X)
    # a contiguous transpose keeps the batched product on the BLAS path
    Xt = xp.ascontiguousarray(X.swapaxes(-1, -2))       # (..., m, n)
    return X @ Xt if side == "rows" else Xt @ X         # (..., n, n) or (..., m, m)


def _row_sum_bound(G):
    """max over the stack of max_i sum_j |G_ij| (>= the largest eigenvalue of each G)."""
    xp = get_array_module(G)
    if G.size == 0:
        return 0.0
    return float(xp.abs(G).sum(axis=-1).max())         # the one host transfer


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


def _too_ill_conditioned(kappa, a, dtype, eps):
    """The refusal when even float64 cannot hold the answer."""
    limit = condition_limit(dtype)
    if math.isnan(kappa):
        return ValueError("the Gram matrix of the features is not finite: the features "
                          "contain NaN or infinite values")
    what = (f"eps = {eps!r} is too small for these features" if eps is not None
            else f"the scale a = {a:.4g} is too large for these features")
    if eps is not None and kappa > 1 and math.isfinite(kappa):
        # kappa - 1 = a * rowsum and a ~ 1/eps^2: the eps that brings kappa to the limit
        fix = f"use eps >= {eps * math.sqrt((kappa - 1) / (limit - 1)):.4g}"
    else:
        fix = "use a larger eps"
    return ValueError(f"{what}: the condition bound of I + a Z^T Z is {kappa:.3g}, above "
                      f"{limit:.3g}, the most {np.dtype(dtype).name} holds to 0.1%; {fix}, "
                      f"or scale the features down (for example to unit rows)")


def gram_logdet_forward(X, a, side="auto", accumulate=None, source=None, eps=None):
    """h = 1/2 logdet(I + a X^T X) for a stack of matrices, factoring the smaller Gram.

    Inputs: X (..., n, m) floating; a a positive float; side 'auto' (the smaller
    Gram), 'rows' (force the n x n Gram X X^T) or 'cols' (force X^T X);
    accumulate None (X's dtype, promoted to float64 when float32 cannot hold
    the answer), 'float32' (refuse instead of promoting) or 'float64' (see the
    module docstring); source an optional function dtype -> X that rebuilds X
    from exact inputs in a wider dtype (default: X cast); eps, only to name it
    in a refusal.
    Returns: h (...,) in X's dtype (accumulate None) or the accumulate dtype;
    cache for :func:`gram_logdet_backward`.
    """
    n, m = X.shape[-2:]
    side = gram_side(n, m, side)
    if not 0 <= a < math.inf:
        raise ValueError(f"a must be a non-negative finite scale, got {a!r}: with a < 0, "
                         f"I + a X^T X need not be positive definite")
    out_dtype = np.dtype(accumulate or X.dtype)
    work = np.promote_types(out_dtype, np.float32)      # LAPACK has nothing narrower
    rebuild = source or (lambda dtype, X=X: X.astype(dtype))
    X = X.astype(work, copy=False)
    G = _gram(X, side)
    kappa = 1 + a * _row_sum_bound(G)
    if not kappa <= condition_limit(work) and work == np.float32:
        if accumulate is not None:
            raise ValueError(
                f"float32 cannot hold this log-determinant to 0.1%: the condition bound "
                f"of I + a Z^T Z is {kappa:.3g}, above {condition_limit(work):.3g}; pass "
                f"accumulate='float64' (or accumulate=None to promote when needed)")
        work = np.dtype(np.float64)
        X = rebuild(work)
        G = _gram(X, side)
        kappa = 1 + a * _row_sum_bound(G)
    if not kappa <= condition_limit(work):
        raise _too_ill_conditioned(kappa, a, work, eps)
    xp = get_array_module(X)
    M = _identity_plus(G, a)
    L = _cholesky(M)
    h = xp.log(xp.diagonal(L, axis1=-2, axis2=-1)).sum(axis=-1)   # (...,)
    return h.astype(out_dtype, copy=False), (X, a, M, side, out_dtype)


def gram_logdet_backward(dout, cache):
    """dX = dout * a X (I_m + a X^T X)^{-1} = dout * a (I_n + a X X^T)^{-1} X.

    Inputs: dout (...,) the upstream gradient of h (or None for ones); cache.
    Returns: dX (..., n, m) in the dtype of the forward's h.
    """
    X, a, M, side, out_dtype = cache
    xp = get_array_module(X)
    M_inv = xp.linalg.inv(M)                  # (..., k, k), symmetric like M
    dX = M_inv @ X if side == "rows" else X @ M_inv                 # (..., n, m)
    dX *= a
    if dout is not None:
        dX *= dout[..., None, None]
    return dX.astype(out_dtype, copy=False)
