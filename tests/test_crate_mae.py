"""CRATE-MAE: official numbers and names, hand-written gradients, the PyTorch twin, errors."""
import math

import numpy as np
import pytest

import whitebox as wb
from whitebox.functional import mssa_variant_backward, mssa_variant_forward
from whitebox.functional.masked_mse import masked_mse_backward, masked_mse_forward
from whitebox.functional.masking import mask_from_noise, mask_tokens_backward, \
    mask_tokens_forward
from whitebox.functional.patch_embed import patch_embed_backward, patch_embed_forward
from whitebox.functional.pos_embed import sincos_pos_embed_2d
from whitebox.gradcheck import check_backward, check_module
from whitebox.models import (CRATEMAE, mae_crate_base, mae_crate_large, mae_crate_small,
                             mae_crate_tiny)
from whitebox.nn import DecoderLayer

TINY = dict(image_size=8, patch_size=2, dim=8, depth=2, heads=2, decoder_depth=2, channels=2)


def tiny(dtype="float64", **kw):
    return CRATEMAE(**{**TINY, **kw}, dtype=dtype, seed=1)


def images(B=3, C=2, S=8, seed=0, dtype="float64"):
    return np.random.default_rng(seed).standard_normal((B, C, S, S)).astype(dtype)


def a_mask(B=3, L=16, seed=0):
    """A 0/1 mask removing 9 patches per image (different ones per image)."""
    return mask_from_noise(np.random.default_rng(seed).random((B, L)), 0.6)


# ------------------------------------------------------------------ structure
@pytest.mark.parametrize("factory, count", [
    (mae_crate_tiny, 11_555_328),
    pytest.param(mae_crate_small, 25_405_824, marks=pytest.mark.slow),
    pytest.param(mae_crate_base, 44_638_464, marks=pytest.mark.slow),
    pytest.param(mae_crate_large, 154_274_560, marks=pytest.mark.slow)])
def test_official_state_dict_totals(factory, count):
    assert factory().num_params() == count


def test_official_names_shapes_and_frozen_parameters():
    m = tiny()
    sd = m.state_dict()
    expect = {"cls_token": (1, 1, 8), "pos_embed": (1, 17, 8), "mask_token": (1, 1, 8),
              "decoder_pos_embed": (1, 17, 8),
              "patch_embed.proj.weight": (8, 2, 2, 2), "patch_embed.proj.bias": (8,),
              "blocks.1.layers.0.0.norm.weight": (8,),
              "blocks.1.layers.0.0.fn.qkv.weight": (8, 8),
              "blocks.1.layers.0.0.fn.to_out.0.weight": (8, 8),
              "blocks.1.layers.0.0.fn.to_out.0.bias": (8,),
              "blocks.1.layers.0.1.norm.bias": (8,), "blocks.1.layers.0.1.fn.weight": (8, 8),
              "norm.weight": (8,), "decoder_embed.weight": (8, 8), "decoder_embed.bias": (8,),
              "decoder_blocks.1.layers.0.0.norm.weight": (8,),
              "decoder_blocks.1.layers.0.0.fn.weight": (8, 8),
              "decoder_blocks.1.layers.0.1.norm.bias": (8,),
              "decoder_blocks.1.layers.0.1.fn.qkv.weight": (8, 8),
              "decoder_blocks.1.layers.0.1.fn.to_out.0.weight": (8, 8),
              "decoder_norm.bias": (8,), "decoder_pred.weight": (8, 8),
              "decoder_pred.bias": (8,)}
    for k, shape in expect.items():
        assert sd[k].shape == shape, k
    assert len(sd) == 4 + 2 + 2 * 8 + 2 + 2 + 2 * 8 + 2 + 2
    assert set(sd) - set(m.grads()) == {"pos_embed", "decoder_pos_embed", "decoder_embed.weight",
                                        "decoder_embed.bias"}
    assert list(m.trainable_parameters()) == list(m.grads())
    assert m.norm.eps == m.decoder_norm.eps == 1e-6
    assert m.encoder_layers()[0].attn.norm.eps == 1e-5
    assert m.encoder_layers()[0].ista.fn.ista_lambda == 0.5


def test_one_head_full_width_has_no_output_projection():
    sd = tiny(heads=1, decoder_heads=2).state_dict()
    assert not any(k.startswith("blocks") and "to_out" in k for k in sd)
    assert any(k.startswith("decoder_blocks") and "to_out" in k for k in sd)


def test_sincos_table_follows_the_formula():
    d, (h, w) = 8, (3, 4)
    table = sincos_pos_embed_2d(d, (h, w))
    assert table.shape == (h * w + 1, d) and not table[0].any()
    q = d // 4
    omega = 10000.0 ** (-np.arange(q) / q)
    for i in range(h):
        for j in range(w):
            expect = np.concatenate([np.sin(j * omega), np.cos(j * omega),
                                     np.sin(i * omega), np.cos(i * omega)])
            np.testing.assert_allclose(table[1 + i * w + j], expect, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(tiny().state_dict()["decoder_pos_embed"][0],
                                  sincos_pos_embed_2d(8, (4, 4)))
    with pytest.raises(ValueError, match="multiple of 4"):
        sincos_pos_embed_2d(6, (2, 2))


def test_init_follows_official_distributions():
    m = CRATEMAE(32, 4, dim=64, depth=1, heads=4, decoder_depth=1, channels=3)
    sd = m.state_dict()
    assert sd["cls_token"].dtype == np.float32
    for k in ("cls_token", "mask_token"):
        assert 0.01 < sd[k].std() < 0.03
    xavier = {"blocks.0.layers.0.0.fn.qkv.weight": math.sqrt(6 / 128),
              "decoder_blocks.0.layers.0.1.fn.to_out.0.weight": math.sqrt(6 / 128),
              "decoder_pred.weight": math.sqrt(6 / (64 + 48)),
              "patch_embed.proj.weight": math.sqrt(6 / (64 + 48))}
    kaiming = {"blocks.0.layers.0.1.fn.weight": math.sqrt(6 / 64),
               "decoder_blocks.0.layers.0.0.fn.weight": math.sqrt(6 / 64)}
    for k, bound in {**xavier, **kaiming}.items():
        assert bound * 0.9 < np.abs(sd[k]).max() <= bound, k
    assert not sd["decoder_pred.bias"].any()
    assert not sd["blocks.0.layers.0.0.fn.to_out.0.bias"].any()


# ------------------------------------------------------------------ masking and the loss
def test_mask_from_noise_is_the_official_argsort_rule():
    noise = np.random.default_rng(0).random((4, 16))
    mask = mask_from_noise(noise, 0.75)
    keep = int(16 * 0.25)
    for b in range(4):
        kept = np.sort(np.argsort(noise[b])[:keep])
        np.testing.assert_array_equal(np.flatnonzero(mask[b] == 0), kept)
    m = tiny()
    _, _, mask_model = m(images(B=4), noise=noise)
    np.testing.assert_array_equal(mask_model, mask)


def test_masked_mse_matches_its_formula():
    rng = np.random.default_rng(0)
    pred, patches = rng.standard_normal((2, 2, 3, 5))
    mask = np.array([[1.0, 0, 1], [0, 0, 1]])
    loss, _ = masked_mse_forward(pred, patches, mask)
    per = ((pred - patches) ** 2).mean(-1)
    assert loss.shape == () and np.isclose(loss, (per * mask).sum() / 3)
    loss, _ = masked_mse_forward(pred, patches, mask, norm_pix=True)
    t = (patches - patches.mean(-1, keepdims=True)) / np.sqrt(patches.var(-1, ddof=1,
                                                                         keepdims=True) + 1e-6)
    assert np.isclose(loss, ((((pred - t) ** 2).mean(-1)) * mask).sum() / 3)


# ------------------------------------------------------------------ gradients, piece by piece
@pytest.mark.parametrize("norm_pix", [False, True])
def test_masked_mse_backward(norm_pix):
    rng = np.random.default_rng(1)
    pred, patches = rng.standard_normal((2, 3, 4, 6))
    mask = a_mask(3, 4)
    check_backward(lambda p, x: masked_mse_forward(p, x, mask, norm_pix),
                   masked_mse_backward, [pred, patches])


def test_mask_tokens_backward():
    rng = np.random.default_rng(2)
    x, token = rng.standard_normal((3, 16, 5)), rng.standard_normal((1, 1, 5))
    check_backward(lambda a, t: mask_tokens_forward(a, a_mask(), t), mask_tokens_backward,
                   [x, token])


def test_patch_embed_is_the_convolution_and_its_backward():
    rng = np.random.default_rng(3)
    x, W, b = rng.standard_normal((2, 3, 4, 6)), rng.standard_normal((5, 3, 2, 3)), \
        rng.standard_normal(5)
    y, _ = patch_embed_forward(x, W, b)
    for i in range(2):          # a direct strided convolution
        for j in range(2):
            patch = x[:, :, 2 * i:2 * i + 2, 3 * j:3 * j + 3]
            np.testing.assert_allclose(y[:, i * 2 + j], np.einsum("bcrs,dcrs->bd", patch, W) + b)
    check_backward(patch_embed_forward, patch_embed_backward, [x, W, b])


@pytest.mark.parametrize("heads, project", [(2, True), (1, False)])
def test_mssa_without_softmax_backward(heads, project):
    rng = np.random.default_rng(4)
    d = 6
    x = rng.standard_normal((2, 5, d))
    W_qkv = rng.standard_normal((d, d)) * 0.5
    W_out, b_out = (rng.standard_normal((d, d)), rng.standard_normal(d)) if project else (None,
                                                                                         None)
    y, _ = mssa_variant_forward(x, W_qkv, W_out, b_out, heads, softmax=False)
    w = x @ W_qkv.T
    p = d // heads
    o = np.concatenate([(w[..., k * p:(k + 1) * p] @ w[..., k * p:(k + 1) * p].transpose(0, 2, 1)
                         * p ** -0.5) @ w[..., k * p:(k + 1) * p] for k in range(heads)], -1)
    np.testing.assert_allclose(y, o @ W_out.T + b_out if project else o, rtol=1e-12)
    inputs = [x, W_qkv] + ([W_out, b_out] if project else [])

    def fwd(x, Wq, Wo=None, bo=None):
        return mssa_variant_forward(x, Wq, Wo, bo, heads, softmax=False)
    check_backward(fwd, mssa_variant_backward, inputs)
    with pytest.raises(ValueError, match="causal=True needs softmax"):
        mssa_variant_forward(x, W_qkv, W_out, b_out, heads, causal=True, softmax=False)


@pytest.mark.parametrize("softmax", [True, False])
def test_decoder_layer_gradient_check(softmax):
    layer = DecoderLayer(6, 2, 3, softmax=softmax, dtype="float64", seed=0)
    x = np.random.default_rng(5).standard_normal((2, 4, 6))
    out = layer(x)
    h = layer.inverse_ista.norm(x) @ layer.inverse_ista.fn.param("weight").T
    np.testing.assert_allclose(out, h - layer.attn.fn(layer.attn.norm(h)))
    errs = check_module(layer, [x], tol=1e-7)
    assert len(errs) == 1 + len(layer.state_dict())


# ------------------------------------------------------------------ the whole model
@pytest.mark.parametrize("kw, entries", [
    (dict(), 12), (dict(norm_pix_loss=True, decoder_softmax=False), 6),
    pytest.param(dict(), None, marks=pytest.mark.slow)],
    ids=["official-sampled", "normpix-nosoftmax-sampled", "official-every-entry"])
def test_whole_model_gradient_check(kw, entries):
    m = tiny(**kw)
    # seed 4 keeps every ISTA pre-activation clear of the ReLU kink within h
    errs = check_module(m, [images(seed=4), a_mask(seed=4)], loss=lambda out: (out[0], 1.0),
                        tol=1e-6, floor=1e-4, max_entries=entries)
    assert set(errs) == set(m.grads()) | {"input 0"}


def test_backward_with_an_upstream_gradient_on_pred():
    m = tiny(depth=1, decoder_depth=1)
    x, mask = images(), a_mask()
    dpred = np.random.default_rng(6).standard_normal((3, 16, 8))

    def objective():
        loss, pred, _ = m(x, mask)
        return 0.5 * float(loss) + float((pred * dpred).sum())
    m(x, mask)
    m.zero_grad()
    m.backward(dloss=0.5, dpred=dpred)
    W = m.state_dict()["decoder_pred.weight"]
    g = m.grads()["decoder_pred.weight"][2, 3]
    W[2, 3] += 1e-5
    up = objective()
    W[2, 3] -= 2e-5
    down = objective()
    W[2, 3] += 1e-5
    assert abs((up - down) / 2e-5 - g) < 1e-7 * max(1, abs(g))


TWIN_CONFIGS = {"official": {}, "one-head": dict(heads=1, decoder_heads=1),
                "no-softmax": dict(decoder_softmax=False), "norm-pix": dict(norm_pix_loss=True),
                "ratio-0.5": dict(mask_ratio=0.5), "one-channel": dict(channels=1),
                "dec-heads-4": dict(decoder_heads=4, depth=3, decoder_depth=1)}


@pytest.mark.parametrize("kw", TWIN_CONFIGS.values(), ids=TWIN_CONFIGS.keys())
def test_loss_pred_and_every_gradient_match_the_pytorch_twin(kw):
    torch = pytest.importorskip("torch")
    from whitebox.torch_twins.crate_mae import torch_mae_from
    m = tiny(**kw)
    x = images(C=m.channels)
    noise = np.random.default_rng(7).random((3, 16))
    tm = torch_mae_from(m)
    x_t = torch.tensor(x, requires_grad=True)
    loss_t, pred_t, mask_t = tm(x_t, noise=torch.tensor(noise))
    loss_t.backward()
    loss, pred, mask = m(x, noise=noise)
    m.zero_grad()
    dx = m.backward()
    assert abs(float(loss) - loss_t.item()) < 1e-13
    np.testing.assert_array_equal(mask, mask_t.numpy())
    np.testing.assert_allclose(pred, pred_t.detach().numpy(), rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(dx, x_t.grad.numpy(), rtol=1e-9, atol=1e-14)
    params_t = dict(tm.named_parameters())
    # torch gives decoder_embed (never read) no gradient at all; whitebox freezes it
    assert set(m.grads()) == {k for k, p in params_t.items()
                              if p.requires_grad and p.grad is not None}
    for k, g in m.grads().items():
        np.testing.assert_allclose(g, params_t[k].grad.numpy(), rtol=1e-9, atol=1e-13,
                                   err_msg=k)


def test_given_mask_matches_the_twin():
    torch = pytest.importorskip("torch")
    from whitebox.torch_twins.crate_mae import torch_mae_from
    m = tiny()
    mask = a_mask()
    mask[0, :3] = 1                           # images may lose different numbers of patches
    loss, pred, _ = m(images(), mask)
    loss_t, pred_t, _ = torch_mae_from(m)(torch.tensor(images()), mask=torch.tensor(mask))
    assert abs(float(loss) - loss_t.item()) < 1e-13


def test_official_weights_load_and_export(tmp_path):
    torch = pytest.importorskip("torch")
    from whitebox.interop import export_pth, load_official
    from whitebox.torch_twins.crate_mae import TorchCRATEMAE
    torch.manual_seed(0)
    tm = TorchCRATEMAE(**TINY).double()
    torch.save({"model": tm.state_dict()}, tmp_path / "official.pth")
    m = load_official(tiny(), tmp_path / "official.pth")
    noise = np.random.default_rng(8).random((3, 16))
    loss, _, _ = m(images(), noise=noise)
    loss_t, _, _ = tm(torch.tensor(images()), noise=torch.tensor(noise))
    assert abs(float(loss) - loss_t.item()) < 1e-12
    export_pth(m, tmp_path / "mine.pth")
    tm2 = TorchCRATEMAE(**TINY).double()
    tm2.load_state_dict(torch.load(tmp_path / "mine.pth"))
    for k, v in tm.state_dict().items():
        assert torch.equal(v, tm2.state_dict()[k]), k


# ------------------------------------------------------------------ training machinery
def test_optimizers_never_move_the_frozen_tables_and_checkpoints_keep_them(tmp_path):
    from whitebox.checkpoint import load_checkpoint, save_checkpoint
    m = tiny(dtype="float32")
    before = {k: v.copy() for k, v in m.state_dict().items()}
    opt = wb.optim.AdamW(m, lr=1e-2, weight_decay=0.1)
    for _ in range(2):
        m(images(dtype="float32"))
        m.zero_grad()
        m.backward()
        opt.step()
    sd = m.state_dict()
    for k in ("pos_embed", "decoder_pos_embed"):
        np.testing.assert_array_equal(sd[k], before[k])
        assert k not in opt.state
    assert not np.array_equal(sd["mask_token"], before["mask_token"])
    assert "." in m.generators()
    save_checkpoint(tmp_path / "c.npz", m, opt, rng=m.generators())
    draw = m.rng.random(4)
    m2 = CRATEMAE(**TINY, dtype="float32", seed=5)
    gens = m2.generators()
    load_checkpoint(tmp_path / "c.npz", m2, wb.optim.AdamW(m2, lr=1e-2), rng=gens)
    np.testing.assert_array_equal(m2.rng.random(4), draw)
    for k, v in sd.items():
        np.testing.assert_array_equal(m2.state_dict()[k], v)


def test_noise_comes_from_the_model_generator():
    a, b = tiny(), tiny()
    _, _, m1 = a(images())
    _, _, m2 = b(images())
    _, _, m3 = a(images())
    np.testing.assert_array_equal(m1, m2)
    assert not np.array_equal(m1, m3)
    assert (m1.sum(1) == 16 - 4).all()


def test_learns_a_fixed_image_under_changing_masks():
    """Every image the same, masks differ: the removed pixels follow from position alone."""
    m = tiny(dtype="float32", dim=16, heads=2)
    x = np.repeat(images(B=1, dtype="float32"), 8, axis=0)
    mask = a_mask(8)
    opt = wb.optim.AdamW(m, lr=1e-2, weight_decay=0.0)
    first = None
    for _ in range(200):
        loss, _, _ = m(x, mask)
        first = float(loss) if first is None else first
        m.zero_grad()
        m.backward()
        opt.step()
    assert float(loss) < 0.1 * first


def test_float32_matches_float64():
    x, mask = images(), a_mask()
    l64, p64, _ = tiny()(x, mask)
    l32, p32, _ = tiny(dtype="float32")(x.astype(np.float32), mask)
    assert p32.dtype == np.float32 and l32.dtype == np.float32
    np.testing.assert_allclose(p32, p64, rtol=1e-4, atol=1e-4)


def test_encode_capture_and_reconstruct():
    m = tiny()
    x = images()
    assert m.encode(x).shape == (3, 17, 8)
    np.testing.assert_array_equal(m.encode(x, np.zeros((3, 16))), m.encode(x))
    assert not np.allclose(m.encode(x, a_mask()), m.encode(x))
    loss, pred, mask = m(x, capture=True)
    enc, dec = m.captured["encoder"], m.captured["decoder"]
    assert len(enc["mssa_in"]) == 2 and len(dec["mssa_in"]) == 2
    assert (enc["z"][1] >= 0).all() and dec["attention"][0].shape == (3, 2, 17, 17)
    assert m.encoder_subspaces(0).shape == m.decoder_subspaces(1).shape == (2, 8, 4)
    with pytest.raises(IndexError, match="ModuleList index 5 out of range for 2 modules"):
        m.encoder_subspaces(5)
    rec = m.reconstruct(pred, x, mask)
    target = wb.functional.patchify_forward(x, 2)[0]
    np.testing.assert_array_equal(wb.functional.patchify_forward(rec, 2)[0][mask == 0],
                                  target[mask == 0])
    np.testing.assert_allclose(wb.functional.patchify_forward(rec, 2)[0][mask == 1],
                               pred[mask == 1])
    # what does not belong together is named, not broadcast
    with pytest.raises(ValueError, match=r"pred must have shape \(B, L, P\) = \(3, 16, 8\)"):
        m.reconstruct(pred[:2], x, mask)
    with pytest.raises(ValueError, match=r"mask must have shape \(B, L\) = \(3, 16\)"):
        m.reconstruct(pred, x, mask[:, :-1])
    with pytest.raises(ValueError, match="images"):
        m.reconstruct(pred, x[:, :, :6], mask)
    with pytest.raises(RuntimeError, match="before forward"):
        m.encode(x)
        m.backward()


# ------------------------------------------------------------------ errors
@pytest.mark.parametrize("kw, err, match", [
    (dict(image_size=9), ValueError, "not divisible by patch_size"),
    (dict(mask_ratio=1.0), ValueError, r"mask_ratio must be in \[0, 1\)"),
    (dict(mask_ratio=-0.1), ValueError, r"mask_ratio must be in \[0, 1\)"),
    (dict(dim=6, heads=1, decoder_heads=1), ValueError, "multiple of 4"),
    (dict(decoder_heads=0), ValueError, "decoder_heads must be a positive integer"),
    (dict(heads=16), ValueError, "exceeds dim"),
    (dict(norm_pix_loss="yes"), TypeError, "norm_pix_loss must be True or False"),
    (dict(patch_size=1, channels=1, norm_pix_loss=True), ValueError, "at least 2 numbers"),
])
def test_bad_config_errors(kw, err, match):
    with pytest.raises(err, match=match):
        tiny(**kw)


def test_bad_mask_and_noise_errors():
    m, x = tiny(), images()
    bad_shape = np.zeros((3, 15))
    not_binary = a_mask() * 0.5
    everything = a_mask()
    everything[1] = 1
    nothing = np.zeros((3, 16))
    nan_noise = np.random.default_rng(0).random((3, 16))
    nan_noise[0, 0] = np.nan
    cases = [(dict(mask=bad_shape), r"mask must have shape \(B, L\) = \(3, 16\)"),
             (dict(mask=not_binary), "only 0 .* and 1"),
             (dict(mask=everything), r"removes every patch of image\(s\) \[1\]"),
             (dict(mask=nothing), "removes no patch.*0/0"),
             (dict(noise=nan_noise), "noise contains NaN"),
             (dict(noise=np.zeros((3, 4))), r"noise must have shape"),
             (dict(mask=a_mask(), noise=nan_noise), "either mask or noise")]
    for kw, match in cases:
        with pytest.raises(ValueError, match=match):
            m(x, **kw)
    with pytest.raises(ValueError, match=r"keeps int\(16 \* \(1 - 0.0\)\) = 16|keeps all 16"):
        tiny(mask_ratio=0.0)(x)
    with pytest.raises(ValueError, match="= 0 of 4 patches"):
        CRATEMAE(4, 2, 8, 1, 2, 1, channels=2, mask_ratio=0.8)(images(S=4))
    with pytest.raises(ValueError, match="expected 8x8"):
        m(images(S=4))


def test_backward_errors():
    m = tiny()
    with pytest.raises(RuntimeError, match="before forward"):
        m.backward()
    m(images())
    with pytest.raises(ValueError, match=r"CRATEMAE \(dpred\) backward: dout has shape"):
        m.backward(dpred=np.zeros((3, 16, 7)))


def test_module_level_frozen_parameters():
    """add_param(..., trainable=False): in the state dict, not in grads() or any optimizer."""
    lin = wb.nn.Linear(3, 2, dtype="float64")
    lin.add_param("table", np.ones((2, 2)), trainable=False)
    assert set(lin.state_dict()) == {"weight", "bias", "table"}
    assert set(lin.grads()) == set(lin.trainable_parameters()) == {"weight", "bias"}
    lin.load_state_dict({**lin.state_dict(), "table": np.full((2, 2), 3.0)})
    assert (lin.param("table") == 3).all()
    lin(np.ones((4, 3)))
    lin.backward(np.ones((4, 2)))
    wb.optim.SGD(lin, lr=1.0, weight_decay=0.5).step()
    assert (lin.param("table") == 3).all() and (lin.param("bias") != 0).any()
    errs = check_module(lin, [np.ones((4, 3))])
    assert "table" not in errs


@pytest.mark.gpu
def test_numpy_and_cupy_models_agree_float32(xp):
    """The float32 model, forward, backward and one AdamW step, on both backends."""
    if xp is np:
        pytest.skip("compares NumPy with CuPy")
    from whitebox import backend
    m_np, m_gpu = tiny(dtype="float32"), tiny(dtype="float32").to("cupy")
    x = images(dtype="float32")
    noise = np.random.default_rng(9).random((3, 16)).astype(np.float32)
    with pytest.raises(TypeError, match="move them with whitebox.to_device"):
        m_gpu(x)
    out_np = m_np(x, noise=noise)
    out_gpu = m_gpu(backend.to_device(x, "cupy"), noise=backend.to_device(noise, "cupy"))
    for a, b in zip(out_gpu, out_np):
        np.testing.assert_allclose(backend.to_numpy(a), b, rtol=1e-4, atol=1e-5)
    for m in (m_np, m_gpu):
        m.zero_grad()
        m.backward()
        wb.optim.AdamW(m, lr=1e-3).step()
    for k, g in m_np.grads().items():
        np.testing.assert_allclose(backend.to_numpy(m_gpu.grads()[k]), g, rtol=1e-3, atol=1e-5,
                                   err_msg=k)
    _, _, drawn = m_gpu(backend.to_device(x, "cupy"))      # noise from the host generator
    assert backend.backend_name(drawn) == "cupy"


def test_parameters_the_forward_never_reads_are_frozen():
    """pos_embed, decoder_pos_embed and decoder_embed stay put: no gradient, no decay."""
    from whitebox.optim import AdamW
    model = CRATEMAE(image_size=8, patch_size=4, dim=8, depth=1, heads=2, decoder_depth=1,
                     channels=1, seed=0)
    frozen = {"pos_embed", "decoder_pos_embed", "decoder_embed.weight", "decoder_embed.bias"}
    assert frozen <= set(model.state_dict()) and not frozen & set(model.grads())
    before = {k: model.state_dict()[k].copy() for k in frozen}
    opt = AdamW(model, lr=0.1, weight_decay=0.5)
    images = np.random.default_rng(0).random((2, 1, 8, 8), dtype=np.float32)
    model.zero_grad()
    model.forward(images)
    model.backward()
    opt.step()
    for k in frozen:
        np.testing.assert_array_equal(model.state_dict()[k], before[k], err_msg=k)


def test_patch_embedding_names_a_wrong_channel_count():
    from whitebox.nn import PatchEmbed
    with pytest.raises(ValueError, match=r"patch_embed: images have 1 channels \(shape "
                                         r"\(1, 1, 8, 8\)\), expected 3"):
        PatchEmbed(3, 16, 4)(np.zeros((1, 1, 8, 8), np.float32))


def test_finite_images_that_overflow_the_models_dtype_are_refused():
    big = images() * 1e39
    with pytest.raises(ValueError, match="images cast to the model's dtype float32.*NaN or inf"):
        tiny("float32")(big, mask=a_mask())
    with pytest.raises(ValueError, match="images cast to the model's dtype float32"):
        tiny("float32").encode(big)


def test_non_finite_upstream_gradients_are_refused():
    m = tiny()
    loss, pred, _ = m(images(), mask=a_mask())
    bad = np.zeros_like(pred)
    bad[0, 0, 0] = np.inf
    with pytest.raises(ValueError, match="dpred contains NaN or infinite"):
        m.backward(1.0, bad)
    m(images(), mask=a_mask())
    with pytest.raises(ValueError, match="dloss contains NaN or infinite"):
        m.backward(np.array(np.nan))
    m(images(), mask=a_mask())
    with pytest.raises(ValueError, match="dloss must be finite"):
        m.backward(np.nan)


def test_complex_and_string_masks_are_refused():
    m = tiny()
    mask = a_mask()
    with pytest.raises(TypeError, match="mask must be a boolean, integer or real array.*complex"):
        m(images(), mask=mask + 0.5j)
    with pytest.raises(TypeError, match="mask must be a boolean, integer or real array.*<U"):
        m(images(), mask=mask.astype(int).astype(str))
