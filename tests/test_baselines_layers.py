"""The standard transformer's attention, MLP and block: a table of ops, then the Modules.

Each op of the table has a loop reference (one head, one query at a time)
and a float64 finite-difference check of its backward; the Modules get a
whole-module gradient check; PyTorch, where installed, is a second reference.
"""
import math

import numpy as np
import pytest

from whitebox.functional import attention as A
from whitebox.gradcheck import check_backward, check_module
from whitebox.nn import MLP, MultiHeadAttention, TransformerBlock

from common_checks import Op, assert_float32_matches_float64

DROP_P, DROP_SEED = 0.25, 5


def loop_sdpa(q, k, v, causal=False, keep=None):
    """Per batch, head and query: weights softmax(q.k_j / sqrt(p)) over the visible keys."""
    B, K, Nq, p = q.shape
    Nk = k.shape[2]
    out = np.zeros((B, K, Nq, p))
    for b in range(B):
        for h in range(K):
            for i in range(Nq):
                visible = range(Nk - Nq + i + 1) if causal else range(Nk)
                s = {j: float(q[b, h, i] @ k[b, h, j]) / math.sqrt(p) for j in visible}
                z = sum(math.exp(v_) for v_ in s.values())
                for j, sj in s.items():
                    w = math.exp(sj) / z
                    if keep is not None:
                        w *= keep[b, h, i, j] / (1 - DROP_P)
                    out[b, h, i] += w * v[b, h, j]
    return out


def loop_attention(x, W_qkv, b_qkv, W_proj, b_proj, heads, causal=False):
    d = W_proj.shape[0]
    qkv = x @ W_qkv.T + b_qkv
    q, k, v = (A.split_heads(qkv[..., i * d:(i + 1) * d], heads) for i in range(3))
    return A.merge_heads(loop_sdpa(q, k, v, causal)) @ W_proj.T + b_proj


def _keep_mask(shape):
    return np.random.default_rng(DROP_SEED).random(shape) >= DROP_P


def _qkv(nq, nk):
    return lambda rng: (rng.standard_normal((2, 3, nq, 4)), rng.standard_normal((2, 3, nk, 4)),
                        rng.standard_normal((2, 3, nk, 4)))


def _attn_inputs(rng):
    d = 6
    return (rng.standard_normal((2, 5, d)), 0.5 * rng.standard_normal((3 * d, d)),
            rng.standard_normal(3 * d), 0.5 * rng.standard_normal((d, d)), rng.standard_normal(d))


OPS = [
    Op("sdpa", _qkv(5, 5), A.sdpa_forward, A.sdpa_backward, loop_sdpa, (0, 1, 2)),
    Op("sdpa_causal", _qkv(5, 5), lambda q, k, v: A.sdpa_forward(q, k, v, causal=True),
       A.sdpa_backward, lambda q, k, v: loop_sdpa(q, k, v, True), (0, 1, 2)),
    Op("sdpa_causal_after_cache", _qkv(2, 6), lambda q, k, v: A.sdpa_forward(q, k, v, True),
       A.sdpa_backward, lambda q, k, v: loop_sdpa(q, k, v, True), (0, 1, 2)),
    Op("sdpa_dropout", _qkv(4, 4),
       lambda q, k, v: A.sdpa_forward(q, k, v, False, DROP_P, np.random.default_rng(DROP_SEED)),
       A.sdpa_backward,
       lambda q, k, v: loop_sdpa(q, k, v, False, _keep_mask((2, 3, 4, 4))), (0, 1, 2)),
    Op("sdpa_fast", _qkv(5, 5), A.sdpa_fast_forward, A.sdpa_fast_backward, loop_sdpa,
       (0, 1, 2)),
    Op("sdpa_fast_causal_after_cache", _qkv(2, 6),
       lambda q, k, v: A.sdpa_fast_forward(q, k, v, True), A.sdpa_fast_backward,
       lambda q, k, v: loop_sdpa(q, k, v, True), (0, 1, 2)),
    Op("sdpa_fast_dropout", _qkv(4, 4),
       lambda q, k, v: A.sdpa_fast_forward(q, k, v, False, DROP_P,
                                           np.random.default_rng(DROP_SEED)),
       A.sdpa_fast_backward,
       lambda q, k, v: loop_sdpa(q, k, v, False, _keep_mask((2, 3, 4, 4))), (0, 1, 2)),
    Op("attention", _attn_inputs, lambda *a: A.attention_forward(*a, heads=2),
       A.attention_backward, lambda *a: loop_attention(*a, heads=2), (0, 1, 2, 3, 4)),
    Op("attention_causal", _attn_inputs, lambda *a: A.attention_forward(*a, heads=3, causal=True),
       A.attention_backward, lambda *a: loop_attention(*a, heads=3, causal=True),
       (0, 1, 2, 3, 4)),
]
TABLE = [pytest.param(op, id=op.name) for op in OPS]


@pytest.mark.parametrize("op", TABLE)
def test_forward_matches_loop_reference(op):
    inputs = op.make_inputs(np.random.default_rng(1))
    out, _ = op.forward(*inputs)
    np.testing.assert_allclose(out, op.reference(*inputs), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("op", TABLE)
def test_backward_matches_finite_differences(op):
    inputs = op.make_inputs(np.random.default_rng(2))
    # floor: entries below 1e-2 are judged by their absolute error. Central differences
    # at h = 1e-5 carry ~eps |L| / h ~ 1e-10 of round-off, and some gradients are exactly
    # zero (a key bias shifts every score of a row alike: softmax ignores it)
    errors = check_backward(op.forward, op.backward, inputs, wrt=op.wrt, tol=1e-7, floor=1e-2)
    assert sorted(errors) == sorted(op.wrt) and max(errors.values()) <= 1e-7


@pytest.mark.parametrize("op", TABLE)
def test_float32_on_backend_matches_float64_numpy(op, xp):
    assert_float32_matches_float64(op, xp, grad_atol=1e-4)


@pytest.mark.parametrize("causal, dropout", [(False, 0.0), (True, 0.0), (False, DROP_P),
                                             (True, DROP_P)])
def test_fast_sdpa_equals_the_reference(causal, dropout):
    """The fast pair (what the Modules run) against the readable one, on strided views of a
    fused projection as the Modules give them, and with the gradients written into one
    (B, N, 3, K, p) buffer: the fused projection's gradient, merged."""
    rng = np.random.default_rng(3)
    B, N, K, p = 2, 6, 3, 4
    qkv = rng.standard_normal((B, N, 3 * K * p))
    q, k, v = A.split_qkv(qkv, K)
    assert not q.flags.c_contiguous                      # views into qkv
    dO = rng.standard_normal((B, K, N, p))
    O_ref, c_ref = A.sdpa_forward(q, k, v, causal, dropout, np.random.default_rng(DROP_SEED))
    O, c = A.sdpa_fast_forward(q, k, v, causal, dropout, np.random.default_rng(DROP_SEED))
    np.testing.assert_allclose(O, O_ref, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(A.merge_heads(O), A.merge_heads(O_ref), rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(c["attn"], c_ref["attn"], rtol=1e-13, atol=1e-13)
    parts, merged = A.heads_buffers(np, B, K, N, p, 3, qkv.dtype)
    got = A.sdpa_fast_backward(dO, c, out=parts)
    want = A.sdpa_backward(dO, c_ref)
    for g, w, part in zip(got, want, parts):
        assert g is part
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(merged, np.concatenate([A.merge_heads(w) for w in want], -1),
                               rtol=1e-12, atol=1e-13)


def test_causal_attention_ignores_the_future(rng):
    """Changing token t changes no output before t."""
    x = rng.standard_normal((1, 6, 6))
    args = (rng.standard_normal((18, 6)), None, rng.standard_normal((6, 6)), None, 2)
    y1, _ = A.attention_forward(x, *args, causal=True)
    x[:, 4] += 1.0
    y2, _ = A.attention_forward(x, *args, causal=True)
    np.testing.assert_array_equal(y1[:, :4], y2[:, :4])
    assert not np.allclose(y1[:, 4:], y2[:, 4:])


def test_attention_rejects_a_misshaped_qkv_weight(rng):
    with pytest.raises(ValueError, match=r"W_qkv has shape \(12, 6\), expected \(3 d, d\)"):
        A.attention_forward(rng.standard_normal((1, 3, 6)), rng.standard_normal((12, 6)), None,
                            rng.standard_normal((6, 6)), None, 2)


# ------------------------------------------------------------------ Modules

@pytest.mark.parametrize("norm", ["pre", "post"])
@pytest.mark.parametrize("causal", [False, True])
def test_transformer_block_passes_check_module(rng, norm, causal):
    block = TransformerBlock(8, 2, mlp_ratio=2.0, norm=norm, causal=causal, dtype="float64",
                             seed=1)
    errors = check_module(block, [rng.standard_normal((2, 4, 8))], tol=1e-6, floor=1e-2)
    assert len(errors) == 13 and max(errors.values()) < 1e-6


def test_block_without_bias_has_weight_only_norms(rng):
    block = TransformerBlock(8, 2, bias=False, qkv_bias=False, eps=1e-5, dtype="float64",
                             names=dict(norm1="ln_1", norm2="ln_2", qkv="c_attn", proj="c_proj",
                                        fc1="c_fc", fc2="c_proj"))
    assert sorted(block.state_dict()) == ["attn.c_attn.weight", "attn.c_proj.weight",
                                          "ln_1.weight", "ln_2.weight", "mlp.c_fc.weight",
                                          "mlp.c_proj.weight"]
    errors = check_module(block, [rng.standard_normal((2, 3, 8))], tol=1e-6, floor=1e-2)
    assert max(errors.values()) < 1e-6


def test_block_names_are_timms(rng):
    block = TransformerBlock(8, 2)
    assert sorted(block.state_dict()) == sorted(
        f"{m}.{p}" for m in ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2")
        for p in ("weight", "bias"))
    assert block.num_params() == 4 * 8 + (24 * 8 + 24) + (8 * 8 + 8) + 2 * (32 * 8) + 32 + 8


def test_attention_step_with_cache_equals_the_full_causal_forward(rng):
    attn = MultiHeadAttention(8, 2, causal=True, dtype="float64", seed=3)
    x = rng.standard_normal((2, 5, 8))
    full = attn(x)
    y1, past = attn.step(x[:, :3], None)
    y2, past = attn.step(x[:, 3:4], past)
    y3, past = attn.step(x[:, 4:], past)
    np.testing.assert_allclose(np.concatenate([y1, y2, y3], axis=1), full, atol=1e-13)
    assert past[0].shape == (2, 2, 5, 4)


def test_module_dropout_draws_from_its_generator(rng):
    attn = MultiHeadAttention(8, 2, attn_drop=0.5, proj_drop=0.1, dtype="float64", seed=3)
    mlp = MLP(8, 16, dropout=0.2, dtype="float64", seed=4)
    x = rng.standard_normal((2, 3, 8))
    assert attn.draws_in_training() and mlp.draws_in_training()
    a, b = attn(x), attn(x)
    assert not np.allclose(a, b)
    attn.eval()
    np.testing.assert_array_equal(attn(x), attn(x))


# ------------------------------------------------------------------ PyTorch

def test_block_equals_torch(rng):
    torch = pytest.importorskip("torch")
    from torch_baselines import TorchBlock
    for norm, causal in (("pre", False), ("post", True)):
        block = TransformerBlock(8, 2, norm=norm, causal=causal, eps=1e-6, dtype="float64",
                                 seed=2)
        twin = TorchBlock(8, 2, 4.0, norm, causal, 1e-6).double()
        twin.load_state_dict({k: torch.from_numpy(v.copy())
                              for k, v in block.state_dict().items()})
        x = rng.standard_normal((2, 5, 8))
        dout = rng.standard_normal((2, 5, 8))
        xt = torch.tensor(x, requires_grad=True)
        yt = twin(xt)
        (yt * torch.from_numpy(dout)).sum().backward()
        block.zero_grad()
        y = block(x)
        dx = block.backward(dout)
        np.testing.assert_allclose(y, yt.detach().numpy(), atol=1e-12)
        np.testing.assert_allclose(dx, xt.grad.numpy(), atol=1e-12)
        for name, g in block.grads().items():
            np.testing.assert_allclose(g, dict(twin.named_parameters())[name].grad.numpy(),
                                       atol=1e-12, err_msg=name)
