"""The compression rate Rc(Z | U) against K subspaces, its gradients, and one exact step.

    Rc(Z | U) = sum_k 1/2 logdet(I_p + b (Z U_k)^T (Z U_k)),   b = p / (N eps^2),

Z (N, d) tokens as rows, U (K, d, p) one d x p basis per subspace (orthonormal
columns in theory; nothing here requires it). Note b uses p, not d: each
projected copy W_k = Z U_k lives in p dimensions. With W_k and
h_k = 1/2 logdet(I + b W_k^T W_k), the chain rule through W_k = Z U_k gives

    dh_k/dW_k = b W_k (I_p + b W_k^T W_k)^{-1} = b (I_N + b W_k W_k^T)^{-1} W_k
    dRc/dZ    = sum_k (dh_k/dW_k) U_k^T
    dRc/dU_k  = Z^T (dh_k/dW_k)        (summed over a batch).

``eps`` is the papers' epsilon; the official code's ``eps`` is epsilon squared
(see :mod:`whitebox.rate.coding`). Precision follows the one rule of
:mod:`whitebox.rate.gram`: never silently wrong (float64 where float32 cannot
hold the answer, or a clear refusal).
"""

from ..backend import get_array_module
from ..functional._checks import (check_accumulate, check_bases, check_rate_dout, check_real,
                                  check_tokens)
from .gram import gram_logdet_backward, gram_logdet_forward, rate_scale

WRT = ("Z", "U", "both")


def stack_bases(U):
    """U (K, d, p) -> U_cat (d, K p) = [U_1, ..., U_K], so Z U_cat = [Z U_1, ..., Z U_K]."""
    K, d, p = U.shape
    return U.transpose(1, 0, 2).reshape(d, K * p)      # (d, K p)


def project_heads(Z, U):
    """W_k = Z U_k for every k with one matrix product. Z (..., N, d) -> (..., K, N, p)."""
    xp = get_array_module(Z)
    K, d, p = U.shape
    W = Z @ stack_bases(U)                              # (..., N, K p)
    W = W.reshape(*Z.shape[:-1], K, p)                  # (..., N, K, p)
    # contiguous heads keep the batched Gram products on the BLAS path
    return xp.ascontiguousarray(xp.moveaxis(W, -2, -3))  # (..., K, N, p)


def compression_rate_forward(Z, U, eps, accumulate=None, side="auto"):
    """Rc = sum_k 1/2 logdet(I + p/(N eps^2) (Z U_k)^T (Z U_k)), with a cache.

    Inputs: Z (N, d) or (B, N, d); U (K, d, p); eps > 0; accumulate None,
    'float32' or 'float64' (the precision rule of :mod:`whitebox.rate.gram`:
    a float64 redo builds Z U_k afresh in float64); side 'auto', 'rows'
    (N x N Grams) or 'cols' (p x p Grams).
    Returns: Rc of shape Z.shape[:-2], in Z's dtype (accumulate None) or the
    accumulate dtype; cache.
    """
    check_tokens("Z", Z)
    check_bases(U, Z)
    eps = check_real("eps", eps, 0.0, low_open=True)
    acc = check_accumulate(accumulate)
    N = Z.shape[-2]
    p = U.shape[2]

    def heads(dtype):          # W_k = Z U_k, rebuilt from Z and U if float64 is needed
        return project_heads(Z.astype(dtype, copy=False), U.astype(dtype, copy=False))

    W = heads(acc or Z.dtype)                           # (..., K, N, p)
    h, gram_cache = gram_logdet_forward(W, rate_scale(p, N, eps), side, acc, source=heads,
                                        eps=eps)        # (..., K)
    return h.sum(axis=-1), (gram_cache, Z, U)


def compression_rate_backward(dout, cache):
    """dZ = sum_k G_k U_k^T and dU_k = sum over the batch of Z^T G_k, where
    G_k = dout * b (I + b W_k W_k^T)^{-1} W_k.

    Inputs: dout of shape Rc.shape (None: ones); cache.
    Returns: dZ (shape and dtype of Z), dU (shape and dtype of U).
    """
    gram_cache, Z, U = cache
    xp = get_array_module(Z)
    K, d, p = U.shape
    lead, N = Z.shape[:-2], Z.shape[-2]
    dout = check_rate_dout(dout, lead, xp)
    dh = None if dout is None else xp.broadcast_to(dout[..., None], (*lead, K))
    dW = gram_logdet_backward(dh, gram_cache)           # (..., K, N, p)
    dW = xp.moveaxis(dW, -3, -2).reshape(*lead, N, K * p)  # (..., N, K p)
    Uc = stack_bases(U).astype(dW.dtype, copy=False)    # (d, K p)
    dZ = dW @ Uc.T                                      # (..., N, d)
    dU = Z.astype(dW.dtype, copy=False).reshape(-1, d).T @ dW.reshape(-1, K * p)  # (d, K p)
    dU = dU.reshape(d, K, p).transpose(1, 0, 2)         # (K, d, p), summed over the batch
    return dZ.astype(Z.dtype, copy=False), dU.astype(U.dtype, copy=False)


def compression_rate(Z, U, eps, accumulate=None):
    """Rc(Z | U) = sum_k 1/2 logdet(I_p + p/(N eps^2) (Z U_k)^T (Z U_k)).

    Inputs: Z (N, d) or (B, N, d), tokens as rows; U (K, d, p); eps the papers'
    epsilon (official ``eps`` = epsilon squared); accumulate None, 'float32' or
    'float64' (see :mod:`whitebox.rate.gram`).
    Returns: a 0-d value for (N, d) input, shape (B,) for (B, N, d).
    """
    return compression_rate_forward(Z, U, eps, accumulate)[0]


def _select(grads, wrt):
    if wrt not in WRT:
        raise ValueError(f"wrt must be one of {WRT}, got {wrt!r}")
    dZ, dU = grads
    return {"Z": dZ, "U": dU, "both": (dZ, dU)}[wrt]


def compression_rate_grad(Z, U, eps, wrt="Z", dout=None, accumulate=None):
    """Gradient of sum(dout * Rc(Z | U)); dout of shape Z.shape[:-2], default ones.

    wrt='Z': dRc/dZ (same shape as Z; for a batch, each item's own gradient).
    wrt='U': dRc/dU of shape (K, d, p), summed over the batch.
    wrt='both': the tuple (dZ, dU).
    """
    _, cache = compression_rate_forward(Z, U, eps, accumulate)
    return _select(compression_rate_backward(dout, cache), wrt)


def compression_step(Z, U, eps, kappa, accumulate=None):
    """One exact gradient-descent step on the compression rate: Z - kappa dRc/dZ.

        Z+ = Z - kappa b sum_k Z U_k (I_p + b (Z U_k)^T (Z U_k))^{-1} U_k^T,  b = p/(N eps^2).

    This is what CRATE's multi-head subspace self-attention approximates (a
    Neumann series for the inverse, softmax for the token-token weights).
    Inputs: Z (N, d) or (B, N, d); U (K, d, p); eps > 0; kappa the step size.
    Returns: Z+ with Z's shape and dtype.
    """
    kappa = check_real("kappa", kappa)
    dZ = compression_rate_grad(Z, U, eps, wrt="Z", accumulate=accumulate)
    return Z - kappa * dZ
