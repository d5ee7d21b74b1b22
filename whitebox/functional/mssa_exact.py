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
L exists and M^{-1} = L^{-T} L^{-1}. The precision is chosen by the one rule
of whitebox.rate.gram (a bound on cond(M) against the dtype's roundoff):
float32 heads that float32 cannot hold are factored in float64 and cast back
(``cache["fallback"]`` says when), and what even float64 cannot hold raises a
RuntimeError; it never returns a silently wrong number. On a GPU, reading the
bound back would stall every step (see whitebox.backend), so there float32
heads are always factored in float64 without the bound, and the finiteness
check runs only with device checks switched on (a failure otherwise shows as
NaN in the loss, never as a plausible number).

Backward (dH given). With Q = M^{-1} dH, the gradient reaching M is
-Q H^T, and M = I + s W W^T sends it back to W symmetrised:

    dW = Q - s (Q H^T + H Q^T) W = Q - s (Q (H^T W) + H (Q^T W)).

The second term is the second derivative of logdet: it is what differentiating
the gradient dh/dW = s M^{-1} W once more gives.
"""
from ..backend import checks_values, get_array_module
from ..rate.gram import factor, spd_inverse


def exact_heads_forward(w, s):
    """H_k = (I_N + s w_k w_k^T)^{-1} w_k for every batch item and head.

    Inputs: w (B, K, N, p) the projected tokens; s > 0 the rate's scale.
    Returns: H (B, K, N, p) in w's dtype, cache (M_inv (B, K, N, N) is cache["attn"]).
    """
    xp = get_array_module(w)
    check = checks_values(w)                            # on a device: float64, no read-back
    try:
        work, _, L, _ = factor(w, s, "rows", None if check else "float64", check=check)
    except (ValueError, RuntimeError) as err:
        raise RuntimeError(f"exact MSSA step: the factorisation of I + s W_k W_k^T failed "
                           f"({err}); lower the scale (a larger eps), normalise the tokens, "
                           f"or run the model in float64") from err
    M_inv = spd_inverse(L)                              # (B, K, N, N)
    H = M_inv @ work                                    # (B, K, N, p)
    # CuPy leaves NaN behind instead of raising: one reduction over the result says so
    if checks_values(H) and not bool(xp.isfinite(H).all()):
        raise RuntimeError(
            f"exact MSSA step: the factorisation of I + s W_k W_k^T failed in {M_inv.dtype} "
            "(non-finite result: the tokens are too large or not finite); lower the scale "
            "(a larger eps), normalise the tokens, or run the model in float64")
    fallback = work.dtype != w.dtype
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
