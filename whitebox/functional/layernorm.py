"""Layer normalisation over the last axis, as torch.nn.LayerNorm computes it.

Two versions of the same math live here:

- `layernorm_reference_forward` / `layernorm_reference_backward`: the
  READABLE REFERENCE, one named step per line, as the equations read. It is
  what the tests hold the fast path to.
- `layernorm_forward` / `layernorm_backward`: the FAST PATH the library runs.
  Where Numba is installed it runs the fused row loops of
  whitebox.functional.fused: one loop per direction that reads each input
  once and writes each output once. Otherwise the same
  equations arranged for NumPy: every row reduction is one `einsum` that
  reads its operands once and writes no temporary, the per-row and
  per-column scalings that can share a pass do (a three-operand `einsum`),
  and the backward folds 1/sigma into its first product: about 9 passes
  instead of the reference's 16.
"""
from . import fused
from ._blas import sum_leading
from ._checks import check_array, check_dout, check_features, check_shape


def _check_layernorm_args(x, gamma, beta):
    check_array("gamma", gamma, ndim=1), check_shape("layernorm: beta", beta, gamma.shape)
    check_features("layernorm", "x", x, gamma.shape[0], "gamma, the normalized shape")
    return check_array("x", x, ndim_min=1)


# ---------------------------------------------------------------- reference

def layernorm_reference_forward(x, gamma, beta, eps=1e-5):
    """y = (x - mean) / sqrt(var + eps) * gamma + beta, biased variance (readable reference).

    Inputs: x (..., d); gamma, beta (d,).
    Returns: y (..., d), cache.
    """
    xp = _check_layernorm_args(x, gamma, beta)
    mean = x.mean(axis=-1, keepdims=True)                # (..., 1)
    xc = x - mean                                        # (..., d) centred
    var = (xc ** 2).mean(axis=-1, keepdims=True)         # (..., 1) biased, as PyTorch
    rstd = 1.0 / xp.sqrt(var + eps)                      # (..., 1) 1 / sigma
    xhat = xc * rstd                                     # (..., d) normalised
    y = xhat * gamma + beta                              # (..., d)
    return y, (xhat, rstd, gamma)


def layernorm_reference_backward(dout, cache):
    """g = dout * gamma;  dx = (g - mean(g) - xhat * mean(g * xhat)) / sigma.

    dgamma = sum dout * xhat;  dbeta = sum dout (over all leading axes).
    Returns: dx (..., d), dgamma (d,), dbeta (d,).
    """
    xhat, rstd, gamma = cache
    check_dout("layernorm", dout, xhat.shape)
    lead = tuple(range(dout.ndim - 1))
    dbeta = dout.sum(axis=lead)                          # (d,)
    dgamma = (dout * xhat).sum(axis=lead)                # (d,)
    g = dout * gamma                                     # (..., d) gradient of xhat
    g_mean = g.mean(axis=-1, keepdims=True)              # (..., 1)
    gx_mean = (g * xhat).mean(axis=-1, keepdims=True)    # (..., 1)
    dx = (g - g_mean - xhat * gx_mean) * rstd            # (..., d)
    return dx, dgamma, dbeta


# ---------------------------------------------------------------- fast path

def layernorm_forward(x, gamma, beta, eps=1e-5):
    """y = (x - mean) / sqrt(var + eps) * gamma + beta, biased variance (fast path).

    Inputs: x (..., d); gamma, beta (d,).
    Returns: y (..., d), cache.
    """
    xp = _check_layernorm_args(x, gamma, beta)
    d = x.shape[-1]
    x2 = x.reshape(-1, d)                                # (n, d) rows
    if fused.usable(x2, gamma, beta):                    # one compiled pass (fused.py)
        y, xhat, rstd = xp.empty_like(x2), xp.empty_like(x2), xp.empty(len(x2), x.dtype)
        fused.layernorm_rows_forward(x2, gamma, beta, eps, y, xhat, rstd)
        return y.reshape(x.shape), (xhat.reshape(x.shape), rstd, gamma)
    mean = xp.einsum("nd->n", x2)                        # (n,) sums, one read
    mean *= 1.0 / d
    xhat = x2 - mean[:, None]                            # (n, d) centred; becomes xhat
    var = xp.einsum("nd,nd->n", xhat, xhat)              # (n,) sum of squares, no temporary
    var *= 1.0 / d
    var += eps
    rstd = 1.0 / xp.sqrt(var)                            # (n,)
    xhat *= rstd[:, None]                                # in place: centred -> normalised
    y = xp.einsum("nd,d->nd", xhat, gamma)               # (n, d)
    y += beta
    return y.reshape(x.shape), (xhat.reshape(x.shape), rstd, gamma)


def layernorm_backward(dout, cache):
    """dx = (g - mean(g) - xhat * mean(g * xhat)) / sigma with g = dout * gamma (fast path).

    dgamma = sum dout * xhat;  dbeta = sum dout (over all leading axes).
    Returns: dx (..., d), dgamma (d,), dbeta (d,).
    """
    xhat, rstd, gamma = cache                            # xhat (..., d), rstd (n,)
    check_dout("layernorm", dout, xhat.shape)
    xp = check_array("dout", dout)
    d = xhat.shape[-1]
    dout2 = dout.reshape(-1, d)                          # (n, d) rows
    xhat = xhat.reshape(-1, d)                           # (n, d)
    if fused.usable(dout2, xhat, rstd, gamma):           # one compiled pass (fused.py)
        dx, dgamma, dbeta = xp.empty_like(dout2), xp.empty_like(gamma), xp.empty_like(gamma)
        fused.layernorm_rows_backward(dout2, xhat, rstd, gamma, dx, dgamma, dbeta)
        return dx.reshape(dout.shape), dgamma, dbeta
    # in NumPy calls: h = g / sigma (one three-operand pass), then
    # dx = h - mean(h) - xhat * mean(h * xhat), the same thing with one pass fewer
    dbeta = sum_leading(dout2)                           # (d,)
    dgamma = xp.einsum("nd,nd->d", dout2, xhat)          # (d,)
    h = xp.einsum("nd,d,n->nd", dout2, gamma, rstd)      # (n, d) g / sigma
    h_mean = xp.einsum("nd->n", h)                       # (n,)
    h_mean *= 1.0 / d
    hx_mean = xp.einsum("nd,nd->n", h, xhat)             # (n,)
    hx_mean *= 1.0 / d
    h -= xp.einsum("nd,n->nd", xhat, hx_mean)
    h -= h_mean[:, None]                                 # in place: h becomes dx
    return h.reshape(dout.shape), dgamma, dbeta
