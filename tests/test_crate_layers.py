"""MSSA and ISTA: functional pairs against direct formulas, finite differences, backends."""
import numpy as np
import pytest

from whitebox import backend
from whitebox.functional import (ista_backward, ista_forward, mssa_backward, mssa_fast_backward,
                                 mssa_fast_forward, mssa_forward)
from whitebox.gradcheck import check_backward, check_module
from whitebox.nn import ISTA, MSSA, PreNorm


def arrays(rng, B=2, N=5, d=6, K=2, p=3):
    x = rng.standard_normal((B, N, d))
    W_qkv = 0.5 * rng.standard_normal((K * p, d))
    W_out = 0.5 * rng.standard_normal((d, K * p))
    b_out = rng.standard_normal(d)
    return x, W_qkv, W_out, b_out


def mssa_loop(x, W_qkv, W_out, b_out, K, causal=False):
    """Per item, per head, straight from the definition."""
    B, N, d = x.shape
    p = W_qkv.shape[0] // K
    y = np.zeros((B, N, d))
    for b in range(B):
        heads = []
        for k in range(K):
            w = x[b] @ W_qkv[k * p:(k + 1) * p].T
            S = w @ w.T / np.sqrt(p)
            if causal:
                S = np.where(np.tril(np.ones((N, N))) > 0, S, -np.inf)
            A = np.exp(S - S.max(1, keepdims=True))
            heads.append(A / A.sum(1, keepdims=True) @ w)
        y[b] = np.concatenate(heads, 1) @ W_out.T + b_out
    return y


@pytest.mark.parametrize("causal", [False, True])
def test_mssa_forward_matches_loop(rng, causal):
    x, Wq, Wo, bo = arrays(rng)
    y, cache = mssa_forward(x, Wq, Wo, bo, 2, causal=causal)
    np.testing.assert_allclose(y, mssa_loop(x, Wq, Wo, bo, 2, causal), rtol=1e-12, atol=1e-12)
    A = cache["attn"]
    np.testing.assert_allclose(A.sum(-1), 1)
    if causal:
        assert np.all(A[..., np.triu_indices(5, 1)[0], np.triu_indices(5, 1)[1]] == 0)


@pytest.mark.parametrize("causal", [False, True])
def test_mssa_backward_finite_differences(rng, causal):
    x, Wq, Wo, bo = arrays(rng)
    errs = check_backward(lambda *a: mssa_forward(*a, 2, causal=causal), mssa_backward,
                          [x, Wq, Wo, bo])
    assert set(errs) == {0, 1, 2, 3}


def test_mssa_without_output_projection(rng):
    x, Wq, _, _ = arrays(rng, K=1, p=6)
    y, _ = mssa_forward(x, Wq, None, None, 1)
    np.testing.assert_allclose(y, mssa_loop(x, Wq, np.eye(6), np.zeros(6), 1), atol=1e-12)
    check_backward(lambda x, Wq: mssa_forward(x, Wq, None, None, 1),
                   lambda d, c: mssa_backward(d, c)[:2], [x, Wq])


def test_mssa_backward_needs_the_symmetric_term(rng):
    """q = k = v: dx = (A^T dO + s (dS + dS^T) w) W_qkv; the value path alone is wrong."""
    x, Wq, Wo, bo = arrays(rng)
    y, cache = mssa_forward(x, Wq, Wo, bo, 2)
    dout = rng.standard_normal(y.shape)
    dx_full = mssa_backward(dout, cache)[0]
    w, A, s = cache["w"], cache["attn"], cache["scale"]

    def merge(t):                                             # (B, K, N, p) -> (B, N, K p)
        return t.transpose(0, 2, 1, 3).reshape(2, 5, 6)
    dO = (dout @ Wo).reshape(2, 5, 2, 3).transpose(0, 2, 1, 3)
    dw_value = A.transpose(0, 1, 3, 2) @ dO                   # A held fixed
    dA = dO @ w.transpose(0, 1, 3, 2)
    dS = A * (dA - (dA * A).sum(-1, keepdims=True))
    dw_scores = s * (dS + dS.transpose(0, 1, 3, 2)) @ w       # through S = s w w^T
    np.testing.assert_allclose(dx_full, merge(dw_value + dw_scores) @ Wq, rtol=1e-12)
    assert np.abs(dx_full - merge(dw_value) @ Wq).max() > 1e-2


# ------------------------------------------------------------ the fast path
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("project", [True, False])
def test_mssa_fast_path_equals_the_reference(rng, causal, project):
    """Forward, attention maps and every gradient, with the fused loops on and off."""
    from whitebox.functional import fused
    K, p = (2, 3) if project else (1, 6)
    x, Wq, Wo, bo = arrays(rng, K=K, p=p)
    Wo, bo = (Wo, bo) if project else (None, None)
    dout = rng.standard_normal(x.shape)
    y, cache = mssa_forward(x, Wq, Wo, bo, K, causal=causal)
    grads = mssa_backward(dout, cache)
    for loops in [False, True] if fused.available() else [False]:
        with fused.setting(loops):
            y_fast, c_fast = mssa_fast_forward(x, Wq, Wo, bo, K, causal=causal)
            np.testing.assert_allclose(y_fast, y, rtol=1e-12, atol=1e-13)
            np.testing.assert_allclose(c_fast["attn"], cache["attn"], rtol=1e-12, atol=1e-15)
            for a, b in zip(mssa_fast_backward(dout, c_fast), grads):
                assert (a is None) == (b is None)
                if a is not None:
                    np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("causal", [False, True])
def test_mssa_fast_backward_finite_differences(rng, causal):
    x, Wq, Wo, bo = arrays(rng)
    errs = check_backward(lambda *a: mssa_fast_forward(*a, 2, causal=causal),
                          mssa_fast_backward, [x, Wq, Wo, bo])
    assert set(errs) == {0, 1, 2, 3}


def test_mssa_dropout_uses_the_generator_and_checks_out(rng):
    x, Wq, Wo, bo = arrays(rng)
    y1, _ = mssa_fast_forward(x, Wq, Wo, bo, 2, dropout=0.5, rng=np.random.default_rng(3))
    y2, _ = mssa_fast_forward(x, Wq, Wo, bo, 2, dropout=0.5, rng=np.random.default_rng(3))
    np.testing.assert_array_equal(y1, y2)
    assert not np.allclose(y1, mssa_loop(x, Wq, Wo, bo, 2))
    y3, _ = mssa_fast_forward(x, Wq, Wo, bo, 2, dropout=0.5, rng=np.random.default_rng(3),
                              training=False)
    np.testing.assert_allclose(y3, mssa_loop(x, Wq, Wo, bo, 2))
    # a fixed mask makes forward deterministic, so the backward can be checked
    check_backward(lambda *a: mssa_fast_forward(*a, 2, dropout=0.3,
                                                rng=np.random.default_rng(7)),
                   mssa_fast_backward, [x, Wq, Wo, bo])


@pytest.mark.parametrize("forward", [mssa_forward, mssa_fast_forward])
def test_mssa_errors(rng, forward):
    x, Wq, Wo, bo = arrays(rng)
    with pytest.raises(ValueError, match="features"):
        forward(x[..., :4], Wq, Wo, bo, 2)
    with pytest.raises(ValueError, match="not divisible by heads"):
        forward(x, Wq, Wo, bo, 4)
    with pytest.raises(ValueError, match="heads must be a positive integer"):
        forward(x, Wq, Wo, bo, 0)
    with pytest.raises(ValueError, match="3-dimensional"):
        forward(x[0], Wq, Wo, bo, 2)
    with pytest.raises(ValueError, match=r"mssa: x has no tokens \(shape \(\d+, 0, \d+\)\)"):
        forward(x[:, :0], Wq, Wo, bo, 2)


def ista_three_products(x, W, eta=0.1, lam=0.1):
    """The official form: ReLU(x + eta (x W - x W^T W) - eta lambda)."""
    return np.maximum(x + eta * (x @ W - (x @ W.T) @ W) - eta * lam, 0)


def test_ista_forward_matches_official_form(rng):
    x, W = rng.standard_normal((2, 5, 6)), 0.4 * rng.standard_normal((6, 6))
    for eta, lam in [(0.1, 0.1), (0.3, 0.5)]:
        y, _ = ista_forward(x, W, eta, lam)
        np.testing.assert_allclose(y, ista_three_products(x, W, eta, lam), rtol=1e-12,
                                   atol=1e-13)
    assert (y == 0).any() and (y > 0).any()


def test_ista_forward_keeps_float32_and_nan(rng):
    """The in-place ReLU keeps the dtype, and a NaN token stays NaN (as np.maximum)."""
    x, W = rng.standard_normal((2, 5, 6)).astype(np.float32), rng.standard_normal((6, 6))
    x[1, 2, 3] = np.nan
    y, _ = ista_forward(x, (0.4 * W).astype(np.float32))
    assert y.dtype == np.float32
    assert np.isnan(y[1, 2]).all() and not np.isnan(np.delete(y.reshape(10, 6), 7, 0)).any()


def test_ista_backward_finite_differences(rng):
    x, W = rng.standard_normal((2, 5, 6)), 0.4 * rng.standard_normal((6, 6))
    check_backward(lambda x, W: ista_forward(x, W, 0.2, 0.1), ista_backward, [x, W])


def test_ista_errors(rng):
    with pytest.raises(ValueError, match="square"):
        ista_forward(rng.standard_normal((2, 6)), rng.standard_normal((6, 5)))
    with pytest.raises(ValueError, match="expected 6"):
        ista_forward(rng.standard_normal((2, 5)), rng.standard_normal((6, 6)))


def test_modules_whole_layer_gradient_check(rng):
    attn = PreNorm(6, MSSA(6, heads=2, dim_head=3, dtype="float64", seed=0), dtype="float64")
    ista = PreNorm(6, ISTA(6, dtype="float64", seed=1), dtype="float64")
    assert set(attn.state_dict()) == {"norm.weight", "norm.bias", "fn.qkv.weight",
                                      "fn.to_out.0.weight", "fn.to_out.0.bias"}
    assert set(ista.state_dict()) == {"norm.weight", "norm.bias", "fn.weight"}
    x = rng.standard_normal((2, 5, 6))
    check_module(attn, [x])
    check_module(ista, [x])
    causal = MSSA(6, heads=3, dim_head=2, causal=True, dtype="float64", seed=0)
    check_module(causal, [x])


def test_mssa_module_subspaces_are_qkv_blocks():
    m = MSSA(6, heads=2, dim_head=3, seed=0)
    U = m.subspaces()
    W = m.state_dict()["qkv.weight"]
    np.testing.assert_array_equal(U[1], W[3:6].T)


def test_mssa_module_backward_before_forward():
    with pytest.raises(RuntimeError, match="before forward"):
        MSSA(6, 2, 3).backward(np.zeros((1, 2, 6)))
    with pytest.raises(RuntimeError, match="before forward"):
        ISTA(6).backward(np.zeros((1, 2, 6)))


@pytest.mark.gpu
def test_numpy_cupy_agree_float32(xp, rng):
    x, Wq, Wo, bo = (a.astype(np.float32) for a in arrays(rng))
    dev = [backend.to_device(a, backend.backend_name(xp.zeros(1))) for a in (x, Wq, Wo, bo)]
    g = rng.standard_normal(x.shape).astype(np.float32)
    for fwd, bwd in [(mssa_forward, mssa_backward), (mssa_fast_forward, mssa_fast_backward)]:
        y_np, c_np = fwd(x, Wq, Wo, bo, 2, causal=True)
        y_xp, c_xp = fwd(*dev, 2, causal=True)
        np.testing.assert_allclose(backend.to_numpy(y_xp), y_np, rtol=1e-4, atol=1e-5)
        for a, b in zip(bwd(g, c_np), bwd(backend.to_device(g, "cupy") if xp is not np else g,
                                          c_xp)):
            np.testing.assert_allclose(backend.to_numpy(b), a, rtol=1e-3, atol=1e-4)
    W = 0.4 * rng.standard_normal((6, 6)).astype(np.float32)
    y1, _ = ista_forward(x, W)
    y2, _ = ista_forward(dev[0], backend.to_device(W, backend.backend_name(dev[0])))
    np.testing.assert_allclose(backend.to_numpy(y2), y1, rtol=1e-4, atol=1e-5)


def test_crate_layer_is_residual_mssa_then_ista(rng):
    from whitebox.nn import CRATELayer
    layer = CRATELayer(6, heads=2, dim_head=3, dtype="float64", seed=0)
    assert set(layer.state_dict()) == {
        "0.norm.weight", "0.norm.bias", "0.fn.qkv.weight", "0.fn.to_out.0.weight",
        "0.fn.to_out.0.bias", "1.norm.weight", "1.norm.bias", "1.fn.weight"}
    x = rng.standard_normal((2, 5, 6))
    expect = layer.ista(x + layer.attn(x))
    np.testing.assert_allclose(layer(x), expect, rtol=1e-14)
    check_module(layer, [x], tol=1e-6, floor=1e-4)


# ------------------------------------------------------------ incremental decoding
@pytest.mark.parametrize("split", [(1, 1, 1, 1, 1), (2, 3), (5,), (3, 1, 1)])
def test_mssa_decode_equals_causal_mssa_on_the_whole_sequence(rng, split):
    """Feeding the tokens in chunks with the cached projections gives the rows of the
    causal MSSA of all of them, and the cache is the projection of all of them."""
    from whitebox.functional import mssa_decode
    x, Wq, Wo, bo = arrays(rng)
    y_full, cache = mssa_forward(x, Wq, Wo, bo, 2, causal=True)
    past, start = None, 0
    for t in split:
        y, past = mssa_decode(x[:, start:start + t], past, Wq, Wo, bo, 2)
        np.testing.assert_allclose(y, y_full[:, start:start + t], rtol=1e-12, atol=1e-13)
        start += t
    np.testing.assert_allclose(past, cache["w"], rtol=1e-14)


def test_mssa_decode_without_the_mask_sees_every_token(rng):
    from whitebox.functional import mssa_decode
    x, Wq, Wo, bo = arrays(rng)
    y, _ = mssa_decode(x, None, Wq, Wo, bo, 2, causal=False)
    np.testing.assert_allclose(y, mssa_loop(x, Wq, Wo, bo, 2), rtol=1e-12, atol=1e-13)
    y_last, _ = mssa_decode(x[:, 3:], mssa_forward(x[:, :3], Wq, Wo, bo, 2)[1]["w"], Wq, Wo,
                            bo, 2, causal=False)
    np.testing.assert_allclose(y_last, y[:, 3:], rtol=1e-12, atol=1e-13)
