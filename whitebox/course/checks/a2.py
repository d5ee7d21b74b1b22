"""A2: softmax, LayerNorm backward, multi-head subspace self-attention (forward and backward)."""
from ...functional import layernorm_forward, mssa_forward, softmax_forward
from ..judge import check
from .helpers import (assert_close, assert_gradient, backward, describe, fail, reference, rng,
                      unpack)

SOFTMAX = "whitebox.functional.softmax:softmax_forward"
SOFTMAX_B = "whitebox.functional.softmax:softmax_backward"
LN_B = "whitebox.functional.layernorm:layernorm_backward"
MSSA = "whitebox.functional.mssa:mssa_forward"
MSSA_B = "whitebox.functional.mssa:mssa_backward"
SYMMETRIC = ("q = k = v = w, so S = s w w^T is quadratic in w: dw needs "
             "s (dS + dS^T) w as well as A^T dO")


# ---------------------------------------------------------------- part 1: softmax (5)
@check("A2", 1, weight=1)
def softmax_forward_values(run):
    x = rng(1).standard_normal((2, 3, 5))
    y = unpack("softmax_forward", run.forward(SOFTMAX, x), 2)[0]
    assert_close("softmax_forward", y, softmax_forward(x)[0], describe(x=x), 1e-10)


@check("A2", 1, weight=1)
def softmax_forward_large_inputs(run):
    x = rng(2).standard_normal((4, 6)) * 5 + 1000.0
    y = unpack("softmax_forward", run.forward(SOFTMAX, x), 2)[0]
    assert_close("softmax_forward (entries near 1000)", y, softmax_forward(x)[0],
                 describe(x=x), 1e-10, hint="subtract the row maximum before exp")


@check("A2", 1, weight=3)
def softmax_backward_gradient(run):
    x = rng(3).standard_normal((2, 4, 5))
    dout = rng(4).standard_normal(x.shape)
    with reference():
        _, cache = softmax_forward(x)
    dx = backward(run, SOFTMAX_B, dout, cache, SOFTMAX, (x,))
    assert_gradient("softmax_backward", "x", dx, lambda: softmax_forward(x)[0], x, dout,
                    describe(x=x), hint="dx = y * (dout - sum(dout * y)) over the last axis")


# ------------------------------------------------------------- part 2: LayerNorm (5)
def layernorm_backward_gradient(run, shape, wrt):
    r = rng(len(shape))
    x = r.standard_normal(shape) * 2 + 0.5
    gamma, beta = r.standard_normal(shape[-1]), r.standard_normal(shape[-1])
    dout = r.standard_normal(shape)
    with reference():
        _, cache = layernorm_forward(x, gamma, beta)
    got = unpack("layernorm_backward", run.call(LN_B, dout, cache), 3)
    grads = dict(zip(("x", "gamma", "beta"), got))
    arrays = {"x": x, "gamma": gamma, "beta": beta}
    assert_gradient("layernorm_backward", wrt, grads[wrt],
                    lambda: layernorm_forward(x, gamma, beta)[0], arrays[wrt], dout,
                    describe(x=x, gamma=gamma, beta=beta),
                    hint="returns (dx, dgamma, dbeta); dgamma and dbeta sum over every "
                         "leading axis" if wrt != "x" else
                    "dx has three terms: dxhat, minus its mean, minus xhat times mean(dxhat xhat)")


SHAPES = {"2d": dict(shape=(4, 6)), "3d": dict(shape=(2, 3, 5))}
# dx carries the part: the mean and variance terms are what LayerNorm backward teaches
check("A2", 2, weight=3, cases={k: dict(v, wrt="x") for k, v in SHAPES.items()}
      )(layernorm_backward_gradient)
check("A2", 2, weight=1, cases={f"{k}-gamma": dict(v, wrt="gamma")
                                for k, v in SHAPES.items()})(layernorm_backward_gradient)
check("A2", 2, weight=1, cases={f"{k}-beta": dict(v, wrt="beta")
                                for k, v in SHAPES.items()})(layernorm_backward_gradient)


# ------------------------------------------------------------------- part 3: MSSA (25)
def params(seed, B=2, N=5, d=6, K=2, p=3, out=True):
    r = rng(seed)
    x = r.standard_normal((B, N, d))
    W_qkv = r.standard_normal((K * p, d)) * 0.5
    W_out = r.standard_normal((d, K * p)) * 0.5 if out else None
    b_out = r.standard_normal(d) if out else None
    return x, W_qkv, W_out, b_out


CAUSAL = {"full": dict(causal=False), "causal": dict(causal=True)}


@check("A2", 3, weight=1, cases=CAUSAL)
def mssa_forward_values(run, causal):
    x, W_qkv, W_out, b_out = params(1)
    y = unpack("mssa_forward", run.forward(MSSA, x, W_qkv, W_out, b_out, 2, causal=causal), 2)[0]
    with reference():
        expected = mssa_forward(x, W_qkv, W_out, b_out, 2, causal=causal)[0]
    assert_close("mssa_forward", y, expected,
                 describe(x=x, W_qkv=W_qkv, heads=2, causal=causal), 1e-9)


@check("A2", 3, weight=1)
def mssa_forward_attention_maps(run):
    x, W_qkv, W_out, b_out = params(2)
    _, cache = unpack("mssa_forward", run.call(MSSA, x, W_qkv, W_out, b_out, 2), 2)
    if not isinstance(cache, dict) or "attn" not in cache:
        fail('mssa_forward: the cache must be a dict with the attention maps as cache["attn"]')
    with reference():
        A = mssa_forward(x, W_qkv, W_out, b_out, 2)[1]["attn"]
    assert_close('mssa_forward: cache["attn"] (B, K, N, N)', cache["attn"], A,
                 describe(x=x, heads=2), 1e-9)


@check("A2", 3, weight=1)
def mssa_forward_without_projection(run):
    x, W_qkv, _, _ = params(3, d=3, K=1, p=3, out=False)
    y = unpack("mssa_forward", run.forward(MSSA, x, W_qkv, None, None, 1), 2)[0]
    with reference():
        expected = mssa_forward(x, W_qkv, None, None, 1)[0]
    assert_close("mssa_forward (W_out None)", y, expected, describe(x=x, W_qkv=W_qkv, heads=1),
                 1e-9)


def mssa_backward_gradient(run, wrt, causal=False, scale=None, seed=4, out=True, **shape):
    x, W_qkv, W_out, b_out = params(seed, out=out, **shape)
    K = shape.get("K", 2)
    dout = rng(seed + 1).standard_normal(x.shape)
    args = (x, W_qkv, W_out, b_out, K)
    kwargs = dict(scale=scale, causal=causal)
    with reference():
        _, cache = mssa_forward(*args, **kwargs)
    got = unpack("mssa_backward", backward(run, MSSA_B, dout, cache, MSSA, args, kwargs), 4)
    grads = dict(zip(("x", "W_qkv", "W_out", "b_out"), got))
    if not out and (grads["W_out"] is not None or grads["b_out"] is not None):
        fail("mssa_backward without an output projection must return None for dW_out "
             "and db_out")
    arrays = {"x": x, "W_qkv": W_qkv, "W_out": W_out, "b_out": b_out}
    assert_gradient("mssa_backward" + (f" (scale {scale})" if scale else "")
                    + ("" if out else " (W_out None)"), wrt, grads[wrt],
                    lambda: mssa_forward(*args, **kwargs)[0], arrays[wrt], dout,
                    describe(x=x, W_qkv=W_qkv, heads=K, causal=causal),
                    hint=SYMMETRIC if wrt in ("x", "W_qkv") else "")


# the output projection's gradients need no symmetric term: little weight
check("A2", 3, weight=1, needs=("mssa_forward_values",), cases={
    f"{c}-{w}": dict(wrt=w, causal=c == "causal") for c in CAUSAL
    for w in ("W_out", "b_out")})(mssa_backward_gradient)
# dx and dW_qkv hold every term (A^T dO and the symmetric s (dS + dS^T) w): most weight
check("A2", 3, weight=4, needs=("mssa_forward_values",), cases={
    f"{c}-{w}": dict(wrt=w, causal=c == "causal") for c in CAUSAL
    for w in ("x", "W_qkv")})(mssa_backward_gradient)
# sharp attention (scale 2), where the symmetric term is large
check("A2", 3, weight=5, needs=("mssa_forward_values",),
      cases={"scale-2": dict(wrt="x", scale=2.0, seed=6)})(mssa_backward_gradient)
check("A2", 3, weight=2, needs=("mssa_forward_without_projection",),
      cases={"no-projection": dict(wrt="x", seed=8, out=False, d=3, K=1, p=3)}
      )(mssa_backward_gradient)
