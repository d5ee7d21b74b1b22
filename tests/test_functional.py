"""One table of operators drives every functional test.

Each row gives the inputs, the functional pair, the gradients it returns,
and a reference forward written as a direct formula or a plain Python loop.
Three tests walk the table:
  * forward against the reference (float64, NumPy),
  * backward against central finite differences (float64),
  * float32 on each backend (NumPy; CuPy under the ``gpu`` marker) against
    the float64 NumPy result.
PyTorch, where installed, is a second reference in separate tests below.
"""
import math

import numpy as np
import pytest

from whitebox import functional as F
from whitebox.backend import get_array_module
from whitebox.gradcheck import check_backward
from whitebox.losses import cross_entropy, mse

from common_checks import Op, assert_float32_matches_float64
from test_crate_layers import mssa_loop

# --------------------------------------------------------------- references


def loop_linear(x, W, b=None):
    """y[..., o] = sum_k x[..., k] W[o, k] + b[o], one output entry at a time."""
    rows = x.reshape(-1, x.shape[-1])
    out = np.zeros((rows.shape[0], W.shape[0]))
    for i in range(rows.shape[0]):
        for o in range(W.shape[0]):
            out[i, o] = sum(rows[i, k] * W[o, k] for k in range(W.shape[1]))
            if b is not None:
                out[i, o] += b[o]
    return out.reshape(x.shape[:-1] + (W.shape[0],))


def textbook_layernorm(x, gamma, beta, eps=1e-5):
    """Per row: mean, biased variance, normalise, scale and shift."""
    rows = x.reshape(-1, x.shape[-1])
    out = np.zeros_like(rows)
    d = rows.shape[1]
    for i, row in enumerate(rows):
        mean = sum(row) / d
        var = sum((v - mean) ** 2 for v in row) / d
        out[i] = [(v - mean) / math.sqrt(var + eps) * g + b for v, g, b in zip(row, gamma, beta)]
    return out.reshape(x.shape)


def loop_softmax(x):
    rows = x.reshape(-1, x.shape[-1])
    out = np.zeros_like(rows)
    for i, row in enumerate(rows):
        e = [math.exp(v) for v in row]
        out[i] = [v / sum(e) for v in e]
    return out.reshape(x.shape)


def causal_loop_softmax(x):
    """Row i sees entries 0 .. i of the last axis (the causal mask of a square x)."""
    out = np.zeros_like(x)
    for idx in np.ndindex(*x.shape[:-1]):
        i = idx[-1]
        e = [math.exp(v) for v in x[idx][:i + 1]]
        out[idx][:i + 1] = [v / sum(e) for v in e]
    return out


def loop_mssa(x, W_qkv, W_out, b_out):
    """Two heads, per item and head from the definition (test_crate_layers' loop)."""
    return mssa_loop(x, W_qkv, W_out, b_out, 2)


def gelu_erf_reference(x):
    return np.vectorize(lambda v: 0.5 * v * (1.0 + math.erf(v / math.sqrt(2.0))))(x)


def gelu_tanh_reference(x):
    c = math.sqrt(2.0 / math.pi)
    return np.vectorize(lambda v: 0.5 * v * (1.0 + math.tanh(c * (v + 0.044715 * v ** 3))))(x)


def loop_patchify(images, p1, p2):
    """Patches row-major over the image; inside one, (row, col, channel), channel fastest."""
    B, C, H, W = images.shape
    h, w = H // p1, W // p2
    out = np.zeros((B, h * w, p1 * p2 * C))
    for b in range(B):
        for r in range(h):
            for c in range(w):
                n = r * w + c
                for i in range(p1):
                    for j in range(p2):
                        for ch in range(C):
                            out[b, n, (i * p2 + j) * C + ch] = images[b, ch, r * p1 + i, c * p2 + j]
    return out


def loop_unpatchify(patches, image_shape, p1, p2):
    B, C, H, W = image_shape
    w = W // p2
    images = np.zeros(image_shape)
    for b in range(B):
        for ch in range(C):
            for y in range(H):
                for x in range(W):
                    n = (y // p1) * w + x // p2
                    k = ((y % p1) * p2 + x % p2) * C + ch
                    images[b, ch, y, x] = patches[b, n, k]
    return images


def loop_cross_entropy(logits, labels, smoothing=0.0):
    """mean_i [ (1 - s) (-log p_i[y_i]) + s mean_c (-log p_ic) ]."""
    total = 0.0
    for z, y in zip(logits, labels):
        logz = math.log(sum(math.exp(v) for v in z))
        logp = [v - logz for v in z]
        total += (1 - smoothing) * -logp[y] + smoothing * -sum(logp) / len(z)
    return np.asarray(total / len(labels))


def loop_mse(pred, target):
    diffs = [(p - t) ** 2 for p, t in zip(pred.reshape(-1), target.reshape(-1))]
    return np.asarray(sum(diffs) / len(diffs))


# ------------------------------------------------------------------- table

DROP_P, DROP_SEED = 0.3, 7
def loop_shifted_patches(x, s):
    """Pixel by pixel: channel block k > 0 holds x read s pixels along diagonal k, zero outside."""
    B, C, H, W = x.shape
    out = np.zeros((B, 5 * C, H, W))
    out[:, :C] = x
    for k, (dy, dx) in enumerate(((-1, -1), (-1, 1), (1, -1), (1, 1)), start=1):
        for i in range(H):
            for j in range(W):
                if 0 <= i + dy * s < H and 0 <= j + dx * s < W:
                    out[:, k * C:(k + 1) * C, i, j] = x[:, :, i + dy * s, j + dx * s]
    return out


PATCH = (2, 3)                     # non-square, so p1 and p2 cannot be swapped unnoticed
IMAGE_SHAPE = (2, 3, 4, 6)         # (B, C, H, W) -> 2 x 2 patches of 2 x 3 pixels
IDS = np.array([[1, 3, 1], [0, 1, 3]])   # repeated ids: their rows must accumulate
LABELS = np.array([2, 0, 4, 2])


def away_from_zero(rng, shape):
    """Values with |v| >= 0.1, so ReLU's kink is never inside a finite difference."""
    return rng.choice([-1.0, 1.0], size=shape) * rng.uniform(0.1, 1.5, size=shape)


def _loss_pair(loss_fn):
    """Adapt loss(pred, ...) -> (value, dpred) to the (out, cache) / backward pair."""
    def forward(pred, *rest):
        value, dpred = loss_fn(pred, *rest)
        return get_array_module(pred).asarray(value, dtype=pred.dtype), dpred

    def backward(dout, dpred):
        return (dout * dpred, None)
    return forward, backward


def _n(*shape):
    return lambda rng: tuple(rng.standard_normal(s) for s in shape)


def _labels_like(z):
    return get_array_module(z).asarray(LABELS)


_ce_fwd, _ce_bwd = _loss_pair(lambda z: cross_entropy(z, _labels_like(z)))
_ces_fwd, _ces_bwd = _loss_pair(lambda z: cross_entropy(z, _labels_like(z), label_smoothing=0.1))
_mse_fwd, _mse_bwd = _loss_pair(mse)


def _causal(x):
    return F.causal_mask(x.shape[-2], x.shape[-1], x.dtype, get_array_module(x))


MSSA_INPUTS = _n((2, 5, 6), (6, 6), (6, 6), (6,))

OPS = [
    Op("linear_2d_bias", _n((5, 4), (3, 4), (3,)), F.linear_forward, F.linear_backward,
       loop_linear, (0, 1, 2)),
    Op("linear_2d_nobias", _n((5, 4), (3, 4)), lambda x, W: F.linear_forward(x, W),
       lambda d, c: F.linear_backward(d, c)[:2], loop_linear, (0, 1)),
    Op("linear_3d_bias", _n((2, 3, 4), (5, 4), (5,)), F.linear_forward, F.linear_backward,
       loop_linear, (0, 1, 2)),
    Op("linear_3d_nobias", _n((2, 3, 4), (5, 4)), lambda x, W: F.linear_forward(x, W),
       lambda d, c: F.linear_backward(d, c)[:2], loop_linear, (0, 1)),
    Op("layernorm", lambda rng: (rng.standard_normal((2, 3, 6)) * 2 + 0.5,
                                 1 + 0.3 * rng.standard_normal(6), rng.standard_normal(6)),
       F.layernorm_forward, F.layernorm_backward, textbook_layernorm, (0, 1, 2)),
    Op("relu", lambda rng: (away_from_zero(rng, (3, 7)),), F.relu_forward,
       lambda d, c: (F.relu_backward(d, c),), lambda x: np.vectorize(lambda v: max(v, 0.0))(x),
       (0,)),
    Op("gelu_none", _n((3, 7)), lambda x: F.gelu_forward(x, "none"),
       lambda d, c: (F.gelu_backward(d, c),), gelu_erf_reference, (0,)),
    Op("gelu_tanh", _n((3, 7)), lambda x: F.gelu_forward(x, "tanh"),
       lambda d, c: (F.gelu_backward(d, c),), gelu_tanh_reference, (0,)),
    Op("softmax", lambda rng: (2 * rng.standard_normal((2, 3, 5)),), F.softmax_forward,
       lambda d, c: (F.softmax_backward(d, c),), loop_softmax, (0,)),
    Op("softmax_causal", lambda rng: (2 * rng.standard_normal((2, 4, 4)),),
       lambda x: F.softmax_forward(x, _causal(x)),
       lambda d, c: (F.softmax_backward(d, c),), causal_loop_softmax, (0,)),
    # the fast path overwrites its arguments: copies, so the checks can call it again
    Op("softmax_fast", lambda rng: (2 * rng.standard_normal((2, 3, 5)),),
       lambda x: F.softmax_fast_forward(x.copy()),
       lambda d, c: (F.softmax_fast_backward(d.copy(), c),), loop_softmax, (0,)),
    Op("softmax_fast_causal", lambda rng: (2 * rng.standard_normal((2, 4, 4)),),
       lambda x: F.softmax_fast_forward(x.copy(), _causal(x)),
       lambda d, c: (F.softmax_fast_backward(d.copy(), c),), causal_loop_softmax, (0,)),
    Op("mssa", MSSA_INPUTS, lambda *a: F.mssa_forward(*a, 2), F.mssa_backward, loop_mssa,
       (0, 1, 2, 3)),
    Op("mssa_fast", MSSA_INPUTS, lambda *a: F.mssa_fast_forward(*a, 2), F.mssa_fast_backward,
       loop_mssa, (0, 1, 2, 3)),
    Op("dropout", _n((4, 6)),
       lambda x: F.dropout_forward(x, DROP_P, np.random.default_rng(DROP_SEED)),
       lambda d, c: (F.dropout_backward(d, c),),
       lambda x: x * (np.random.default_rng(DROP_SEED).random(x.shape) >= DROP_P) / (1 - DROP_P),
       (0,)),
    Op("embedding", lambda rng: (IDS, rng.standard_normal((5, 4))), F.embedding_forward,
       lambda d, c: (None, F.embedding_backward(d, c)),
       lambda ids, W: np.array([[W[i] for i in row] for row in ids]), (1,)),
    Op("patchify", _n(IMAGE_SHAPE), lambda x: F.patchify_forward(x, PATCH),
       lambda d, c: (F.patchify_backward(d, c),), lambda x: loop_patchify(x, *PATCH), (0,)),
    Op("unpatchify", _n((2, 4, 18)), lambda P: F.unpatchify_forward(P, IMAGE_SHAPE, PATCH),
       lambda d, c: (F.unpatchify_backward(d, c),),
       lambda P: loop_unpatchify(P, IMAGE_SHAPE, *PATCH), (0,)),
    Op("shifted_patches", _n(IMAGE_SHAPE), lambda x: F.shifted_patches_forward(x, 1),
       lambda d, c: (F.shifted_patches_backward(d, c),),
       lambda x: loop_shifted_patches(x, 1), (0,)),
    Op("cross_entropy", _n((4, 5)), _ce_fwd, _ce_bwd,
       lambda z: loop_cross_entropy(z, LABELS), (0,)),
    Op("cross_entropy_smoothed", _n((4, 5)), _ces_fwd, _ces_bwd,
       lambda z: loop_cross_entropy(z, LABELS, 0.1), (0,)),
    Op("mse", _n((3, 4), (3, 4)), _mse_fwd, _mse_bwd, loop_mse, (0,)),
]
TABLE = [pytest.param(op, id=op.name) for op in OPS]


@pytest.mark.parametrize("op", TABLE)
def test_forward_matches_reference(op):
    inputs = op.make_inputs(np.random.default_rng(1))
    out, _ = op.forward(*inputs)
    expected = op.reference(*inputs)
    assert out.shape == expected.shape
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("op", TABLE)
def test_backward_matches_finite_differences(op):
    inputs = op.make_inputs(np.random.default_rng(2))
    errors = check_backward(op.forward, op.backward, inputs, wrt=op.wrt, tol=1e-7)
    assert sorted(errors) == sorted(op.wrt)
    assert max(errors.values()) <= 1e-7


@pytest.mark.parametrize("op", TABLE)
def test_float32_on_backend_matches_float64_numpy(op, xp):
    """float32 on each backend (CuPy under the gpu marker) against float64 NumPy."""
    assert_float32_matches_float64(op, xp)


# ------------------------------------------------------ op-specific behaviour


def test_dropout_keeps_its_mask_in_the_cache(rng):
    x = rng.standard_normal((50, 40)) + 3.0          # no zeros, so kept entries are visible
    out, mask = F.dropout_forward(x, 0.25, np.random.default_rng(11))
    kept = out != 0
    np.testing.assert_allclose(mask, kept / 0.75)     # the scaled mask: 0 or 1/(1-p)
    np.testing.assert_allclose(out, x * mask)
    assert abs(kept.mean() - 0.75) < 0.03             # 2000 Bernoulli(0.75) draws
    dout = rng.standard_normal(x.shape)
    np.testing.assert_allclose(F.dropout_backward(dout, mask), dout * mask)


def test_dropout_mask_comes_from_the_generator(rng):
    x = rng.standard_normal((8, 9))
    a, _ = F.dropout_forward(x, 0.5, np.random.default_rng(1))
    b, _ = F.dropout_forward(x, 0.5, np.random.default_rng(1))
    c, _ = F.dropout_forward(x, 0.5, np.random.default_rng(2))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_dropout_is_the_identity_in_eval_mode_and_at_p_zero(rng):
    x = rng.standard_normal((4, 5))
    for out, cache in (F.dropout_forward(x, 0.5, np.random.default_rng(0), training=False),
                       F.dropout_forward(x, 0.0, np.random.default_rng(0))):
        assert out is x and cache is None
    dout = rng.standard_normal(x.shape)
    assert F.dropout_backward(dout, None) is dout


def test_embedding_backward_accumulates_repeated_ids(rng):
    W = rng.standard_normal((4, 3))
    ids = np.array([2, 0, 2, 2])
    out, cache = F.embedding_forward(ids, W)
    dout = rng.standard_normal((4, 3))
    dW = F.embedding_backward(dout, cache)
    np.testing.assert_allclose(dW[2], dout[0] + dout[2] + dout[3])
    np.testing.assert_allclose(dW[0], dout[1])
    np.testing.assert_array_equal(dW[[1, 3]], 0.0)
    naive = np.zeros_like(W)
    naive[ids] += dout          # keeps one row per id: the bug scatter-add avoids
    assert not np.allclose(naive, dW)


def test_patchify_order_on_a_hand_worked_image():
    """One 2x2 patch of a 2-channel image: (row, col, channel), channel fastest."""
    img = np.arange(8.0).reshape(1, 2, 2, 2)         # img[0, c, y, x] = 4c + 2y + x
    patches, _ = F.patchify_forward(img, 2)
    # (y, x, c) = (0,0,0) (0,0,1) (0,1,0) (0,1,1) (1,0,0) (1,0,1) (1,1,0) (1,1,1)
    np.testing.assert_array_equal(patches, [[[0, 4, 1, 5, 2, 6, 3, 7]]])


def test_patches_are_row_major_over_the_image():
    img = np.zeros((1, 1, 4, 6))
    for r in range(2):
        for c in range(3):
            img[0, 0, 2 * r:2 * r + 2, 2 * c:2 * c + 2] = 10 * r + c
    patches, _ = F.patchify_forward(img, 2)           # (1, 6, 4)
    np.testing.assert_array_equal(patches[0, :, 0], [0, 1, 2, 10, 11, 12])


def test_unpatchify_inverts_patchify(rng):
    img = rng.standard_normal(IMAGE_SHAPE)
    patches, _ = F.patchify_forward(img, PATCH)
    np.testing.assert_array_equal(F.unpatchify(patches, IMAGE_SHAPE, PATCH), img)


def test_functional_ops_keep_float32(rng):
    x = rng.standard_normal((3, 4)).astype(np.float32)
    g, b = np.ones(4, np.float32), np.zeros(4, np.float32)
    assert F.layernorm_forward(x, g, b)[0].dtype == np.float32
    assert F.gelu_forward(x, "none")[0].dtype == np.float32
    assert F.gelu_forward(x, "tanh")[0].dtype == np.float32
    assert F.softmax_forward(x)[0].dtype == np.float32
    assert F.dropout_forward(x, 0.5, np.random.default_rng(0))[0].dtype == np.float32


# ------------------------------------------------------------------ errors


def test_linear_rejects_wrong_number_of_input_features(rng):
    with pytest.raises(ValueError, match=r"x has 5 input features .*expected 4"):
        F.linear_forward(rng.standard_normal((2, 5)), rng.standard_normal((3, 4)))


def test_linear_rejects_bad_weight_and_bias(rng):
    x = rng.standard_normal((2, 4))
    with pytest.raises(ValueError, match=r"bias b has shape \(4,\), expected \(3,\)"):
        F.linear_forward(x, rng.standard_normal((3, 4)), rng.standard_normal(4))
    with pytest.raises(ValueError, match=r"W must be 2-dimensional"):
        F.linear_forward(x, rng.standard_normal(4))
    with pytest.raises(TypeError, match=r"x must be a floating-point array"):
        F.linear_forward(np.ones((2, 4), dtype=int), rng.standard_normal((3, 4)))


def test_layernorm_rejects_wrong_last_dimension(rng):
    with pytest.raises(ValueError, match=r"last dimension 5 .*expected 6"):
        F.layernorm_forward(rng.standard_normal((2, 5)), np.ones(6), np.zeros(6))
    with pytest.raises(ValueError, match=r"layernorm: beta has shape \(5,\), expected \(6,\)"):
        F.layernorm_forward(rng.standard_normal((2, 6)), np.ones(6), np.zeros(5))


def test_gelu_rejects_unknown_approximation(rng):
    with pytest.raises(ValueError, match=r"approximate must be 'none' or 'tanh', got 'fast'"):
        F.gelu_forward(rng.standard_normal(3), "fast")


def test_dropout_rejects_bad_p_and_missing_generator(rng):
    x = rng.standard_normal(3)
    with pytest.raises(ValueError, match=r"p must be in \[0, 1\), got 1.0"):
        F.dropout_forward(x, 1.0, np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"needs rng"):
        F.dropout_forward(x, 0.5)
    with pytest.raises(TypeError, match=r"rng must be a numpy.random.Generator, got int"):
        F.dropout_forward(x, 0.5, 3)


def test_embedding_rejects_bad_ids(rng):
    W = rng.standard_normal((5, 2))
    with pytest.raises(ValueError, match=r"ids must lie in \[0, 5\), found 5"):
        F.embedding_forward(np.array([0, 5]), W)
    with pytest.raises(ValueError, match=r"ids must lie in \[0, 5\), found -1"):
        F.embedding_forward(np.array([-1, 2]), W)
    with pytest.raises(TypeError, match=r"ids must be an integer array, got float64"):
        F.embedding_forward(np.array([0.0, 1.0]), W)


def test_patchify_rejects_bad_sizes(rng):
    with pytest.raises(ValueError, match=r"4x6 is not divisible by the patch size 3x3"):
        F.patchify_forward(rng.standard_normal((1, 1, 4, 6)), 3)
    with pytest.raises(ValueError, match=r"patch_size must be a positive int"):
        F.patchify_forward(rng.standard_normal((1, 1, 4, 6)), 0)
    with pytest.raises(ValueError, match=r"images must be 4-dimensional"):
        F.patchify_forward(rng.standard_normal((4, 6)), 2)
    with pytest.raises(ValueError, match=r"patches has shape \(2, 4, 17\), expected \(2, 4, 18\)"):
        F.unpatchify(rng.standard_normal((2, 4, 17)), IMAGE_SHAPE, PATCH)


# ------------------------------------------------------- PyTorch as reference


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


def _autograd(torch, fn, *arrays):
    """Run fn on float64 tensors; return out and the gradients of sum(out * dout)."""
    ts = [torch.tensor(a, requires_grad=True) for a in arrays]
    out = fn(*ts)
    dout = torch.tensor(np.random.default_rng(5).standard_normal(tuple(out.shape)))
    (out * dout).sum().backward()
    return out.detach().numpy(), [t.grad.numpy() for t in ts], dout.numpy()


@pytest.mark.torch
@pytest.mark.parametrize("bias", [True, False])
def test_linear_matches_torch(torch, rng, bias):
    x, W, b = rng.standard_normal((2, 3, 4)), rng.standard_normal((5, 4)), rng.standard_normal(5)
    args = (x, W, b) if bias else (x, W)
    out_t, grads_t, dout = _autograd(torch, torch.nn.functional.linear, *args)
    out, cache = F.linear_forward(*args)
    np.testing.assert_allclose(out, out_t, rtol=1e-12, atol=1e-12)
    for g, g_t in zip(F.linear_backward(dout, cache), grads_t):
        np.testing.assert_allclose(g, g_t, rtol=1e-12, atol=1e-12)


@pytest.mark.torch
def test_layernorm_matches_torch(torch, rng):
    x = rng.standard_normal((2, 3, 6)) * 3 + 1
    g, b = rng.standard_normal(6), rng.standard_normal(6)
    out_t, grads_t, dout = _autograd(
        torch, lambda x, g, b: torch.nn.functional.layer_norm(x, (6,), g, b, 1e-5), x, g, b)
    out, cache = F.layernorm_forward(x, g, b)
    np.testing.assert_allclose(out, out_t, rtol=1e-10, atol=1e-12)
    for ours, theirs in zip(F.layernorm_backward(dout, cache), grads_t):
        np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-12)


@pytest.mark.torch
@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_matches_torch(torch, rng, approximate):
    x = 3 * rng.standard_normal((4, 5))
    out_t, (dx_t,), dout = _autograd(
        torch, lambda x: torch.nn.functional.gelu(x, approximate=approximate), x)
    out, cache = F.gelu_forward(x, approximate)
    np.testing.assert_allclose(out, out_t, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(F.gelu_backward(dout, cache), dx_t, rtol=1e-12, atol=1e-14)


@pytest.mark.torch
def test_softmax_matches_torch(torch, rng):
    x = 4 * rng.standard_normal((2, 3, 7))
    out_t, (dx_t,), dout = _autograd(torch, lambda x: torch.softmax(x, dim=-1), x)
    out, cache = F.softmax_forward(x)
    np.testing.assert_allclose(out, out_t, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(F.softmax_backward(dout, cache), dx_t, rtol=1e-10, atol=1e-14)


def test_softmax_survives_large_logits():
    out, _ = F.softmax_forward(np.array([[1000.0, 1000.0, -1000.0]]))
    np.testing.assert_allclose(out, [[0.5, 0.5, 0.0]])
