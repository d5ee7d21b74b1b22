"""The theory-faithful MSSA variants, composed from the fast path's pieces.

The official MSSA (whitebox.functional.mssa) departs from the derivation in
a few places; each can be switched off alone here, around the same three
steps (project in, a head update, project out):

    update="exact"  O_k = -(I_N + s w_k w_k^T)^{-1} w_k   (whitebox.functional.mssa_exact)
                    instead of A_k w_k: the exact gradient of the compression
                    rate, through K N x N inverses per item;
    softmax=False   A_k = s w_k w_k^T itself, unnormalised (the official
                    CRATE-MAE decoder's ``use_softmax=False``);
    gain c, shrink r   y = c [O_1 .. O_K] W_out^T + b_out - r x.

A tied output projection, [O_1 .. O_K] [U_1 .. U_K]^T = O W_qkv, is the
call with W_out = W_qkv^T (a view) and b_out = None, the gradient dW_out^T
then added to dW_qkv (whitebox.nn.MSSA does this).

With s = b = p/(N eps^2), c = kappa b, tied and update="exact", y is exactly
-kappa dRc(x | U)/dx, so x + y is one gradient step on the compression rate
(whitebox.rate.compression_step). With the softmax, c = r = kappa b gives the
paper's (1 - kappa b) x + kappa b [SSA_k] U^T.
"""
from ._checks import check_dout
from .dropout import dropout_backward, dropout_forward
from .mssa import (attention_heads_fast_backward, attention_heads_fast_forward,
                   check_mssa_args, merge_heads, project_in, project_in_backward,
                   project_out_backward, project_out_forward, split_heads)
from .mssa_exact import exact_heads_backward, exact_heads_forward

UPDATES = ("softmax", "exact")


def mssa_variant_forward(x, W_qkv, W_out, b_out, heads, scale=None, *, update="softmax",
                         softmax=True, gain=1.0, shrink=0.0, causal=False, dropout=0.0,
                         rng=None, training=True):
    """y = c [O_1 .. O_K] W_out^T + b_out - r x, O_k from the chosen head update.

    Inputs as whitebox.functional.mssa_fast_forward (x (B, N, d), W_qkv (K p, d),
    W_out (d, K p) or None, b_out (d,) or None, heads K, scale s, causal,
    dropout, rng, training), and: update "softmax" (O_k = A_k w_k) or "exact"
    (O_k = -M_k^{-1} w_k: no causal form, no attention map to drop, so
    dropout acts on the output only); softmax=False (A_k = s w_k w_k^T);
    gain c; shrink r. The defaults compute mssa_fast_forward's y.
    Returns: y (B, N, d), cache (cache["attn"]: the attention maps, or for
    the exact update the N x N inverses (I + s w_k w_k^T)^{-1}).
    """
    _, p = check_mssa_args(x, W_qkv, heads)
    if update not in UPDATES:
        raise ValueError(f"mssa: update must be one of {UPDATES}, got {update!r}")
    if update == "exact" and (causal or not softmax):
        raise ValueError("mssa: the exact update (update='exact') has no causal form and no "
                         f"softmax to switch off (causal={causal}, softmax={softmax})")
    s = p ** -0.5 if scale is None else scale
    w = project_in(x, W_qkv, heads)                           # (B, K, N, p)
    if update == "exact":
        H, heads_cache = exact_heads_forward(w, s)            # (B, K, N, p)  M^{-1} w
        factor = -gain
    else:
        H, heads_cache = attention_heads_fast_forward(w, s, causal, dropout, rng, training,
                                                      softmax)
        factor = gain
    O = merge_heads(H)                                        # (B, N, K p)
    if factor != 1.0:
        O = O * factor                                        # a new array: the caches keep H
    y, out_cache = project_out_forward(O, W_out, b_out)       # (B, N, d)
    if shrink:
        y = y - shrink * x
    y, out_mask = dropout_forward(y, dropout, rng, training)
    return y, {"x": x, "W_qkv": W_qkv, "w": w, "attn": heads_cache["attn"], "scale": s,
               "update": update, "factor": factor, "shrink": shrink, "heads": heads_cache,
               "out": out_cache, "out_mask": out_mask}


def mssa_variant_backward(dout, cache):
    """dO = c G W_out (G = dout through the output dropout), the head update's dw,
    then dx = dw W_qkv - r G and dW_qkv = dw^T x.

    Returns: dx (B, N, d), dW_qkv (K p, d), dW_out (d, K p) or None, db_out (d,) or None.
    """
    check_dout("mssa", dout, cache["x"].shape)
    G = dropout_backward(dout, cache["out_mask"])             # (B, N, d)
    dO, dW_out, db_out = project_out_backward(G, cache["out"])  # (B, N, K p)
    dH = split_heads(dO, cache["w"].shape[1])                 # (B, K, N, p)
    if cache["factor"] != 1.0:
        dH = dH * cache["factor"]                             # not in place: dO may be G
    if cache["update"] == "exact":
        dw = exact_heads_backward(dH, cache["heads"])
    else:
        dw = attention_heads_fast_backward(dH, cache["heads"])
    dx, dW_qkv = project_in_backward(dw, cache["x"], cache["W_qkv"])
    if cache["shrink"]:
        dx -= cache["shrink"] * G
    return dx, dW_qkv, dW_out, db_out
