"""CRATE-alpha: official numbers, the PyTorch twin, whole-model gradients, errors."""
import math

import numpy as np
import pytest

import whitebox as wb
from whitebox.gradcheck import check_module
from whitebox.models import (CRATEAlpha, crate_alpha_base16, crate_alpha_large14,
                             crate_alpha_small, crate_alpha_tiny)
from whitebox.nn import OvercompleteISTA, PatchConv

from test_crate import TINY, images          # the classifier's tiny configuration


def tiny(dtype="float64", **kw):
    return CRATEAlpha(**{**TINY, **kw}, dtype=dtype, seed=1)


# ------------------------------------------------------------------ structure
def test_official_parameter_count_base16():
    assert crate_alpha_base16().num_params() == 72_328_936


@pytest.mark.slow
def test_official_parameter_count_large14():
    assert crate_alpha_large14().num_params() == 253_650_920


def test_laptop_sizes_run():
    assert crate_alpha_tiny().num_params() == 169_994
    for m, shape in ((crate_alpha_tiny(), (2, 1, 28, 28)), (crate_alpha_small(), (1, 3, 32, 32))):
        out = m(np.zeros(shape, dtype=np.float32))
        assert out.shape == (shape[0], 10) and out.dtype == np.float32


def test_official_state_dict_names_shapes_and_eps():
    m = tiny()
    sd = m.state_dict()
    expect = {"conv1.weight": (6, 2, 4, 4), "conv1.bias": (6,), "cls_token": (1, 1, 6),
              "pos_embedding": (1, 5, 6),
              "transformer.layers.1.0.norm.weight": (6,),
              "transformer.layers.1.0.norm.bias": (6,),
              "transformer.layers.1.0.fn.qkv.weight": (6, 6),
              "transformer.layers.1.0.fn.to_out.0.weight": (6, 6),
              "transformer.layers.1.1.norm.weight": (6,),
              "transformer.layers.1.1.fn.D": (6, 24), "transformer.layers.1.1.fn.D1": (6, 24),
              "mlp_head.0.weight": (6,), "mlp_head.0.bias": (6,),
              "mlp_head.1.weight": (3, 6), "mlp_head.1.bias": (3,)}
    for k, shape in expect.items():
        assert sd[k].shape == shape, k
    assert len(sd) == 4 + 2 * 8 + 4          # no to_out bias, no stem LayerNorm
    assert not any("to_out.0.bias" in k or "to_patch_embedding" in k for k in sd)
    assert list(m.grads()) == list(sd)
    layer = m.transformer.layers[0]
    assert layer.attn.norm.eps == 1e-6 and layer.ista.norm.eps == 1e-6
    assert m.mlp_head[0].eps == 1e-5


def test_init_follows_official_distributions():
    m = crate_alpha_tiny()
    sd = m.state_dict()
    D = sd["transformer.layers.0.1.fn.D"]
    bound = math.sqrt(6 / 256)                     # torch fan-in of a (64, 256) tensor
    assert D.dtype == np.float32 and 0.95 * bound < np.abs(D).max() <= bound
    assert np.abs(sd["conv1.weight"]).max() <= 1 / 4      # 1/sqrt(C ph pw) = 1/sqrt(16)
    assert abs(sd["pos_embedding"].std() - 1) < 0.05


def test_single_head_full_width_has_no_output_projection():
    assert not any("to_out" in k for k in tiny(heads=1, dim_head=6).state_dict())


# ------------------------------------------------------------------ layers
def test_patch_conv_matches_a_direct_convolution(rng):
    conv = PatchConv(2, 5, (4, 2), dtype="float64", seed=0)
    x = rng.standard_normal((2, 2, 8, 6))
    W, b = conv.param("weight"), conv.param("bias")
    ref = np.zeros((2, 2 * 3, 5))
    for i in range(2):
        for j in range(3):
            patch = x[:, :, 4 * i:4 * i + 4, 2 * j:2 * j + 2]              # (B, C, 4, 2)
            ref[:, i * 3 + j] = np.einsum("bchw,dchw->bd", patch, W) + b
    np.testing.assert_allclose(conv(x), ref, rtol=1e-12, atol=1e-12)
    check_module(conv, [x])


def test_overcomplete_ista_module_decodes_the_codes(rng):
    ista = OvercompleteISTA(4, expansion=3, ista_step=0.5, ista_lambda=0.05, tied=False,
                            dtype="float64", seed=0)
    x = rng.standard_normal((2, 5, 4))
    y = ista(x)
    c = ista.last_codes
    assert c.shape == (2, 5, 12) and (c == 0).any() and (c > 0).any()
    np.testing.assert_allclose(y, c @ ista.param("D1").T)
    check_module(ista, [x])


# ------------------------------------------------------------------ numbers
def _torch_check(m, x, labels):
    torch = pytest.importorskip("torch")
    from whitebox.torch_twins.crate_alpha import torch_model_from
    tm = torch_model_from(m)
    x_t = torch.tensor(x, requires_grad=True)
    logits_t = tm(x_t)
    loss_t = torch.nn.functional.cross_entropy(logits_t, torch.tensor(labels))
    loss_t.backward()
    params_t = dict(tm.named_parameters())
    assert set(params_t) == set(m.state_dict())

    logits = m(x)
    loss, dlogits = wb.losses.cross_entropy(logits, labels)
    m.zero_grad()
    dx = m.backward(dlogits)
    np.testing.assert_allclose(logits, logits_t.detach().numpy(), rtol=1e-12, atol=1e-13)
    assert abs(loss - loss_t.item()) < 1e-13
    np.testing.assert_allclose(dx, x_t.grad.numpy(), rtol=1e-9, atol=1e-13)
    for k, g in m.grads().items():
        np.testing.assert_allclose(g, params_t[k].grad.numpy(), rtol=1e-9, atol=1e-13,
                                   err_msg=k)


@pytest.mark.parametrize("kw", [
    dict(depth=3, heads=3, dim_head=2),                     # several heads
    dict(heads=1, dim_head=6),                              # one head, no projection
    dict(expansion=2, ista_step=0.3, ista_lambda=0.05),     # other expansion, eta, lambda
    dict(expansion=1, dim_head=4, ista_step=0.5, ista_lambda=0.0),
])
def test_logits_and_gradients_match_the_pytorch_twin(kw):
    m = tiny(**kw)
    _torch_check(m, images(B=3), np.array([0, 2, 1]))


def test_pytorch_twin_with_three_channels_and_rectangular_patches():
    m = CRATEAlpha(image_size=(8, 6), patch_size=(4, 2), num_classes=4, dim=8, depth=2,
                   heads=2, dtype="float64", seed=3)
    _torch_check(m, images(B=2, C=3, S=8, seed=1)[..., :6].copy(), np.array([3, 1]))


def test_whole_model_gradient_check():
    m = tiny()
    labels = np.array([0, 2])
    errs = check_module(m, [images()], loss=lambda z: wb.losses.cross_entropy(z, labels),
                        tol=1e-6, floor=1e-4)
    assert set(errs) == set(m.state_dict()) | {"input 0"}


def test_whole_model_gradient_check_random_upstream_other_settings():
    m = tiny(expansion=2, ista_step=0.4, ista_lambda=0.02, heads=3, dim_head=2)
    check_module(m, [images(seed=3)], tol=1e-6, floor=1e-4)


def test_whole_model_gradient_check_theory_faithful_attention():
    m = tiny(attention=dict(out="tied", scale="rate", eps=1.0, kappa=0.5, update="exact"))
    assert not any("to_out" in k for k in m.state_dict())
    check_module(m, [images(seed=4)], tol=1e-6, floor=1e-4)


def test_float32_matches_float64():
    x = images()
    out32 = tiny(dtype="float32")(x.astype(np.float32))
    assert out32.dtype == np.float32
    np.testing.assert_allclose(out32, tiny()(x), rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------ training sanity
def test_loss_at_init_is_near_log_classes():
    m = crate_alpha_tiny()
    x = np.random.default_rng(0).random((32, 1, 28, 28), dtype=np.float32)
    loss, _ = wb.losses.cross_entropy(m(x), np.random.default_rng(1).integers(0, 10, 32))
    assert abs(loss - math.log(10)) < 1.0


def test_overfits_one_batch():
    m = CRATEAlpha(8, 4, 4, dim=16, depth=2, heads=2, channels=1, seed=0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 1, 8, 8)).astype(np.float32)
    y = rng.integers(0, 4, 16)
    opt = wb.optim.Adam(m, lr=3e-3)
    for _ in range(150):
        loss, d = wb.losses.cross_entropy(m(x), y)
        m.zero_grad()
        m.backward(d)
        opt.step()
    assert loss < 0.05


# ------------------------------------------------------------------ features
def test_capture_has_crates_keys_with_the_codes_as_ista_output():
    m = tiny()
    x = images()
    m.forward(x, capture=True)
    cap = m.captured
    for key in ("mssa_in", "attention", "z_half", "ista_in", "code", "z"):
        assert len(cap[key]) == 2, key
    assert cap["attention"][0].shape == (2, 2, 5, 5)
    assert cap["code"][1].shape == (2, 5, 24) and (cap["code"][1] >= 0).all()
    # Z^{l+1} = Z^{l+1/2} + c2 D1^T, and it feeds the next layer
    D1 = m.state_dict()["transformer.layers.0.1.fn.D1"]
    np.testing.assert_allclose(cap["z"][0], cap["z_half"][0] + cap["code"][0] @ D1.T)
    np.testing.assert_allclose(cap["mssa_in"][1],
                               m.transformer.layers[1].attn.norm(cap["z"][0]))
    rc, nonzero = wb.rate.layer_measures(m, x)
    assert len(rc) == 2 and all(np.isfinite(rc)) and all(0 < v < 1 for v in nonzero)
    assert nonzero[0] == float((cap["code"][0] != 0).mean())
    assert len(m.attention_maps()) == 2


# ------------------------------------------------------------------ errors
@pytest.mark.parametrize("kw, match", [
    (dict(expansion=0), r"expansion must be a positive integer \(atoms .*\), got 0"),
    (dict(expansion=1.5), "expansion must be a positive integer"),
    (dict(dim_head=None, heads=4), "dim=6 is not divisible by heads=4"),
    (dict(image_size=10), "not divisible by patch_size"),
    (dict(depth=0), "depth must be a positive integer"),
    (dict(attention=dict(update="newton")), "update must be one of"),
    (dict(attention=dict(temperature=2)), "unknown attention option"),
])
def test_bad_config_errors(kw, match):
    with pytest.raises(ValueError, match=match):
        tiny(**kw)


@pytest.mark.parametrize("shape, match", [
    ((2, 3, 8, 8), "3 channels .*expected 2"), ((2, 2, 12, 12), "expected 8x8"),
])
def test_bad_image_errors(shape, match):
    with pytest.raises(ValueError, match=match):
        tiny()(np.zeros(shape))


def test_backward_errors():
    with pytest.raises(RuntimeError, match="before forward"):
        tiny().backward(np.zeros((2, 3)))
    m = tiny()
    m(images())
    with pytest.raises(ValueError, match=r"CRATEAlpha backward: dout has shape \(2, 5\)"):
        m.backward(np.zeros((2, 5)))


def test_twin_refuses_the_variants():
    pytest.importorskip("torch")
    from whitebox.torch_twins.crate_alpha import torch_model_from
    with pytest.raises(ValueError, match="official attention only"):
        torch_model_from(tiny(attention=dict(out="tied")))


@pytest.mark.gpu
def test_numpy_and_cupy_agree_float32(xp):
    if xp is np:
        pytest.skip("compares NumPy with CuPy")
    from whitebox import backend
    m_np, m_gpu = tiny(dtype="float32"), tiny(dtype="float32").to("cupy")
    x = images(dtype="float32")
    out_np = m_np(x)
    out_gpu = m_gpu(backend.to_device(x, "cupy"))
    np.testing.assert_allclose(backend.to_numpy(out_gpu), out_np, rtol=1e-4, atol=1e-5)
    d = np.ones_like(out_np)
    m_np.backward(d)
    m_gpu.backward(backend.to_device(d, "cupy"))
    for k, g in m_np.grads().items():
        np.testing.assert_allclose(backend.to_numpy(m_gpu.grads()[k]), g, rtol=1e-3,
                                   atol=1e-5, err_msg=k)


def test_training_job_trains_crate_alpha(tmp_path):
    """python -m whitebox.train --model crate-alpha: the classifier task builds CRATE-alpha."""
    pytest.importorskip("sklearn")
    from whitebox import train
    out = tmp_path / "run"
    train.main(["--model", "crate-alpha", "--dataset", "digits", "--fast", "--epochs", "1",
                "--out", str(out), "--no-progress", "--no-figures"])
    import json
    config = json.loads((out / "config.json").read_text())
    assert config["model"] == "crate-alpha"
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 1 and 0 <= records[0]["test_acc"] <= 1
    with pytest.raises(ValueError, match="CRATE-alpha has no dropout"):
        train.main(["--model", "crate-alpha", "--dataset", "digits", "--fast",
                    "--dropout", "0.1", "--out", str(tmp_path / "bad"), "--no-progress",
                    "--debug"])


def test_official_pth_weights_load_as_they_are(tmp_path):
    """A state dict saved by the torch module (torch's own init) loads by name and agrees."""
    torch = pytest.importorskip("torch")
    from whitebox.interop import load_official
    from whitebox.torch_twins.crate_alpha import TorchCRATEAlpha
    torch.manual_seed(0)
    cfg = dict(image_size=8, patch_size=4, num_classes=3, dim=8, depth=2, heads=2)
    tm = TorchCRATEAlpha(**cfg).double()
    torch.save({"model": tm.state_dict()}, tmp_path / "alpha.pth")
    m = load_official(CRATEAlpha(**cfg, dtype="float64"), str(tmp_path / "alpha.pth"))
    x = images(C=3)
    np.testing.assert_allclose(m(x), tm(torch.tensor(x)).detach().numpy(), rtol=1e-12,
                               atol=1e-12)


def test_finite_images_that_overflow_the_models_dtype_are_refused():
    big = images() * 1e39
    with pytest.raises(ValueError, match="images cast to the model's dtype float32.*NaN or inf"):
        tiny("float32")(big)


def test_non_finite_upstream_gradient_is_refused():
    m = tiny()
    logits = m(images())
    with pytest.raises(ValueError, match="dlogits contains NaN"):
        m.backward(np.full_like(logits, np.nan))


def test_shares_the_image_model_base():
    """CRATE-alpha's input checks and cls plumbing come from the base, not borrowed methods."""
    from whitebox.models import CRATE
    from whitebox.models._image import ImageModel
    assert issubclass(CRATEAlpha, ImageModel) and issubclass(CRATE, ImageModel)
    assert "_check_images" not in vars(CRATEAlpha) and "_images" not in vars(CRATEAlpha)
