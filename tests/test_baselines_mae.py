"""MAE: the official names and count, masking, a gradient check, and a PyTorch twin."""
import numpy as np
import pytest

from whitebox.functional.pos_embed import sincos_pos_embed_2d
from whitebox.gradcheck import numerical_gradient, rel_error
from whitebox.models import MAE, mae_vit_base


def tiny(**kw):
    cfg = dict(image_size=8, patch_size=2, dim=8, depth=2, heads=2, decoder_dim=12,
               decoder_depth=1, decoder_heads=3, mask_ratio=0.75, dtype="float64", seed=1)
    cfg.update(kw)
    return MAE(**cfg)


def test_mae_vit_base_has_the_official_count():
    model = mae_vit_base()
    assert model.num_params() == 111_907_840
    assert model.norm.eps == 1e-6


def test_names_and_frozen_tables():
    model = tiny()
    names = set(model.state_dict())
    for n in ("patch_embed.proj.weight", "cls_token", "pos_embed", "blocks.1.attn.qkv.weight",
              "norm.weight", "decoder_embed.weight", "mask_token", "decoder_pos_embed",
              "decoder_blocks.0.mlp.fc2.bias", "decoder_norm.bias", "decoder_pred.weight"):
        assert n in names
    assert "pos_embed" not in model.grads() and "decoder_pos_embed" not in model.grads()
    np.testing.assert_array_equal(model.param("decoder_pos_embed")[0],
                                  sincos_pos_embed_2d(12, (4, 4)))


def test_masking_keeps_the_patches_of_smallest_noise(rng):
    model = tiny()
    noise = rng.random((2, 16))
    _, pred, mask = model(rng.standard_normal((2, 3, 8, 8)), noise=noise)
    for b in range(2):
        np.testing.assert_array_equal(np.sort(np.nonzero(mask[b] == 0)[0]),
                                      np.sort(np.argsort(noise[b])[:4]))
    assert pred.shape == (2, 16, 12)


def test_reconstruction_of_a_removed_patch_ignores_its_pixels(rng):
    """The encoder never sees a removed patch: changing its pixels changes no prediction."""
    model = tiny()
    images = rng.standard_normal((1, 3, 8, 8))
    noise = rng.random((1, 16))
    _, pred, mask = model(images, noise=noise)
    removed = int(np.nonzero(mask[0])[0][0])
    r, c = divmod(removed, 4)
    images[0, :, 2 * r:2 * r + 2, 2 * c:2 * c + 2] += 1.0
    _, pred2, _ = model(images, noise=noise)
    np.testing.assert_allclose(pred2, pred, atol=1e-13)


@pytest.mark.parametrize("norm_pix", [False, True])
def test_whole_model_gradient_check(rng, norm_pix):
    """Every trainable array and the images: 6 entries of each against central differences
    (floor 1e-2: smaller entries are judged by their absolute error, ~1e-10 of round-off)."""
    model = tiny(norm_pix_loss=norm_pix)
    images = rng.standard_normal((2, 3, 8, 8))
    noise = rng.random((2, 16))
    model(images, noise=noise)
    model.zero_grad()
    dimages = model.backward()
    arrays = dict(model.trainable_parameters(), images=images)
    grads = dict(model.grads(), images=dimages)
    for name, a in arrays.items():
        entries = np.sort(rng.choice(a.size, size=min(6, a.size), replace=False))
        num = numerical_gradient(lambda: model(images, noise=noise)[0], a, np.ones(()),
                                 entries=entries)
        err = rel_error(grads[name].reshape(-1)[entries], num.reshape(-1)[entries], floor=1e-2)
        assert err < 1e-6, f"{name}: relative error {err:.3g}"
    assert len(arrays) == 3 + 2 * 12 + 2 + 3 + 12 + 4 + 1     # every trainable array, images


def test_a_mask_removing_different_counts_is_refused(rng):
    mask = np.ones((2, 16))
    mask[0, :4] = 0
    mask[1, :5] = 0
    with pytest.raises(ValueError, match="same number of patches in every image"):
        tiny()(rng.standard_normal((2, 3, 8, 8)), mask=mask)


@pytest.mark.parametrize("norm_pix", [False, True])
def test_equals_a_torch_twin_in_float64(rng, norm_pix):
    torch = pytest.importorskip("torch")
    from torch_baselines import TorchMAE, check_grads, load_into
    model = tiny(norm_pix_loss=norm_pix, eps=1e-6)
    twin = load_into(TorchMAE(8, 2, 8, 2, 2, 12, 1, 3, norm_pix_loss=norm_pix, eps=1e-6),
                     model.state_dict())
    images = rng.standard_normal((3, 3, 8, 8))
    noise = rng.random((3, 16))
    it = torch.tensor(images, requires_grad=True)
    tloss, tpred, tmask = twin(it, torch.from_numpy(noise), 0.75)
    tloss.backward()
    loss, pred, mask = model(images, noise=noise)
    dimages = model.backward()
    assert abs(float(loss) - tloss.item()) < 1e-10
    np.testing.assert_allclose(pred, tpred.detach().numpy(), rtol=0, atol=1e-10)
    np.testing.assert_array_equal(mask, tmask.numpy())
    np.testing.assert_allclose(dimages, it.grad.numpy(), rtol=0, atol=1e-10)
    check_grads(model, twin)


def test_encode_sees_every_patch(rng):
    model = tiny()
    images = rng.standard_normal((2, 3, 8, 8))
    latent = model.encode(images)
    assert latent.shape == (2, 17, 8)
    images[0, :, :2, :2] += 1.0                   # patch 0 of image 0
    changed = model.encode(images)
    assert not np.allclose(changed[0], latent[0])
    np.testing.assert_allclose(changed[1], latent[1], atol=1e-13)
