"""ViT: timm's names and counts, a whole-model gradient check, and a PyTorch twin."""
import numpy as np
import pytest

from whitebox.gradcheck import check_module
from whitebox.losses import cross_entropy
from whitebox.models import ViT, vit_base, vit_small, vit_tiny


def tiny(**kw):
    cfg = dict(image_size=8, patch_size=4, num_classes=3, dim=8, depth=2, heads=2,
               dtype="float64", seed=1)
    cfg.update(kw)
    return ViT(**cfg)


@pytest.mark.parametrize("factory, count", [(vit_tiny, 5_717_416), (vit_small, 22_050_664),
                                            (vit_base, 86_567_656)])
def test_factories_have_timms_parameter_counts(factory, count):
    assert factory().num_params() == count


def test_names_and_shapes_are_timms():
    shapes = {k: v.shape for k, v in tiny().state_dict().items()}
    assert shapes["patch_embed.proj.weight"] == (8, 3, 4, 4)
    assert shapes["cls_token"] == (1, 1, 8) and shapes["pos_embed"] == (1, 5, 8)
    for name, shape in (("norm1.weight", (8,)), ("attn.qkv.weight", (24, 8)),
                        ("attn.qkv.bias", (24,)), ("attn.proj.weight", (8, 8)),
                        ("norm2.bias", (8,)), ("mlp.fc1.weight", (32, 8)),
                        ("mlp.fc2.weight", (8, 32))):
        assert shapes[f"blocks.1.{name}"] == shape
    assert shapes["norm.weight"] == (8,) and shapes["head.weight"] == (3, 8)
    assert len(shapes) == 4 + 2 * 12 + 4


def test_whole_model_gradient_check(rng):
    model = tiny()
    images = rng.standard_normal((2, 3, 8, 8))
    errors = check_module(model, [images], tol=1e-6, floor=1e-2)
    assert len(errors) == len(model.grads()) + 1                 # every parameter and the images
    assert max(errors.values()) < 1e-6


def test_loss_at_init_is_near_log_classes(rng):
    model = tiny(num_classes=10, dtype="float32")
    loss, _ = cross_entropy(model(rng.standard_normal((8, 3, 8, 8)).astype(np.float32)),
                            np.arange(8) % 10)
    assert abs(float(loss) - np.log(10)) < 0.3


def test_bad_images_are_refused(rng):
    with pytest.raises(ValueError, match=r"images have 1 channels \(shape \(2, 1, 8, 8\)\), "
                                         r"expected 3"):
        tiny()(rng.standard_normal((2, 1, 8, 8)))
    with pytest.raises(ValueError, match="overflow"):      # finite in float64, inf in float32
        tiny(dtype="float32")(np.full((2, 3, 8, 8), 1e39))


def test_capture_gives_the_per_layer_measures(rng):
    """forward(capture=True) and subspaces(l): whitebox.rate.layer_measures runs on ViT; the
    captured block input and MLP hidden are the block's own (recomputed here)."""
    from whitebox.rate import layer_measures, measure_compression
    model = tiny(dtype="float64")
    x = rng.standard_normal((3, 3, 8, 8))
    rc, nonzero = layer_measures(model, x)
    assert len(rc) == len(nonzero) == len(model.blocks) and all(r > 0 for r in rc)
    assert all(0.9 < f <= 1.0 for f in nonzero)            # GELU hidden units: dense
    model.forward(x, capture=True)
    cap = model.captured
    blk = model.blocks[1]
    assert np.allclose(cap["mssa_in"][1], blk.norm1(cap["z"][0]))
    assert np.allclose(cap["ista_in"][1], blk.norm2(cap["z_half"][1]))
    W = blk.attn.qkv.param("weight")
    d, K = W.shape[1], blk.attn.heads
    U = model.subspaces(1)
    p = d // K
    assert U.shape == (K, d, p) and np.array_equal(U[1].T, W[2 * d + p:2 * d + 2 * p])
    assert rc[1] == measure_compression(cap["mssa_in"][1], U)


def test_equals_a_torch_twin_in_float64(rng):
    torch = pytest.importorskip("torch")
    from torch_baselines import TorchViT, check_grads, load_into
    model = tiny(image_size=12, num_classes=5, depth=2, heads=2)
    twin = load_into(TorchViT(12, 4, 5, 8, 2, 2), model.state_dict())
    images = rng.standard_normal((3, 3, 12, 12))
    dlogits = rng.standard_normal((3, 5))
    it = torch.tensor(images, requires_grad=True)
    (twin(it) * torch.from_numpy(dlogits)).sum().backward()
    logits = model(images)
    dimages = model.backward(dlogits)
    np.testing.assert_allclose(logits, twin(it).detach().numpy(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(dimages, it.grad.numpy(), rtol=0, atol=1e-10)
    check_grads(model, twin)


def test_a_replica_shares_weights_and_keeps_its_own_gradients(rng):
    """What threaded training needs: the twin's gradients equal the model's, apart."""
    model = tiny()
    twin = model.replica()
    images, dlogits = rng.standard_normal((2, 3, 8, 8)), rng.standard_normal((2, 3))
    for m in (model, twin):
        m(images)
        m.backward(dlogits)
    for name, g in model.grads().items():
        np.testing.assert_array_equal(twin.grads()[name], g)
        assert twin.grads()[name] is not g
    assert twin.blocks[0]._attn._qkv is twin.blocks[0].attn.qkv
    assert twin.blocks[0].attn.qkv.param("weight") is model.blocks[0].attn.qkv.param("weight")
