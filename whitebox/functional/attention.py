"""Multi-head self-attention as the standard transformer computes it (timm, nanoGPT, BERT).

Heads of width p = d / K; queries, keys and values are three DIFFERENT
projections of the tokens (CRATE's MSSA uses one, whitebox.functional.mssa):

    [q | k | v] = x W_qkv^T + b_qkv        (B, N, 3 d)   fused projection
    S_k = s q_k k_k^T                      (B, N, N)     s = p^{-1/2}, per head k
    A_k = softmax(S_k)                     rows sum to one (causal: keys after the query masked)
    O_k = dropout(A_k) v_k                 (B, N, p)
    y   = [O_1 .. O_K] W_proj^T + b_proj   (B, N, d)

Two pairs: ``sdpa_forward/backward`` is the core on split heads (q, k, v
given; BERT's separate query/key/value projections and a key/value cache
use it directly), and ``attention_forward/backward`` wraps it in the fused
projection and the output projection. Softmax, dropout and the linear maps
are the library's shared pairs.
"""
from ..backend import get_array_module
from ._checks import check_array
from .dropout import dropout_backward, dropout_forward
from .linear import linear_backward, linear_forward
from .softmax import softmax_backward, softmax_forward


def split_heads(x, K):
    """(B, N, K p) -> (B, K, N, p)."""
    B, N, Kp = x.shape
    return x.reshape(B, N, K, Kp // K).transpose(0, 2, 1, 3)


def merge_heads(o):
    """(B, K, N, p) -> (B, N, K p)."""
    B, K, N, p = o.shape
    return o.transpose(0, 2, 1, 3).reshape(B, N, K * p)


def _t(a):
    """The last two axes swapped, as a contiguous array: NumPy's batched matmul runs a
    transposed view several times slower than a copy costs."""
    return get_array_module(a).ascontiguousarray(a.swapaxes(-1, -2))


def causal_mask(xp, n_queries, n_keys):
    """(n_queries, n_keys) bool, True where key j comes after query i.

    The queries are the LAST n_queries of the n_keys positions (query i sits
    at position n_keys - n_queries + i), as when new tokens follow a cache.
    """
    offset = n_keys - n_queries
    return xp.arange(n_keys)[None, :] > (offset + xp.arange(n_queries))[:, None]


def sdpa_forward(q, k, v, causal=False, dropout=0.0, rng=None, training=True):
    """O = dropout(softmax(s q k^T)) v per head, s = p^{-1/2}.

    Inputs: q (B, K, Nq, p); k, v (B, K, Nk, p); causal masks key j > query i
    (queries are the last Nq positions); dropout on the attention weights
    (mask from ``rng``, only when training).
    Returns: O (B, K, Nq, p), cache (cache["attn"] is A, (B, K, Nq, Nk)).
    """
    xp = check_array("q", q, ndim=4)
    p = q.shape[-1]
    S = q @ _t(k)                                         # (B, K, Nq, Nk)
    S *= p ** -0.5
    if causal:
        future = causal_mask(xp, q.shape[2], k.shape[2])  # (Nq, Nk)
        S += xp.where(future, -xp.inf, 0).astype(S.dtype)  # broadcast over (B, K)
    A, scache = softmax_forward(S)                        # (B, K, Nq, Nk)
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
    q, k, v = (split_heads(qkv[..., i * d:(i + 1) * d], heads) for i in range(3))  # (B, K, N, p)
    O, core = sdpa_forward(q, k, v, causal, dropout, rng, training)
    y, proj_cache = linear_forward(merge_heads(O), W_proj, b_proj)    # (B, N, d)
    return y, {"qkv": qkv_cache, "core": core, "proj": proj_cache, "attn": core["attn"],
               "heads": heads}


def attention_backward(dy, cache):
    """Through the output projection, the core (sdpa_backward), then the fused projection.

    Returns: dx (B, N, d), dW_qkv (3 d, d), db_qkv (3 d,) or None, dW_proj (d, d),
    db_proj (d,) or None.
    """
    dO, dW_proj, db_proj = linear_backward(dy, cache["proj"])        # (B, N, d)
    dq, dk, dv = sdpa_backward(split_heads(dO, cache["heads"]), cache["core"])
    xp = check_array("dy", dy)
    dqkv = xp.concatenate([merge_heads(g) for g in (dq, dk, dv)], axis=-1)   # (B, N, 3 d)
    dx, dW_qkv, db_qkv = linear_backward(dqkv, cache["qkv"])
    return dx, dW_qkv, db_qkv, dW_proj, db_proj
