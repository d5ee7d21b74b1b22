"""The exact compression step that MSSA approximates, per head, through N x N inverses.

For one head with projected tokens W = Z U_k (N, p) the compression term is
h(W) = 1/2 logdet(I_N + s W W^T), and its gradient (the push-through form of
whitebox.rate.gram) is

    dh/dW = s (I_N + s W W^T)^{-1} W = s M^{-1} W,        M = I_N + s W W^T.

MSSA replaces M^{-1} by I - s W W^T (Neumann) and then the token-token matrix
by a softmax. This op keeps M^{-1}: it returns the head output

    H = M^{-1} W        (N, p),

so that  `-kappa dRc/dZ = -kappa s [H_1 .. H_K] [U_1 .. U_K]^T`  (whitebox.functional.mssa
adds the sign, the gain and the output projection). M^{-1} plays the role the
attention matrix plays in MSSA, and is returned for figures.

Numerics. M is symmetric with every eigenvalue >= 1, so its Cholesky factor
L exists and M^{-1} = L^{-T} L^{-1} (L^{-1} triangular, diagonal <= 1). Its
condition number is at most 1 + s ||W||_F^2. In float32 a condition number
past FLOAT32_LIMIT would cost more than about 1e-4 relative accuracy, so
float32 heads whose bound exceeds it are factored in float64 and cast back
(the float64 fallback; ``cache["fallback"]`` says when it happened). Where
even float64 cannot factor M (infinite or NaN entries) the op raises a
RuntimeError that says so; it never returns a silently wrong number.
On a GPU, reading the bound back would stall every step (see
whitebox.backend), so there float32 heads are always factored in float64,
and the finiteness check runs only with device checks switched on (a
failure otherwise shows as NaN in the loss, never as a plausible number).

Backward (dH given). With Q = M^{-1} dH, the gradient reaching M is
-Q H^T, and M = I + s W W^T sends it back to W symmetrised:

    dW = Q - s (Q H^T + H Q^T) W = Q - s (Q (H^T W) + H (Q^T W)).

The second term is the second derivative of logdet: it is what differentiating
the gradient dh/dW = s M^{-1} W once more gives.
"""
import numpy as np

from ..backend import checks_values, get_array_module

FLOAT32_LIMIT = 1e3   # condition bound past which float32 heads are factored in float64


def _inverse_spd(M):
    """M^{-1} of a stack of SPD matrices through their Cholesky factors (clear error if not SPD)."""
    xp = get_array_module(M)
    try:
        L = xp.linalg.cholesky(M)                          # (..., N, N) lower triangular
    except np.linalg.LinAlgError as err:                   # CuPy raises it too
        raise RuntimeError(
            f"exact MSSA step: I + s W_k W_k^T is not positive definite in {M.dtype} "
            "(its entries are too large or not finite); lower the scale (a larger eps), "
            "normalise the tokens, or run the model in float64") from err
    L_inv = xp.linalg.inv(L)                               # triangular, diagonal in (0, 1]
    return L_inv.swapaxes(-1, -2) @ L_inv                  # (..., N, N) = L^{-T} L^{-1}


def exact_heads_forward(w, s):
    """H_k = (I_N + s w_k w_k^T)^{-1} w_k for every batch item and head.

    Inputs: w (B, K, N, p) the projected tokens; s > 0 the rate's scale.
    Returns: H (B, K, N, p) in w's dtype, cache (M_inv (B, K, N, N) is cache["attn"]).
    """
    xp = get_array_module(w)
    N = w.shape[-2]
    wt = w.swapaxes(-1, -2)                                 # (B, K, p, N)
    fallback = False
    if w.dtype == np.float32:
        if checks_values(w):
            # cond(M) <= 1 + s ||w_k||_F^2: decide once per call whether float32 suffices
            bound = 1.0 + s * float((w * w).sum(axis=(-2, -1)).max())
            fallback = not bound < FLOAT32_LIMIT            # also true for inf / NaN
        else:
            fallback = True                                 # on a device: no read-back
    work = w.astype(np.float64) if fallback else w
    M = work @ (wt.astype(np.float64) if fallback else wt)  # (B, K, N, N) Gram
    M *= s
    idx = xp.arange(N)
    M[..., idx, idx] += 1                                   # I + s W W^T
    M_inv = _inverse_spd(M)
    H = M_inv @ work                                        # (B, K, N, p)
    # CuPy leaves NaN behind instead of raising, and infinite tokens pass a
    # factorisation: one reduction over the result says whether either happened
    if checks_values(H) and not bool(xp.isfinite(H).all()):
        raise RuntimeError(
            f"exact MSSA step: the factorisation of I + s W_k W_k^T failed in {M.dtype} "
            "(non-finite result: the tokens are too large or not finite); lower the scale "
            "(a larger eps), normalise the tokens, or run the model in float64")
    H = H.astype(w.dtype, copy=False)
    M_inv = M_inv.astype(w.dtype, copy=False)
    return H, {"w": w, "H": H, "attn": M_inv, "scale": s, "fallback": fallback}


def exact_heads_backward(dH, cache):
    """dw = Q - s (Q (H^T w) + H (Q^T w)),  Q = M^{-1} dH.

    Inputs: dH (B, K, N, p); cache from exact_heads_forward. Returns: dw (B, K, N, p).
    """
    w, H, M_inv, s = cache["w"], cache["H"], cache["attn"], cache["scale"]
    Q = M_inv @ dH                                          # (B, K, N, p)
    HtW = H.swapaxes(-1, -2) @ w                            # (B, K, p, p)
    QtW = Q.swapaxes(-1, -2) @ w                            # (B, K, p, p)
    dw = Q @ HtW                                            # (B, K, N, p)
    dw += H @ QtW
    dw *= -s
    dw += Q
    return dw
