"""Causal MSSA of new tokens given the cached projections of the earlier ones (inference).

Because q = k = v = w = x W_qkv^T, the only thing a later token needs from
an earlier one is its projection w: ONE tensor per layer (a usual key/value
cache holds two). For t new tokens after P cached ones,

    w     = [w_past; x_new W_qkv^T]         (B, K, P + t, p)
    S_k   = s w_new,k w_k^T                 (B, t, P + t)
    A_k   = softmax(S_k + m)                m: new token i (position P + i)
                                            sees keys 0 .. P + i (causal)
    y     = [A_k w_k]_k W_out^T + b_out     (B, t, d)

which equals the last t rows of whitebox.functional.mssa_forward on all
P + t tokens (the tests hold it to that).
"""
from ._blas import matmul_rows
from ._checks import check_array
from .mssa import merge_heads, project_out_forward, split_heads
from .softmax import causal_mask, softmax_fast_forward


def mssa_decode(x, past, W_qkv, W_out, b_out, heads, scale=None, causal=True):
    """y for the new tokens x given the cached projections ``past`` (no backward: inference).

    Inputs: x (B, t, d) the new tokens; past (B, K, P, p) the projections of
    the P earlier tokens, or None; W_qkv, W_out, b_out, heads, scale as
    mssa_forward; causal: mask keys after each query (False: every token
    sees all P + t).
    Returns: y (B, t, d), the projections extended to (B, K, P + t, p).
    """
    xp = check_array("x", x, ndim=3)
    p = W_qkv.shape[0] // heads
    s = p ** -0.5 if scale is None else scale
    w_new = split_heads(matmul_rows(x, W_qkv.T), heads)                  # (B, K, t, p)
    w = w_new if past is None else xp.concatenate([past, w_new], axis=2)  # (B, K, P + t, p)
    t, n_keys = w_new.shape[2], w.shape[2]
    S = s * (w_new @ w.swapaxes(-1, -2))                                 # (B, K, t, P + t)
    mask = causal_mask(t, n_keys, S.dtype, xp) if causal and t > 1 else None
    A, _ = softmax_fast_forward(S, mask)                 # (B, K, t, P + t), in place over S
    y, _ = project_out_forward(merge_heads(A @ w), W_out, b_out)         # (B, t, d)
    return y, w
