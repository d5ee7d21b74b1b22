"""The CRATE classifier: official numbers, whole-model gradients, training sanity, errors."""
import math

import numpy as np
import pytest

import whitebox as wb
from whitebox.gradcheck import check_module
from whitebox.models import CRATE, crate_base, crate_large, crate_small, crate_tiny

from reference_crate import numpy_crate_logits

TINY = dict(image_size=8, patch_size=4, num_classes=3, dim=6, depth=2, heads=2, dim_head=3,
            channels=2)


def tiny(dtype="float64", **kw):
    return CRATE(**{**TINY, **kw}, dtype=dtype, seed=1)


def images(B=2, C=2, S=8, seed=0, dtype="float64"):
    return np.random.default_rng(seed).standard_normal((B, C, S, S)).astype(dtype)


# ------------------------------------------------------------------ structure
@pytest.mark.parametrize("factory, count", [(crate_tiny, 6_090_856), (crate_small, 13_116_328),
                                            (crate_base, 22_796_008), (crate_large, 77_641_192)])
def test_official_parameter_counts(factory, count):
    assert factory().num_params() == count


def test_official_state_dict_names_and_shapes():
    m = tiny()
    sd = m.state_dict()
    expect = {"cls_token": (1, 1, 6), "pos_embedding": (1, 5, 6),
              "to_patch_embedding.1.weight": (32,), "to_patch_embedding.2.weight": (6, 32),
              "to_patch_embedding.3.bias": (6,),
              "transformer.layers.1.0.norm.weight": (6,),
              "transformer.layers.1.0.fn.qkv.weight": (6, 6),
              "transformer.layers.1.0.fn.to_out.0.weight": (6, 6),
              "transformer.layers.1.0.fn.to_out.0.bias": (6,),
              "transformer.layers.1.1.norm.bias": (6,),
              "transformer.layers.1.1.fn.weight": (6, 6),
              "mlp_head.0.weight": (6,), "mlp_head.1.weight": (3, 6), "mlp_head.1.bias": (3,)}
    for k, shape in expect.items():
        assert sd[k].shape == shape, k
    assert len(sd) == 2 + 6 + 2 * 8 + 4
    assert list(m.grads()) == list(sd)


def test_single_head_full_width_has_no_output_projection():
    m = tiny(heads=1, dim_head=6)
    assert not any("to_out" in k for k in m.state_dict())


def test_init_follows_official_distributions():
    m = crate_tiny(num_classes=10)
    sd = m.state_dict()
    W = sd["transformer.layers.0.1.fn.weight"]
    bound = math.sqrt(6 / 384)
    assert W.dtype == np.float32 and np.abs(W).max() <= bound and np.abs(W).max() > 0.95 * bound
    assert abs(sd["pos_embedding"].std() - 1) < 0.02
    q = sd["transformer.layers.0.0.fn.qkv.weight"]
    assert np.abs(q).max() <= 1 / math.sqrt(384)


# ------------------------------------------------------------------ numbers
@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_logits_match_independent_loop_reference(pool):
    m = tiny(pool=pool)
    x = images()
    ref = numpy_crate_logits(m.state_dict(), x, depth=2, heads=2, patch=4, pool=pool)
    np.testing.assert_allclose(m(x), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_logits_and_gradients_match_pytorch(pool):
    torch = pytest.importorskip("torch")
    m = tiny(pool=pool, depth=3, heads=3, dim_head=2)
    x = images(B=3)
    labels = np.array([0, 2, 1])
    from whitebox.torch_twins.crate import torch_model_from
    tm = torch_model_from(m)
    x_t = torch.tensor(x, requires_grad=True)
    logits_t = tm(x_t)
    loss_t = torch.nn.functional.cross_entropy(logits_t, torch.tensor(labels))
    loss_t.backward()
    sd_t = dict(tm.named_parameters())

    logits = m(x)
    loss, dlogits = wb.losses.cross_entropy(logits, labels)
    m.zero_grad()
    dx = m.backward(dlogits)
    np.testing.assert_allclose(logits, logits_t.detach().numpy(), rtol=1e-12, atol=1e-13)
    assert abs(loss - loss_t.item()) < 1e-13
    np.testing.assert_allclose(dx, x_t.grad.numpy(), rtol=1e-9, atol=1e-13)
    for k, g in m.grads().items():
        np.testing.assert_allclose(g, sd_t[k].grad.numpy(), rtol=1e-9, atol=1e-13, err_msg=k)


@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_whole_model_gradient_check(pool):
    m = tiny(pool=pool)
    labels = np.array([0, 2])
    errs = check_module(m, [images()], loss=lambda z: wb.losses.cross_entropy(z, labels),
                        tol=1e-6, floor=1e-4)
    assert set(errs) == set(m.state_dict()) | {"input 0"}


def test_shifted_patch_tokens_gradient_check_and_names():
    """patch_shift: the embedding reads 5x wider patches, every name stays, gradients hold
    (the input gradient too, through the shifted copies)."""
    m = tiny(patch_shift=1)
    labels = np.array([0, 2])
    errs = check_module(m, [images()], loss=lambda z: wb.losses.cross_entropy(z, labels),
                        tol=1e-6, floor=1e-4)
    assert set(errs) == set(m.state_dict()) | {"input 0"}
    assert list(m.state_dict()) == list(tiny().state_dict())
    assert m.state_dict()["to_patch_embedding.2.weight"].shape == (6, 5 * 32)
    assert m.config["patch_shift"] == 1 and "patch_shift" not in tiny().config
    for bad in (-1, 8, 1.5, True):
        with pytest.raises(ValueError, match="patch_shift must be an integer"):
            tiny(patch_shift=bad)


def test_whole_model_gradient_check_random_upstream():
    # tol as test_whole_model_gradient_check: the central differences' round-off,
    # about eps |L| / h, reaches 3e-11 on this model's entries near 1e-5 (3 tol * floor
    # at tol 1e-7), so at 1e-7 whether an entry passes turns on the forward's last bits
    check_module(tiny(), [images(seed=3)], tol=1e-6, floor=1e-4)


def test_float32_matches_float64():
    m64 = tiny()
    m32 = tiny(dtype="float32")
    x = images()
    out32 = m32(x.astype(np.float32))
    assert out32.dtype == np.float32
    np.testing.assert_allclose(out32, m64(x), rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------ training sanity
def test_loss_at_init_is_near_log_classes():
    m = CRATE(28, 4, 10, dim=96, depth=4, heads=4, dim_head=24, channels=1)
    x = np.random.default_rng(0).random((64, 1, 28, 28), dtype=np.float32)
    labels = np.random.default_rng(1).integers(0, 10, 64)
    loss, _ = wb.losses.cross_entropy(m(x), labels)
    assert abs(loss - math.log(10)) < 0.5


def test_overfits_one_batch():
    m = CRATE(8, 4, 4, dim=16, depth=2, heads=2, dim_head=8, channels=1, seed=0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 1, 8, 8)).astype(np.float32)
    y = rng.integers(0, 4, 16)
    params, grads = m.parameters(), m.grads()
    state = {k: (np.zeros_like(p), np.zeros_like(p)) for k, p in params.items()}
    for t in range(1, 301):  # plain Adam, written out so the test needs only the model
        loss, d = wb.losses.cross_entropy(m(x), y)
        m.zero_grad()
        m.backward(d)
        for k, p in params.items():
            mom, vel = state[k]
            mom[:] = 0.9 * mom + 0.1 * grads[k]
            vel[:] = 0.999 * vel + 0.001 * grads[k] ** 2
            p -= 3e-3 * (mom / (1 - 0.9 ** t)) / (np.sqrt(vel / (1 - 0.999 ** t)) + 1e-8)
    assert loss < 0.05


# ------------------------------------------------------------------ features
def test_capture_and_attention_maps():
    m = tiny()
    x = images()
    m.forward(x, capture=True)
    cap = m.captured
    for key in ("mssa_in", "attention", "z_half", "ista_in", "z"):
        assert len(cap[key]) == 2
    assert cap["attention"][0].shape == (2, 2, 5, 5)
    np.testing.assert_allclose(cap["attention"][1].sum(-1), 1.0)
    assert cap["z"][0].shape == (2, 5, 6) and (cap["z"][0] >= 0).all()
    assert m.subspaces(0).shape == (2, 6, 3)
    # U_k^T LN(Z) is exactly the head slice of the qkv projection
    w = cap["mssa_in"][0] @ m.state_dict()["transformer.layers.0.0.fn.qkv.weight"].T
    np.testing.assert_allclose(cap["mssa_in"][0] @ m.subspaces(0)[1], w[..., 3:6])
    assert len(m.attention_maps()) == 2
    m.forward(x)
    assert m.captured is None


def test_dropout_is_identity_in_eval_and_random_in_train():
    m = tiny(dropout=0.3, emb_dropout=0.3)
    x = images()
    m.eval()
    np.testing.assert_array_equal(m(x), m(x))
    m.train()
    assert not np.allclose(m(x), m(x))


def test_seed_makes_identical_models():
    a, b = tiny(), tiny()
    for k, v in a.state_dict().items():
        np.testing.assert_array_equal(v, b.state_dict()[k])


# ------------------------------------------------------------------ errors
@pytest.mark.parametrize("kw, match", [
    (dict(image_size=10), "not divisible by patch_size"),
    (dict(heads=0), "heads must be a positive integer"),
    (dict(dim_head=-1), "dim_head must be a positive integer"),
    (dict(pool="max"), "pool must be"),
    (dict(depth=1.5), "depth must be a positive integer"),
])
def test_bad_config_errors(kw, match):
    with pytest.raises(ValueError, match=match):
        tiny(**kw)


@pytest.mark.parametrize("shape, match", [
    ((2, 3, 8, 8), "3 channels .*expected 2"), ((2, 2, 12, 12), "expected 8x8"),
    ((2, 8, 8), "4-dimensional"),
])
def test_bad_image_errors(shape, match):
    with pytest.raises(ValueError, match=match):
        tiny()(np.zeros(shape))


def test_nan_images_and_int_images_are_rejected():
    x = images()
    x[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        tiny()(x)
    with pytest.raises(TypeError, match="floating"):
        tiny()(np.zeros((2, 2, 8, 8), dtype=np.uint8))


def test_backward_before_forward_raises():
    with pytest.raises(RuntimeError, match="before forward"):
        tiny().backward(np.zeros((2, 3)))


@pytest.mark.slow
def test_whole_model_gradient_check_deeper_sampled():
    """A deeper, wider model with every parameter array sampled: python -m pytest --runslow."""
    m = CRATE(image_size=12, patch_size=4, num_classes=5, dim=16, depth=4, heads=4, dim_head=4,
              channels=3, dtype="float64", seed=2)
    x = np.random.default_rng(5).standard_normal((3, 3, 12, 12))
    labels = np.array([0, 4, 2])
    check_module(m, [x], loss=lambda z: wb.losses.cross_entropy(z, labels), tol=1e-6,
                 floor=1e-4, max_entries=40)


@pytest.mark.parametrize("kw, err, match", [
    (dict(dropout=2.0), ValueError, "dropout must be in"),
    (dict(emb_dropout=-0.1), ValueError, "dropout probability p must be in"),
    (dict(ista_step=0.0), ValueError, "ista_step must be in"),
    (dict(ista_lambda="a"), TypeError, "ista_lambda must be a real number"),
])
def test_bad_hyperparameters_fail_at_construction(kw, err, match):
    with pytest.raises(err, match=match):
        tiny(**kw)


def test_wrongly_shaped_upstream_gradient_is_named():
    m = tiny()
    m(images())
    with pytest.raises(ValueError, match=r"CRATE backward: dout has shape \(2, 5\), expected \(2, 3\)"):
        m.backward(np.zeros((2, 5)))


@pytest.mark.gpu
def test_numpy_and_cupy_models_agree_float32(xp):
    """The whole float32 model, forward, backward and one AdamW step, on both backends."""
    if xp is np:
        pytest.skip("compares NumPy with CuPy")
    from whitebox import backend
    m_np, m_gpu = tiny(dtype="float32"), tiny(dtype="float32").to("cupy")
    x = images(dtype="float32")
    labels = np.array([0, 2])
    with pytest.raises(TypeError, match="move them with whitebox.to_device"):
        m_gpu(x)
    out_np = m_np(x)
    out_gpu = m_gpu(backend.to_device(x, "cupy"))
    np.testing.assert_allclose(backend.to_numpy(out_gpu), out_np, rtol=1e-4, atol=1e-5)
    for m, out, y in ((m_np, out_np, labels), (m_gpu, out_gpu, backend.to_device(labels, "cupy"))):
        _, d = wb.losses.cross_entropy(out, y)
        m.zero_grad()
        m.backward(d)
        wb.optim.AdamW(m, lr=1e-3).step()
    for k, g in m_np.grads().items():
        np.testing.assert_allclose(backend.to_numpy(m_gpu.grads()[k]), g, rtol=1e-3, atol=1e-5,
                                   err_msg=k)
    for k, p in m_np.state_dict().items():
        np.testing.assert_allclose(backend.to_numpy(m_gpu.state_dict()[k]), p, rtol=1e-4,
                                   atol=1e-5, err_msg=k)


@pytest.mark.parametrize("kw", [dict(image_size=(28, 28, 1)), dict(patch_size=(7, 7, 1))])
def test_image_and_patch_sizes_are_ints_or_pairs(kw):
    args = dict(image_size=28, patch_size=7, num_classes=10, dim=16, depth=1, heads=2,
                dim_head=8, channels=1)
    args.update(kw)
    name = next(iter(kw))
    with pytest.raises(ValueError, match=f"{name} must be an int or a \\(height, width\\) pair"):
        CRATE(**args)


def test_finite_images_that_overflow_the_models_dtype_are_refused():
    """float64 images of 1e39 are finite but past float32's range: named, not a NaN loss."""
    big = images() * 1e39
    with pytest.raises(ValueError, match="images cast to the model's dtype float32.*NaN or inf"):
        tiny("float32")(big)
    assert np.isfinite(tiny("float64")(big)).all()       # float64 holds them


def test_non_finite_upstream_gradient_is_refused():
    m = tiny()
    logits = m(images())
    bad = np.ones_like(logits)
    bad[0, 1] = np.nan
    with pytest.raises(ValueError, match="dlogits contains NaN"):
        m.backward(bad)
