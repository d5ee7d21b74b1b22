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

Two versions of the same math live here, as in layernorm.py:

- `mssa_forward` / `mssa_backward`: the READABLE REFERENCE, one line per
  equation above, built on the softmax pair of whitebox.functional.softmax.
- `mssa_fast_forward` / `mssa_fast_backward`: the FAST PATH the Modules run,
  with dropout (on the attention and after the output projection). Its head
  step `attention_heads_fast_forward` / `_backward` writes the heads into
  buffers laid out for the merge, carries s in one contiguous copy of w^T,
  runs the softmax in place (fused loops where Numba is installed; no row-max
  shift while the scores s w w^T keep exp in range, see softmax.py) and folds
  the softmax backward and its transpose into one pass.

The theory-faithful variants (the exact step, no softmax, the rate scale's
gain and shrink, a tied output) are composed from these pieces in
whitebox.functional.mssa_variants; incremental causal decoding is
whitebox.functional.mssa_decode.
"""
import numpy as np

from ..backend import get_array_module
from . import fused
from ._blas import matmul_rows
from ._checks import check_array, check_dout
from .dropout import dropout_backward, dropout_forward
from .linear import linear_backward, linear_forward
from .softmax import (causal_mask, softmax_backward, softmax_fast_backward,
                      softmax_fast_forward, softmax_forward)


def split_heads(w, K):
    """(B, N, K p) -> (B, K, N, p) as a VIEW, no copy: batched products read its
    strided (N, p) blocks as fast as contiguous ones."""
    B, N, Kp = w.shape
    return w.reshape(B, N, K, Kp // K).transpose(0, 2, 1, 3)


def merge_heads(o):
    """(B, K, N, p) -> (B, N, K p), the heads side by side."""
    B, K, N, p = o.shape
    return o.transpose(0, 2, 1, 3).reshape(B, N, K * p)


def check_mssa_args(x, W_qkv, heads):
    """The checks every MSSA forward shares; returns (xp, p = head size)."""
    xp = check_array("x", x, ndim=3)
    if not isinstance(heads, (int, np.integer)) or isinstance(heads, bool) or heads <= 0:
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
    return xp, Kp // heads


# ---------------------------------------------------------------- reference

def mssa_forward(x, W_qkv, W_out, b_out, heads, scale=None, causal=False):
    """y = [softmax(s w_k w_k^T) w_k]_k W_out^T + b_out,  w = x W_qkv^T (readable reference).

    Inputs: x (B, N, d); W_qkv (K p, d); W_out (d, K p) or None for no output
    projection (the official code drops it when K = 1 and p = d); b_out (d,)
    or None; heads K; scale s (default p^{-1/2}); causal: each query sees
    only the keys up to itself.
    Returns: y (B, N, d), cache: a dict with "x", "W_qkv", "W_out" (the
    inputs), "w" (B, K, N, p) the projected tokens, "attn" (B, K, N, N) the
    attention maps A_k, "O" (B, N, K p) the merged heads, "scale" s and
    "has_bias" (whether b_out was given).
    """
    xp, p = check_mssa_args(x, W_qkv, heads)
    N = x.shape[1]
    s = p ** -0.5 if scale is None else scale
    w = split_heads(x @ W_qkv.T, heads)                       # (B, K, N, p)
    S = s * (w @ w.swapaxes(-1, -2))                          # (B, K, N, N)
    mask = causal_mask(N, N, S.dtype, xp) if causal else None  # (N, N) 0 or -inf
    A, _ = softmax_forward(S, mask)                           # (B, K, N, N)
    O = merge_heads(A @ w)                                    # (B, N, K p)
    y = O if W_out is None else O @ W_out.T                   # (B, N, d)
    if b_out is not None:
        y = y + b_out
    return y, {"x": x, "W_qkv": W_qkv, "W_out": W_out, "w": w, "attn": A, "O": O,
               "scale": s, "has_bias": b_out is not None}


def mssa_backward(dout, cache):
    """Gradients of MSSA (readable reference).

    dW_out = dout^T O;  db_out = sum dout;  dO = dout W_out
    dA_k = dO_k w_k^T;  dS_k = A_k * (dA_k - rowsum(dA_k * A_k))
    dw_k = A_k^T dO_k + s (dS_k + dS_k^T) w_k      (q = k = v)
    dx = dw W_qkv;  dW_qkv = dw^T x
    Returns: dx (B, N, d), dW_qkv (K p, d), dW_out (d, K p) or None, db_out (d,) or None.
    """
    x, W_qkv, W_out, w, A, O, s = (cache[k] for k in ("x", "W_qkv", "W_out", "w", "attn",
                                                       "O", "scale"))
    B, N, d = x.shape
    check_dout("mssa", dout, (B, N, d))
    K, Kp = w.shape[1], O.shape[-1]
    dW_out = None if W_out is None else dout.reshape(-1, d).T @ O.reshape(-1, Kp)  # (d, K p)
    db_out = dout.sum(axis=(0, 1)) if cache["has_bias"] else None                  # (d,)
    dO = split_heads(dout if W_out is None else dout @ W_out, K)                   # (B, K, N, p)
    dA = dO @ w.swapaxes(-1, -2)                              # (B, K, N, N)
    dS = softmax_backward(dA, A)                              # (B, K, N, N)
    sdS = s * (dS + dS.swapaxes(-1, -2))                      # (B, K, N, N) w twice in S
    dw = A.swapaxes(-1, -2) @ dO                              # (B, K, N, p) as the values
    dw += sdS @ w                                             # as the queries and keys
    dw = merge_heads(dw)                                      # (B, N, K p)
    dx = dw @ W_qkv                                           # (B, N, d)
    dW_qkv = dw.reshape(-1, Kp).T @ x.reshape(-1, d)          # (K p, d)
    return dx, dW_qkv, dW_out, db_out


# ---------------------------------------------------------------- fast path

def heads_buffers(xp, B, K, N, p, parts, dtype):
    """``parts`` empty arrays shaped (B, K, N, p), all views of ONE (B, N, parts, K, p) array,
    for products to write into; returns (views, the merged (B, N, parts K p) array)."""
    whole = xp.empty((B, N, parts, K, p), dtype=dtype)
    views = [whole[:, :, i].transpose(0, 2, 1, 3) for i in range(parts)]
    return views, whole.reshape(B, N, parts * K * p)


def heads_buffer(w):
    """An empty array shaped like w (B, K, N, p) but laid out as (B, N, K, p) in
    memory, for a product to write into: merging its heads afterwards is free."""
    return heads_buffers(get_array_module(w), *w.shape, 1, w.dtype)[0][0]


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


def attention_heads_fast_forward(w, s, causal=False, dropout=0.0, rng=None, training=True,
                                 softmax=True):
    """H_k = A_k w_k,  A_k = softmax(s w_k w_k^T) per head (fast path).

    Inputs: w (B, K, N, p) the projected tokens; s the scale; causal mask;
    dropout on A (masks from ``rng``, only when training); softmax=False uses
    A_k = s w_k w_k^T itself (the Gram weighting of the derivation, the
    official CRATE-MAE decoder's ``use_softmax=False``; no causal form).
    Returns: H (B, K, N, p), laid out for merge_heads; cache ("attn" the maps).
    """
    if causal and not softmax:
        raise ValueError("mssa: causal=True needs softmax=True (the mask is -inf logits)")
    xp = get_array_module(w)
    N = w.shape[2]
    swT = _scaled_transpose(w, s)                             # (B, K, p, N)  s w^T
    A = w @ swT                                               # (B, K, N, N)  S = s w w^T
    if softmax:                                               # in place over S
        mask = causal_mask(N, N, A.dtype, xp) if causal else None
        A, _ = softmax_fast_forward(A, mask, symmetric=not causal, gram=not causal and s > 0)
    A_used, attn_mask = dropout_forward(A, dropout, rng, training)
    H = xp.matmul(A_used, w, out=heads_buffer(w))            # (B, K, N, p)
    return H, {"w": w, "swT": swT, "attn": A, "attn_used": A_used, "attn_mask": attn_mask,
               "softmax": softmax}


def attention_heads_fast_backward(dH, cache):
    """dw = A_used^T dH + s (dS + dS^T) w  (fast path; dS = dA without the softmax).

    Every N x N array carries the factor s of s w^T: sdA = s dA, sdS = s dS.
    Returns: dw (B, K, N, p).
    """
    w, A, A_used = cache["w"], cache["attn"], cache["attn_used"]
    xp = get_array_module(w)
    N = w.shape[2]
    dw = xp.matmul(A_used.transpose(0, 1, 3, 2), dH, out=heads_buffer(w))  # (B, K, N, p)
    sdA = dropout_backward(dH @ cache["swT"], cache["attn_mask"])            # (B, K, N, N)
    if fused.usable(sdA, A):              # softmax backward and its transpose in one loop
        sdS = fused.attention_scores_backward(sdA.reshape(-1, N, N), A.reshape(-1, N, N),
                                              cache["softmax"]).reshape(sdA.shape)
    else:
        sdS = softmax_fast_backward(sdA, A) if cache["softmax"] else sdA
        sdS = sdS + sdS.transpose(0, 1, 3, 2)                 # not in place: operands overlap
    dw += sdS @ w                                             # (B, K, N, p)
    return dw


def project_in(x, W_qkv, heads):
    """w = x W_qkv^T split into heads: (B, N, d) -> (B, K, N, p)."""
    return split_heads(matmul_rows(x, W_qkv.T), heads)


def project_in_backward(dw, x, W_qkv):
    """dx = dw W_qkv;  dW_qkv = dw^T x  for dw (B, K, N, p). Returns: dx (B, N, d), dW_qkv."""
    dw = merge_heads(dw)                                      # (B, N, K p)
    dx = matmul_rows(dw, W_qkv)                               # (B, N, d)
    dW_qkv = dw.reshape(-1, dw.shape[-1]).T @ x.reshape(-1, x.shape[-1])   # (K p, d)
    return dx, dW_qkv


def project_out_forward(O, W_out, b_out):
    """y = O W_out^T + b_out, or O itself when W_out is None. Returns: y, cache."""
    if W_out is None:
        return O, None
    return linear_forward(O, W_out, b_out)


def project_out_backward(dy, cache):
    """Returns: dO, dW_out or None, db_out or None."""
    if cache is None:
        return dy, None, None
    return linear_backward(dy, cache)


def mssa_fast_forward(x, W_qkv, W_out, b_out, heads, scale=None, causal=False, dropout=0.0,
                      rng=None, training=True):
    """The same y as mssa_forward (fast path), with dropout p on the attention and
    after the output projection (masks drawn from ``rng``, a numpy Generator,
    only when training).

    Returns: y (B, N, d), cache (the attention maps are cache["attn"]).
    """
    _, p = check_mssa_args(x, W_qkv, heads)
    s = p ** -0.5 if scale is None else scale
    w = project_in(x, W_qkv, heads)                           # (B, K, N, p)
    H, heads_cache = attention_heads_fast_forward(w, s, causal, dropout, rng, training)
    y, out_cache = project_out_forward(merge_heads(H), W_out, b_out)   # (B, N, d)
    y, out_mask = dropout_forward(y, dropout, rng, training)
    return y, {"x": x, "W_qkv": W_qkv, "w": w, "attn": heads_cache["attn"], "scale": s,
               "heads": heads_cache, "out": out_cache, "out_mask": out_mask}


def mssa_fast_backward(dout, cache):
    """The gradients of mssa_backward (fast path), through the dropouts.

    Returns: dx (B, N, d), dW_qkv (K p, d), dW_out (d, K p) or None, db_out (d,) or None.
    """
    check_dout("mssa", dout, cache["x"].shape)
    dO, dW_out, db_out = project_out_backward(dropout_backward(dout, cache["out_mask"]),
                                              cache["out"])                # (B, N, K p)
    dw = attention_heads_fast_backward(split_heads(dO, cache["w"].shape[1]), cache["heads"])
    return project_in_backward(dw, cache["x"], cache["W_qkv"]) + (dW_out, db_out)
