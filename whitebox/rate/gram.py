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

Precision: never silently wrong, never a computable answer refused. Forming G
and factoring M in a precision with unit roundoff u is exact for a matrix
M + E with ||E|| of order u lambda_max(M), which moves each log lambda_i(M)
by about u lambda_max / lambda_i and M^{-1} by a relative u cond(M). What
matters is cond(M) = lambda_max / lambda_min, bounded from above in two
steps (:func:`factor`):

    kappa_1 = 1 + a min(max_i sum_j |G_ij|, tr G)   >= lambda_max (Gershgorin, trace);
                                                    lambda_min >= 1
    kappa_2 = kappa_1 * tr(M^{-1})                  tr(M^{-1}) = ||L^{-1}||_F^2 >= 1 / lambda_min
    kappa   = min(kappa_1, kappa_2)                 >= cond(M)

kappa_1 costs O(k^2) and decides almost every call; kappa_2, which sees that
every eigenvalue of M may lie far above 1 (full-rank features, large a), is
formed from the Cholesky factor only when kappa_1 alone would refuse. The
rule, the same for every rate function, the exact MSSA step
(whitebox.functional.mssa_exact) and ReduNet's operators (at kappa u <= 1e-3
the value is within 1e-4 and the gradient within 3e-4 relative; the
computed kappa_2 comes from a factor of M + E, so it is reliable while
kappa_2 u is well below 1, which the budget keeps it):

- a result is computed in a precision only when kappa u <= 1e-3 there
  (``ROUNDOFF_BUDGET``): in float32 kappa <= 8.4e3, in float64 kappa <= 4.5e12;
- ``accumulate=None`` (the default) works in X's dtype and, when float32
  cannot hold the answer, redoes the Gram matrix and factorization in float64
  (from the exact inputs) and returns the result in X's dtype: correct, at the
  price of a float64 Gram on those calls only;
- ``accumulate='float32'`` refuses (ValueError naming accumulate='float64')
  instead of promoting; ``accumulate='float64'`` always works in float64;
- when even float64 cannot hold it (eps tiny for rank-deficient features), a
  ValueError names eps and an eps that suffices for these features.

kappa is reduced over the whole batch on the host: one device-to-host
transfer per call (two when kappa_2 is needed).
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


def rate_scale(dim, N, eps, name="eps"):
    """a = dim / (N eps^2), refusing an eps so small that the scale overflows float64."""
    a = dim / N / eps / eps                 # not eps ** 2: that underflows to 0 first
    if not math.isfinite(a):
        smallest = math.sqrt(dim / N / np.finfo(np.float64).max)
        raise ValueError(f"{name} = {eps!r} is too small: the scale {dim}/(N {name}^2) "
                         f"overflows float64; {name} must be at least {smallest:.3g} (and "
                         f"larger still for features that are not tiny)")
    return a


def _gram(X, side):
    xp = get_array_module(X)
    # a contiguous transpose keeps the batched product on the BLAS path
    Xt = xp.ascontiguousarray(X.swapaxes(-1, -2))       # (..., m, n)
    return X @ Xt if side == "rows" else Xt @ X         # (..., n, n) or (..., m, m)


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


def _host_max(v):
    """The largest entry of an array as a Python float (NaN if any is NaN, 1 if empty)."""
    xp = get_array_module(v)
    return float(xp.max(v)) if v.size else 1.0              # the host transfer


def _bounded_factor(X, a, side, check):
    """M = I + a G and its Cholesky factor L in X's dtype, with kappa >= cond(M) and kappa_1.

    L is None when kappa exceeds X's dtype's limit (or M cannot be factored
    there); check=False factors without any bound (and without a host read).
    """
    xp = get_array_module(X)
    G = _gram(X, side)                                      # (..., k, k)
    M = _identity_plus(G, a)
    if not check or G.size == 0:
        return M, _cholesky(M), None, None
    # lambda_max(G) <= both the largest absolute row sum and the trace
    rows = xp.abs(G).sum(axis=-1).max(axis=-1)              # (...,)
    trace = xp.diagonal(G, axis1=-2, axis2=-1).sum(axis=-1)  # (...,)
    kappa_1 = 1 + a * xp.minimum(rows, trace)               # >= lambda_max(M) / 1
    k1 = _host_max(kappa_1)
    limit = condition_limit(X.dtype)
    if k1 <= limit:
        return M, _cholesky(M), k1, k1
    if not math.isfinite(k1):                               # NaN or inf features
        return M, None, k1, k1
    try:
        L = xp.linalg.cholesky(M)
    except np.linalg.LinAlgError:
        return M, None, math.inf, k1
    L_inv = xp.linalg.inv(L)                                # (..., k, k)
    tr_inv = (L_inv * L_inv).sum(axis=(-2, -1))             # tr(M^{-1}) >= 1 / lambda_min
    kappa = _host_max(kappa_1 * xp.minimum(tr_inv, 1))
    kappa = kappa if kappa == kappa else math.inf           # NaN: a factor that failed on a device
    return M, (L if kappa <= limit else None), kappa, k1


def _too_ill_conditioned(kappa, kappa_1, a, dtype, eps):
    """The refusal when even float64 cannot hold the answer."""
    limit = condition_limit(dtype)
    if math.isnan(kappa_1):
        return ValueError("the Gram matrix of the features is not finite: the features "
                          "contain NaN or infinite values")
    what = (f"eps = {eps!r} is too small for these features" if eps is not None
            else f"the scale a = {a:.4g} is too large for these features")
    if eps is not None and kappa_1 > 1 and math.isfinite(kappa_1):
        # kappa_1 - 1 is proportional to a ~ 1/eps^2: the eps that brings kappa_1 to the limit
        fix = f"use eps >= {eps * math.sqrt((kappa_1 - 1) / (limit - 1)):.4g} (which suffices)"
    else:
        fix = "use a larger eps"
    name = np.dtype(dtype).name
    size = (f"cannot be factored in {name} (its condition number is past 1/u)"
            if math.isinf(kappa) else f"has a condition number up to {kappa:.3g}, above "
            f"{limit:.3g}, the most {name} holds to 0.1%")
    return ValueError(f"{what}: I + a Z^T Z {size}; {fix}, or scale the features down "
                      f"(for example to unit rows)")


def factor(X, a, side="auto", accumulate=None, source=None, eps=None, check=True):
    """The Cholesky factor of M = I + a G (G the smaller Gram of X) in a precision that holds it.

    Inputs: X (..., n, m) floating; a >= 0 finite; side 'auto', 'rows' (G = X X^T)
    or 'cols' (G = X^T X); accumulate None (X's dtype, promoted to float64 when
    float32 cannot hold the answer), 'float32' (refuse instead of promoting) or
    'float64'; source an optional function dtype -> X that rebuilds X from
    exact inputs in a wider dtype (default: X cast); eps, only to name it in a
    refusal; check=False skips the bound and its host read (the caller has
    chosen a precision that suffices).
    Returns: X in the working dtype, M (..., k, k), L (..., k, k) lower
    triangular with L L^T = M, side ('rows' or 'cols'). Raises ValueError when
    no precision holds the answer (see the module docstring).
    """
    n, m = X.shape[-2:]
    side = gram_side(n, m, side)
    if not 0 <= a < math.inf:
        raise ValueError(f"a must be a non-negative finite scale, got {a!r}: with a < 0, "
                         f"I + a X^T X need not be positive definite")
    work = np.promote_types(np.dtype(accumulate or X.dtype), np.float32)  # LAPACK: >= float32
    rebuild = source or (lambda dtype, X=X: X.astype(dtype))
    X = X.astype(work, copy=False)
    M, L, kappa, kappa_1 = _bounded_factor(X, a, side, check)
    if L is None and work == np.float32:
        if accumulate is not None:
            raise ValueError(
                f"float32 cannot hold this log-determinant to 0.1%: the condition number of "
                f"I + a Z^T Z may be as large as {kappa:.3g} (an upper bound), above "
                f"{condition_limit(work):.3g}; pass accumulate='float64' (or accumulate=None "
                f"to promote when needed)")
        X = rebuild(np.dtype(np.float64))
        M, L, kappa, kappa_1 = _bounded_factor(X, a, side, check)
    if L is None:
        raise _too_ill_conditioned(kappa, kappa_1, a, X.dtype, eps)
    return X, M, L, side


def spd_inverse(L):
    """M^{-1} = L^{-T} L^{-1} from the Cholesky factor L (..., k, k) of M."""
    xp = get_array_module(L)
    L_inv = xp.linalg.inv(L)                                # triangular, diagonal in (0, 1]
    return L_inv.swapaxes(-1, -2) @ L_inv                   # (..., k, k)


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
    cache for :func:`gram_logdet_backward`. The Cholesky factor comes from
    :func:`factor`, which chooses the precision; h = sum log diag L.
    """
    out_dtype = np.dtype(accumulate or X.dtype)
    X, M, L, side = factor(X, a, side, accumulate, source, eps)
    xp = get_array_module(X)
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
