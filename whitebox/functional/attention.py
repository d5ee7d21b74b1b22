"""Multi-head self-attention as the standard transformer computes it (timm, nanoGPT, BERT).

Heads of width p = d / K; queries, keys and values are three DIFFERENT
projections of the tokens (CRATE's MSSA uses one, whitebox.functional.mssa):

    [q | k | v] = x W_qkv^T + b_qkv        (B, N, 3 d)   fused projection
    S_k = s q_k k_k^T                      (B, N, N)     s = p^{-1/2}, per head k
    A_k = softmax(S_k)                     rows sum to one (causal: keys after the query masked)
    O_k = dropout(A_k) v_k                 (B, N, p)
    y   = [O_1 .. O_K] W_proj^T + b_proj   (B, N, d)

Two versions of the core on split heads (q, k, v given; BERT's separate
query/key/value projections and a key/value cache use it directly), as in
mssa.py and layernorm.py:

- ``sdpa_forward/backward``: the READABLE REFERENCE, one line per equation,
  on the softmax pair of whitebox.functional.softmax.
- ``sdpa_fast_forward/backward``: the FAST PATH the Modules run, the same
  math arranged for NumPy's stacked products: s is carried in one
  contiguous copy s q (so dk = dS^T (s q) needs no scaling and dq one pass
  over (N, p) blocks); k^T and v^T, the SECOND factors of their products,
  are contiguous copies, while A_d^T and dS^T, FIRST factors, stay
  transposed views (a stacked product runs the former slower than the
  copy costs, the latter no slower: measured at the baselines' shapes);
  the softmax runs in place over the scores (softmax_fast_forward/backward),
  and the heads are written straight into buffers laid out (B, N, K, p), so
  merging them is free and the gradients of q, k and v land side by side in
  one (B, N, 3, K, p) array: the fused projection's gradient without a
  concatenation.

``attention_forward/backward`` wraps the fast core in the fused projection
and the output projection. Heads are split and merged with mssa.py's
split_heads/merge_heads; the causal mask is softmax.py's.
"""
from ..backend import get_array_module
from ._checks import check_array
from .dropout import dropout_backward, dropout_forward
from .linear import linear_backward, linear_forward
from .mssa import heads_buffer, heads_buffers, merge_heads, split_heads
from .softmax import (causal_mask, softmax_backward, softmax_fast_backward,
                      softmax_fast_forward, softmax_forward)


def _t(a):
    """The last two axes swapped, as a contiguous array: NumPy's batched matmul runs a
    transposed view as its SECOND factor slower than this copy costs."""
    return get_array_module(a).ascontiguousarray(a.swapaxes(-1, -2))


def split_qkv(qkv, heads):
    """(B, N, 3 d) of a fused projection -> q, k, v, each (B, K, N, p), views (no copy)."""
    d = qkv.shape[-1] // 3
    return tuple(split_heads(qkv[..., i * d:(i + 1) * d], heads) for i in range(3))


# ---------------------------------------------------------------- reference

def sdpa_forward(q, k, v, causal=False, dropout=0.0, rng=None, training=True):
    """O = dropout(softmax(s q k^T)) v per head, s = p^{-1/2} (readable reference).

    Inputs: q (B, K, Nq, p); k, v (B, K, Nk, p); causal masks key j > query i
    (queries are the last Nq positions); dropout on the attention weights
    (mask from ``rng``, only when training).
    Returns: O (B, K, Nq, p), cache (cache["attn"] is A, (B, K, Nq, Nk)).
    """
    xp = check_array("q", q, ndim=4)
    p = q.shape[-1]
    S = (q @ _t(k)) * (p ** -0.5)                         # (B, K, Nq, Nk)
    mask = causal_mask(q.shape[2], k.shape[2], S.dtype, xp) if causal else None
    A, scache = softmax_forward(S, mask)                  # (B, K, Nq, Nk)
    Ad, dcache = dropout_forward(A, dropout, rng, training)
    O = Ad @ v                                            # (B, K, Nq, p)
    return O, {"q": q, "k": k, "v": v, "attn": A, "dropped": Ad, "softmax": scache,
               "dropout": dcache}


def sdpa_backward(dO, cache):
    """dv = A_d^T dO;  dA = dropout'(dO v^T);  dS = s softmax'(dA);  dq = dS k;  dk = dS^T q.

    Returns: dq (B, K, Nq, p), dk, dv (B, K, Nk, p).
    """
    q, k, v = cache["q"], cache["k"], cache["v"]
    dv = _t(cache["dropped"]) @ dO                        # (B, K, Nk, p)
    dA = dropout_backward(dO @ _t(v), cache["dropout"])   # (B, K, Nq, Nk)
    dS = softmax_backward(dA, cache["softmax"])           # masked entries: A = 0, so dS = 0
    dS *= q.shape[-1] ** -0.5
    dq = dS @ k                                           # (B, K, Nq, p)
    dk = _t(dS) @ q                                       # (B, K, Nk, p)
    return dq, dk, dv


# ---------------------------------------------------------------- fast path

def sdpa_fast_forward(q, k, v, causal=False, dropout=0.0, rng=None, training=True):
    """The same O as sdpa_forward (fast path; the dropout mask is drawn alike).

    O = A_d v with A_d = dropout(softmax((s q) k^T)): s q is one contiguous
    copy, k^T another, the scores are turned into A in place, and O is
    written into a (B, Nq, K, p) buffer (merge_heads(O) is then a view).
    Returns: O (B, K, Nq, p), cache (cache["attn"] is A, (B, K, Nq, Nk)).
    """
    xp = check_array("q", q, ndim=4)
    Nq, p = q.shape[2:]
    qs = xp.multiply(q, q.dtype.type(p ** -0.5))          # (B, K, Nq, p) s q, contiguous
    S = qs @ _t(k)                                        # (B, K, Nq, Nk)
    mask = causal_mask(Nq, k.shape[2], S.dtype, xp) if causal else None
    A, _ = softmax_fast_forward(S, mask)                  # in place over S
    Ad, dcache = dropout_forward(A, dropout, rng, training)
    O = xp.matmul(Ad, v, out=heads_buffer(q))            # (B, K, Nq, p), laid out (B, Nq, K, p)
    return O, {"qs": qs, "k": k, "v": v, "attn": A, "dropped": Ad, "dropout": dcache}


def sdpa_fast_backward(dO, cache, out=None):
    """dv = A_d^T dO;  dS = softmax'(dropout'(dO v^T));  dq = s dS k;  dk = dS^T (s q).

    ``out``: three (B, K, N, p) arrays to write dq, dk, dv into (heads_buffers'
    views, so the caller gets them merged side by side), or None for new ones.
    Returns: dq (B, K, Nq, p), dk, dv (B, K, Nk, p).
    """
    qs, k, v, A, Ad = (cache[n] for n in ("qs", "k", "v", "attn", "dropped"))
    xp = get_array_module(dO)
    dq, dk, dv = (None, None, None) if out is None else out    # None: matmul makes new ones
    dv = xp.matmul(Ad.swapaxes(-1, -2), dO, out=dv)       # (B, K, Nk, p), A_d^T a view
    dA = dropout_backward(dO @ _t(v), cache["dropout"])   # (B, K, Nq, Nk), a new array
    dS = softmax_fast_backward(dA, A)                     # in place: masked entries 0
    dq = xp.matmul(dS, k, out=dq)
    dq *= qs.dtype.type(k.shape[-1] ** -0.5)              # (B, K, Nq, p)
    dk = xp.matmul(dS.swapaxes(-1, -2), qs, out=dk)       # (B, K, Nk, p), s already in qs
    return dq, dk, dv


# ---------------------------------------------------------------- with projections

def attention_forward(x, W_qkv, b_qkv, W_proj, b_proj, heads, causal=False, dropout=0.0,
                      rng=None, training=True):
    """y = [dropout(softmax(s q_k k_k^T)) v_k]_k W_proj^T + b_proj,  [q|k|v] = x W_qkv^T + b_qkv.

    Inputs: x (B, N, d); W_qkv (3 d, d) rows in (q, k, v) order; b_qkv (3 d,)
    or None; W_proj (d, d); b_proj (d,) or None; heads K dividing d; causal;
    dropout on the attention weights (rng a numpy Generator, when training).
    Returns: y (B, N, d), cache (cache["attn"] the attention maps (B, K, N, N)).
    """
    check_array("x", x, ndim=3)
    d = W_proj.shape[0]
    if W_qkv.shape[0] != 3 * d or d % heads:
        raise ValueError(f"attention: W_qkv has shape {tuple(W_qkv.shape)}, expected "
                         f"(3 d, d) with d = {d} divisible by heads = {heads}")
    qkv, qkv_cache = linear_forward(x, W_qkv, b_qkv)      # (B, N, 3 d)
    O, core = sdpa_fast_forward(*split_qkv(qkv, heads), causal, dropout, rng, training)
    y, proj_cache = linear_forward(merge_heads(O), W_proj, b_proj)    # merge_heads(O): a view
    return y, {"qkv": qkv_cache, "core": core, "proj": proj_cache, "attn": core["attn"],
               "heads": heads}


def attention_backward(dy, cache):
    """Through the output projection, the core (sdpa_fast_backward), then the fused projection.

    Returns: dx (B, N, d), dW_qkv (3 d, d), db_qkv (3 d,) or None, dW_proj (d, d),
    db_proj (d,) or None.
    """
    dO, dW_proj, db_proj = linear_backward(dy, cache["proj"])        # (B, N, d)
    K = cache["heads"]
    B, N, d = dO.shape
    xp = get_array_module(dO)
    parts, dqkv = heads_buffers(xp, B, K, N, d // K, 3, dO.dtype)    # dqkv (B, N, 3 d)
    sdpa_fast_backward(split_heads(dO, K), cache["core"], out=parts)
    dx, dW_qkv, db_qkv = linear_backward(dqkv, cache["qkv"])
    return dx, dW_qkv, db_qkv, dW_proj, db_proj
