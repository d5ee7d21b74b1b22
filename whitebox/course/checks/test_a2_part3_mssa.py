"""A2 part 3: multi-head subspace self-attention, forward and backward."""
import numpy as np
import pytest

from course_helpers import assert_close, assert_gradient, describe, rng
from whitebox.functional import mssa_backward, mssa_forward

SYMMETRIC = ("q = k = v = w, so S = s w w^T is quadratic in w: dw needs "
             "s (dS + dS^T) w as well as A^T dO")


def params(seed, B=2, N=5, d=6, K=2, p=3, out=True):
    r = rng(seed)
    x = r.standard_normal((B, N, d))
    W_qkv = r.standard_normal((K * p, d)) * 0.5
    W_out = r.standard_normal((d, K * p)) * 0.5 if out else None
    b_out = r.standard_normal(d) if out else None
    return x, W_qkv, W_out, b_out


def direct(x, W_qkv, W_out, b_out, K, causal=False):
    """The definition, one head and one item at a time."""
    B, N, d = x.shape
    p = W_qkv.shape[0] // K
    out = []
    for b in range(B):
        heads = []
        for k in range(K):
            w = x[b] @ W_qkv[k * p:(k + 1) * p].T                  # (N, p)
            S = w @ w.T / np.sqrt(p)
            if causal:
                S = np.where(np.triu(np.ones((N, N)), 1) > 0, -np.inf, S)
            A = np.exp(S - S.max(axis=1, keepdims=True))
            A /= A.sum(axis=1, keepdims=True)
            heads.append(A @ w)
        O = np.concatenate(heads, axis=1)                           # (N, K p)
        out.append(O if W_out is None else O @ W_out.T + b_out)
    return np.stack(out)


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_mssa_forward(causal):
    x, W_qkv, W_out, b_out = params(1)
    y, cache = mssa_forward(x, W_qkv, W_out, b_out, 2, causal=causal)
    assert_close("mssa_forward", y, direct(x, W_qkv, W_out, b_out, 2, causal),
                 describe(x=x, W_qkv=W_qkv, heads=2, causal=causal), 1e-9)


def test_mssa_forward_attention_maps():
    x, W_qkv, W_out, b_out = params(2)
    _, cache = mssa_forward(x, W_qkv, W_out, b_out, 2)
    A = np.asarray(cache["attn"])
    assert A.shape == (2, 2, 5, 5), f'cache["attn"] must have shape (B, K, N, N) = (2, 2, 5, 5), got {A.shape}'
    assert_close('mssa_forward: rows of cache["attn"]', A.sum(-1), np.ones((2, 2, 5)), "", 1e-10)


def test_mssa_forward_without_projection():
    x, W_qkv, _, _ = params(3, d=3, K=1, p=3, out=False)
    y, _ = mssa_forward(x, W_qkv, None, None, 1)
    assert_close("mssa_forward (W_out None)", y, direct(x, W_qkv, None, None, 1),
                 describe(x=x, W_qkv=W_qkv, heads=1), 1e-9)


@pytest.mark.parametrize("wrt", ["x", "W_qkv", "W_out", "b_out"])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_mssa_backward(wrt, causal):
    x, W_qkv, W_out, b_out = params(4)
    dout = rng(5).standard_normal(x.shape)
    _, cache = mssa_forward(x, W_qkv, W_out, b_out, 2, causal=causal)
    grads = dict(zip(("x", "W_qkv", "W_out", "b_out"), mssa_backward(dout, cache)))
    arrays = {"x": x, "W_qkv": W_qkv, "W_out": W_out, "b_out": b_out}
    assert_gradient("mssa_backward", wrt, grads[wrt],
                    lambda: mssa_forward(x, W_qkv, W_out, b_out, 2, causal=causal)[0],
                    arrays[wrt], dout, describe(x=x, W_qkv=W_qkv, heads=2, causal=causal),
                    hint=SYMMETRIC if wrt in ("x", "W_qkv") else "")


def test_mssa_backward_symmetric_term_matters():
    # a large scale makes the attention sharp, where the symmetric term is large
    x, W_qkv, W_out, b_out = params(6)
    dout = rng(7).standard_normal(x.shape)
    _, cache = mssa_forward(x, W_qkv, W_out, b_out, 2, scale=2.0)
    dx = mssa_backward(dout, cache)[0]
    assert_gradient("mssa_backward (scale 2.0)", "x", dx,
                    lambda: mssa_forward(x, W_qkv, W_out, b_out, 2, scale=2.0)[0], x, dout,
                    describe(x=x, W_qkv=W_qkv, heads=2, scale=2.0), hint=SYMMETRIC)


def test_mssa_backward_without_projection():
    x, W_qkv, _, _ = params(8, d=3, K=1, p=3, out=False)
    dout = rng(9).standard_normal(x.shape)
    _, cache = mssa_forward(x, W_qkv, None, None, 1)
    dx, dW_qkv, dW_out, db_out = mssa_backward(dout, cache)
    assert dW_out is None and db_out is None, \
        "mssa_backward without an output projection must return None for dW_out and db_out"
    assert_gradient("mssa_backward (W_out None)", "x", dx,
                    lambda: mssa_forward(x, W_qkv, None, None, 1)[0], x, dout,
                    describe(x=x, W_qkv=W_qkv, heads=1), hint=SYMMETRIC)
