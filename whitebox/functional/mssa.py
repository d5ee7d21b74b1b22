"""Multi-head subspace self-attention (MSSA), as the official CRATE computes it.

Derivation (Yu et al., "White-Box Transformers via Sparse Rate Reduction",
2023, section 2.3): a gradient step on the compression
term Rc(Z | U) with the Gram weighting replaced by a softmax gives, per head,
SSA_k(Z) = softmax((Z U_k)(Z U_k)^T) (Z U_k). In code the K subspaces U_k
are the row blocks of one bias-free projection W_qkv (K p x d), and the same
projection w = x W_qkv^T serves as query, key and value:

    w_k = x U_k            (B, N, p)   U_k^T = W_qkv[k p:(k+1) p]
    S_k = s w_k w_k^T      (B, N, N)   s = p^{-1/2}
    A_k = softmax(S_k)     rows sum to one (optional causal mask)
    O_k = A_k w_k          (B, N, p)
    y   = [O_1 .. O_K] W_out^T + b_out

Because q = k = v = w, the backward through S has a symmetric term: S is
quadratic in w, so dw collects s (dS + dS^T) w as well as A^T dO.

The same pair computes the theory-faithful variants (keyword arguments; the
defaults are the official computation above, unchanged):

    step="exact"   O_k = -(I_N + s w_k w_k^T)^{-1} w_k     (whitebox.functional.mssa_exact)
                   instead of A_k w_k: the exact gradient of the compression
                   rate, through K N x N inverses per item;
    tied=True      the output projection is the subspaces themselves,
                   [O_1 .. O_K] [U_1 .. U_K]^T = O W_qkv  (no W_out, no bias);
    gain c, shrink r   y = c [O_1 .. O_K] W_out^T + b_out - r x.

With s = b = p/(N eps^2), c = kappa b, tied and step="exact", y is exactly
-kappa dRc(x | U)/dx, so x + y is one gradient step on the compression rate
(whitebox.rate.compression_step). With the softmax, c = r = kappa b gives the
paper's (1 - kappa b) x + kappa b [SSA_k] U^T.
"""
import numpy as np

from ..backend import get_array_module
from . import fused
from ._blas import matmul_rows, sum_last, sum_last_product, sum_leading
from ._checks import check_array, check_dout
from .dropout import dropout_backward, dropout_forward
from .mssa_exact import exact_heads_backward, exact_heads_forward

STEPS = ("softmax", "exact")


def _split_heads(w, K):
    """(B, N, K p) -> (B, K, N, p) as a VIEW, no copy: batched products read its
    strided (N, p) blocks as fast as contiguous ones."""
    B, N, Kp = w.shape
    return w.reshape(B, N, K, Kp // K).transpose(0, 2, 1, 3)


def _heads_buffer(w):
    """An empty array shaped like w (B, K, N, p) but laid out as (B, N, K, p) in
    memory, for a product to write into: merging its heads afterwards is free."""
    B, K, N, p = w.shape
    return get_array_module(w).empty((B, N, K, p), dtype=w.dtype).transpose(0, 2, 1, 3)


def _scaled_transpose(w, s):
    """s w^T per head, (B, K, p, N), as its own contiguous array (one pass over w).

    A batched product with a transposed VIEW runs at about half the speed of
    one with contiguous operands (NumPy, OpenBLAS), more than this copy costs;
    and carrying s here spares a pass over the N x N scores in the forward
    (S = w (s w^T)) and in the backward (dA comes out already times s).
    """
    xp = get_array_module(w)
    B, K, N, p = w.shape
    out = xp.empty((B, K, p, N), dtype=w.dtype)
    return xp.multiply(w.transpose(0, 1, 3, 2), w.dtype.type(s), out=out)


def _merge_heads(o):
    B, K, N, p = o.shape
    return o.transpose(0, 2, 1, 3).reshape(B, N, K * p)   # (B, N, K p)


def mssa_forward(x, W_qkv, W_out, b_out, heads, scale=None, causal=False,
                 dropout=0.0, rng=None, training=True, step="softmax", tied=False,
                 gain=1.0, shrink=0.0, softmax=True):
    """y = [softmax(s w_k w_k^T) w_k]_k W_out^T + b_out,  w = x W_qkv^T.

    Inputs: x (B, N, d); W_qkv (K p, d); W_out (d, K p) or None for no output
    projection (the official code drops it when K = 1 and p = d); b_out (d,)
    or None; heads K; scale s (default p^{-1/2}); causal: mask keys after
    the query; dropout p on the attention and after the output projection
    (masks drawn from ``rng``, a numpy Generator, only when training).
    Variants (module docstring): step "softmax" or "exact" (no causal mask,
    no attention dropout: the exact step has no attention map to drop);
    tied (W_out must be None); gain c and shrink r; softmax=False uses
    A_k = S_k itself (the official CRATE-MAE decoder's ``use_softmax=False``:
    the Gram weighting of the derivation, unnormalised).
    Returns: y (B, N, d), cache. The attention maps are cache["attn"]
    (for the exact step, the N x N inverses (I + s w_k w_k^T)^{-1}).
    """
    xp = check_array("x", x, ndim=3)
    if not isinstance(heads, (int, np.integer)) or heads <= 0:
        raise ValueError(f"heads must be a positive integer, got {heads!r}")
    Kp, d = W_qkv.shape
    if x.shape[-1] != d:
        raise ValueError(f"mssa: x has {x.shape[-1]} features (shape {tuple(x.shape)}), "
                         f"expected {d} to match W_qkv of shape {tuple(W_qkv.shape)}")
    if x.shape[1] == 0:
        raise ValueError(f"mssa: x has no tokens (shape {tuple(x.shape)}): attention needs "
                         "at least one")
    if Kp % heads:
        raise ValueError(f"mssa: W_qkv has {Kp} rows, not divisible by heads={heads}")
    if step not in STEPS:
        raise ValueError(f"mssa: step must be one of {STEPS}, got {step!r}")
    if causal and not softmax:
        raise ValueError("mssa: causal=True needs softmax=True (the mask is -inf logits)")
    if step == "exact" and causal:
        raise ValueError("mssa: the exact step (step='exact') has no causal form")
    if tied and W_out is not None:
        raise ValueError("mssa: a tied output projection (tied=True) takes W_out=None")
    p = Kp // heads
    s = p ** -0.5 if scale is None else scale
    B, N, _ = x.shape

    w = _split_heads(matmul_rows(x, W_qkv.T), heads)             # (B, K, N, p)
    if step == "exact":
        H, exact_cache = exact_heads_forward(w, s)                # (B, K, N, p)
        H = H * -gain                  # O_k = -c M_k^{-1} w_k (a new array: the cache keeps M^{-1} w)
        return _project_out(x, H, W_qkv, W_out, b_out, tied, gain, shrink, dropout, rng,
                            training, {"w": w, "attn": exact_cache["attn"], "scale": s,
                                       "exact": exact_cache, "attn_mask": None})
    swT = _scaled_transpose(w, s)                    # (B, K, p, N)  s w^T
    S = w @ swT                                      # (B, K, N, N)  s w w^T
    if causal:
        future = xp.triu(xp.ones((N, N), dtype=bool), 1)            # keys after the query
        S += xp.where(future, -xp.inf, 0).astype(S.dtype)           # broadcast over (B, K)
    if softmax:
        # softmax in place: subtract the row max so exp never overflows. Without the
        # mask S is symmetric, and its column max (a reduction across rows, which
        # NumPy vectorises) is the row max up to round-off: any shift near it will do.
        # Where the fused loops run (fused.py), each of the two row passes is one loop.
        rows = S.reshape(-1, N)                      # (B K N, N), a view
        loops = fused.usable(rows)
        if loops:
            fused.subtract_row_max(rows)
        else:
            S -= S.max(axis=-1, keepdims=True) if causal else S.max(axis=-2)[..., None]
        A = xp.exp(S, out=S)
        if loops:
            fused.divide_row_sum(rows)
        else:
            A /= sum_last(A)                         # (B, K, N, N)
    else:
        A = S
    A_used, attn_mask = dropout_forward(A, dropout, rng, training)
    H = xp.matmul(A_used, w, out=_heads_buffer(w))   # (B, K, N, p)
    if gain != 1.0:
        H *= gain
    return _project_out(x, H, W_qkv, W_out, b_out, tied, gain, shrink, dropout, rng,
                        training, {"w": w, "swT": swT, "attn": A, "attn_used": A_used,
                                   "attn_mask": attn_mask, "scale": s, "exact": None,
                                   "softmax": softmax})


def _project_out(x, H, W_qkv, W_out, b_out, tied, gain, shrink, dropout, rng, training,
                 cache):
    """y = [H_1 .. H_K] P (+ b_out) - r x, P = W_out^T, W_qkv (tied) or I; output dropout."""
    O = _merge_heads(H)                              # (B, N, K p)
    if tied:
        y = matmul_rows(O, W_qkv)                    # (B, N, d)  O [U_1 .. U_K]^T
    elif W_out is None:
        y = O
    else:
        y = matmul_rows(O, W_out.T)                  # (B, N, d)
        if b_out is not None:
            y += b_out
    if shrink:
        y -= shrink * x
    y, out_mask = dropout_forward(y, dropout, rng, training)
    cache.update({"x": x, "O": O, "out_mask": out_mask, "W_qkv": W_qkv, "W_out": W_out,
                  "has_bias": b_out is not None, "tied": tied, "gain": gain,
                  "shrink": shrink})
    return y, cache


def mssa_backward(dout, cache):
    """Gradients of MSSA (rows form, G = dout).

    dW_out = G^T O;  db_out = sum G;  dO = G W_out
    dA_k = dO_k w_k^T;  dS_k = A_k * (dA_k - rowsum(dA_k * A_k))   (dS_k = dA_k without softmax)
    dw_k = A_k^T dO_k + s (dS_k + dS_k^T) w_k      (q = k = v)
    dx = dw W_qkv;  dW_qkv = dw^T x
    Variants: tied adds dW_qkv += O^T G (the output side of U); shrink r
    adds -r G to dx; gain c scales dO; the exact step's dw comes from
    whitebox.functional.mssa_exact.exact_heads_backward.
    Returns: dx (B, N, d), dW_qkv (K p, d), dW_out (d, K p) or None, db_out (d,) or None.
    """
    x, w, W_qkv, W_out = cache["x"], cache["w"], cache["W_qkv"], cache["W_out"]
    B, K, N, p = w.shape
    d = x.shape[-1]
    check_dout("mssa", dout, (B, N, d))
    G = dropout_backward(dout, cache["out_mask"])    # (B, N, d)

    dW_qkv_out = None
    if cache["tied"]:
        dW_out = db_out = None
        dO = matmul_rows(G, W_qkv.T)                                     # (B, N, K p)
        dW_qkv_out = cache["O"].reshape(-1, K * p).T @ G.reshape(-1, d)  # (K p, d)
    elif W_out is None:
        dW_out = db_out = None
        dO = G
    else:
        dW_out = G.reshape(-1, d).T @ cache["O"].reshape(-1, K * p)      # (d, K p)
        db_out = sum_leading(G) if cache["has_bias"] else None
        dO = matmul_rows(G, W_out)                                       # (B, N, K p)
    dO = _split_heads(dO, K)                                             # (B, K, N, p)
    # O_k = c A_k w_k, or -c M_k^{-1} w_k for the exact step; not in place: dO may be a view of G
    factor = -cache["gain"] if cache["exact"] is not None else cache["gain"]
    if factor != 1.0:
        dO = dO * factor
    if cache["exact"] is not None:
        dw = exact_heads_backward(dO, cache["exact"])
        return _input_grads(dw, x, W_qkv, G, cache["shrink"], dW_qkv_out) + (dW_out, db_out)

    A, A_used = cache["attn"], cache["attn_used"]
    xp = get_array_module(A)
    dw = xp.matmul(A_used.transpose(0, 1, 3, 2), dO, out=_heads_buffer(w))  # (B, K, N, p)
    # every N x N array below carries the factor s, from s w^T: sdA = s dA, sdS = s dS
    sdA = dO @ cache["swT"]                                              # (B, K, N, N)
    sdA = dropout_backward(sdA, cache["attn_mask"])
    if fused.usable(sdA, A):                         # the two steps below in one loop (fused.py)
        sdS = fused.attention_scores_backward(sdA.reshape(-1, N, N), A.reshape(-1, N, N),
                                              cache["softmax"]).reshape(sdA.shape)
    else:
        sdS = sdA
        if cache["softmax"]:
            # softmax backward, in place: dS = A * (dA - rowsum(dA * A)), linear in dA
            sdS -= sum_last_product(sdA, A)
            sdS *= A
        sdS = sdS + sdS.transpose(0, 1, 3, 2)  # not in place: the operands overlap
    dw += sdS @ w                                                        # (B, K, N, p)
    return _input_grads(dw, x, W_qkv, G, cache["shrink"], dW_qkv_out) + (dW_out, db_out)


def _input_grads(dw, x, W_qkv, G, shrink, dW_qkv_out):
    """dx = dw W_qkv - r G;  dW_qkv = dw^T x (+ the tied output side)."""
    B, K, N, p = dw.shape
    d = x.shape[-1]
    dw = _merge_heads(dw)                                                # (B, N, K p)
    dx = matmul_rows(dw, W_qkv)                                          # (B, N, d)
    if shrink:
        dx -= shrink * G
    dW_qkv = dw.reshape(-1, K * p).T @ x.reshape(-1, d)                  # (K p, d)
    if dW_qkv_out is not None:
        dW_qkv += dW_qkv_out
    return dx, dW_qkv
