"""Position-table resampling, CRATE and ViT at other token counts, the multi-crop network, the teacher."""
import numpy as np
import pytest

from whitebox.functional import interpolate_pos_embed_backward, interpolate_pos_embed_forward
from whitebox.gradcheck import check_backward, check_direction, check_module
from whitebox.losses import simdino_loss
from whitebox.models import CRATE, ViT
from whitebox.models.class_token_features import CRATEFeatures, ViTFeatures
from whitebox.nn import SimDINOHead
from whitebox.ssl import MultiCropNetwork, cosine_momentum, ema_teacher, ema_update


def _crate(seed=0, dtype="float64"):
    return CRATE(image_size=8, patch_size=2, num_classes=3, dim=8, depth=1, heads=2,
                 dim_head=4, channels=1, dtype=dtype, seed=seed)


def test_pos_interp_keeps_the_table_on_its_own_grid_and_the_class_row(rng):
    table = rng.standard_normal((1, 1 + 12, 5))
    out, _ = interpolate_pos_embed_forward(table, (3, 4), (3, 4))
    np.testing.assert_allclose(out, table, rtol=1e-15)
    small, _ = interpolate_pos_embed_forward(table, (3, 4), (2, 2))
    assert small.shape == (1, 5, 5)
    np.testing.assert_array_equal(small[0, 0], table[0, 0])


@pytest.mark.parametrize("grid_out", [(2, 2), (5, 3), (1, 4)])
def test_pos_interp_backward_matches_finite_differences(rng, grid_out):
    table = rng.standard_normal((1, 1 + 12, 3))
    check_backward(lambda t: interpolate_pos_embed_forward(t, (3, 4), grid_out),
                   interpolate_pos_embed_backward, [table], seed=1)


@pytest.mark.torch
@pytest.mark.parametrize("grid_out", [(2, 2), (6, 5), (3, 1)])
def test_pos_interp_matches_torch_bilinear(rng, grid_out):
    torch = pytest.importorskip("torch")
    table = rng.standard_normal((1, 1 + 12, 3))
    grid = torch.tensor(table[0, 1:].reshape(1, 3, 4, 3)).permute(0, 3, 1, 2)   # (1, d, h, w)
    ref = torch.nn.functional.interpolate(grid, size=grid_out, mode="bilinear",
                                          align_corners=False)
    ref = ref.permute(0, 2, 3, 1).reshape(-1, 3).numpy()
    out, _ = interpolate_pos_embed_forward(table, (3, 4), grid_out)
    np.testing.assert_allclose(out[0, 1:], ref, rtol=1e-13, atol=1e-15)


def test_features_at_the_model_size_are_what_its_classifier_reads(rng):
    crate = _crate()
    x = rng.random((3, 1, 8, 8))
    feats = CRATEFeatures(crate)(x)
    logits = crate(x)
    np.testing.assert_allclose(crate.mlp_head[1](feats), logits, rtol=1e-12)


def test_features_on_local_crops_have_exact_gradients(rng):
    model = CRATEFeatures(_crate())
    x = rng.random((2, 1, 4, 6))
    errs = check_module(model, [x], max_entries=12, tol=1e-6, floor=1e-4)  # as test_crate
    assert "crate.pos_embedding" in errs
    with pytest.raises(ValueError, match="multiple of 2"):
        model(rng.random((2, 1, 5, 4)))


def _vit(seed=0, dtype="float64"):
    return ViT(image_size=8, patch_size=2, num_classes=3, dim=8, depth=2, heads=2, channels=1,
               dtype=dtype, seed=seed)


def test_vit_features_at_the_model_size_are_what_its_head_reads(rng):
    vit = _vit()
    x = rng.random((3, 1, 8, 8))
    feats = ViTFeatures(vit)(x)
    np.testing.assert_allclose(vit.head(feats), vit(x), rtol=1e-12)
    np.testing.assert_allclose(feats, vit.forward_features(x)[:, 0], rtol=1e-12)


def test_vit_features_on_local_crops_have_exact_gradients(rng):
    model = ViTFeatures(_vit())
    x = rng.random((2, 1, 4, 6))                  # a 2 x 3 grid from the 4 x 4 table
    errs = check_module(model, [x], max_entries=12, tol=1e-6, floor=1e-4)
    assert {"vit.pos_embed", "vit.cls_token", "vit.norm.weight",
            "vit.blocks.1.attn.qkv.weight", "input 0"} <= set(errs)
    assert len(model.attention_maps()) == 2 and model.attention_maps()[0].shape == (2, 2, 7, 7)
    with pytest.raises(ValueError, match="multiple of 2"):
        model(rng.random((2, 1, 4, 3)))


def _network(seed=0):
    return MultiCropNetwork(CRATEFeatures(_crate(seed)),
                            SimDINOHead(8, hidden_dim=10, bottleneck_dim=6, dtype="float64",
                                        seed=seed))


def test_multicrop_network_gradient_through_both_resolutions(rng):
    net = _network()
    views = [rng.random((3, 1, 8, 8)) for _ in range(2)] + [rng.random((3, 1, 4, 4))
                                                           for _ in range(2)]
    teacher = rng.standard_normal((6, 6))

    def loss():
        return simdino_loss(net(views), teacher, 4, eps=0.5)

    net.zero_grad()
    _, dout = loss()
    assert net.backward(dout) is None
    params = net.trainable_parameters()
    grads = net.grads()
    names = sorted(params)
    check_direction(lambda: np.asarray(loss()[0]), [params[k] for k in names],
                    [grads[k] for k in names], np.ones(()), directions=3)
    # the local crops reach the stored table: its gradient differs from a global-only run
    assert np.abs(grads["backbone.crate.pos_embedding"]).sum() > 0


def test_multicrop_network_runs_groups_like_separate_calls(rng):
    net = _network()
    g, l = rng.random((6, 1, 8, 8)), rng.random((6, 1, 4, 4))
    out = net([g[:3], g[3:], l[:3], l[3:]])
    ref_g = net.head(net.backbone(g))
    ref_l = net.head(net.backbone(l))
    np.testing.assert_allclose(out, np.concatenate([ref_g, ref_l]), rtol=1e-12)


def test_teacher_is_an_independent_frozen_twin_moved_by_ema(rng):
    student = _network()
    teacher = ema_teacher(student)
    x = [rng.random((2, 1, 8, 8)), rng.random((2, 1, 8, 8))]
    np.testing.assert_allclose(teacher(x), student.eval()(x), rtol=1e-13)
    student.train()
    assert teacher.trainable_parameters() == {} and not teacher.training
    s, t = student.state_dict(), teacher.state_dict()
    assert s.keys() == t.keys() and all(s[k] is not t[k] for k in s)
    before = {k: v.copy() for k, v in t.items()}
    for p in s.values():
        p += 0.1                                   # an optimizer step on the student
    np.testing.assert_array_equal(t["backbone.crate.cls_token"], before["backbone.crate.cls_token"])
    ema_update(teacher, student, 0.9)
    for k in s:
        np.testing.assert_allclose(t[k], 0.9 * before[k] + 0.1 * s[k], rtol=1e-12, atol=1e-16)


def test_cosine_momentum_is_dinos_schedule():
    m = cosine_momentum(0.996, 4, 5)
    assert m.shape == (20,) and m[0] == pytest.approx(0.996)
    assert np.all(np.diff(m) > 0) and m[-1] < 1
    i = 7
    assert m[i] == pytest.approx(1 + 0.5 * (0.996 - 1) * (1 + np.cos(np.pi * i / 20)))


def test_dino_step_student_head_and_loss_have_the_exact_gradient(rng):
    """One whole step of --task ssl --ssl-loss dino in float64: CRATE on 2 global and 2 local
    crops, DINO's head, DINO's loss against the teacher's global crops with a non-zero centre;
    every student parameter's gradient against central differences along random directions.
    (The head's bottleneck is normalised from a small vector, so h is small.)"""
    from whitebox.losses import DINOLoss
    from whitebox.nn import DINOHead
    net = MultiCropNetwork(CRATEFeatures(_crate()), DINOHead(8, 16, 12, 6, dtype="float64",
                                                              seed=1))
    teacher = ema_teacher(net)
    views = [rng.random((3, 1, 8, 8)), rng.random((3, 1, 8, 8)),
             rng.random((3, 1, 4, 4)), rng.random((3, 1, 4, 4))]
    crit = DINOLoss(16, 4, 0.04, 0.04, 0, 3, dtype="float64")
    center = 0.1 * rng.standard_normal((1, 16))
    targets = teacher(views[:2])                      # the teacher sees the global crops only

    def loss():
        crit.center = center.copy()
        return crit(net(views), targets, 1)[0]

    net.zero_grad()
    crit.center = center.copy()
    _, dout = crit(net(views), targets, 1)
    np.testing.assert_allclose(crit.center, 0.9 * center + 0.1 * targets.mean(0, keepdims=True),
                               rtol=1e-14)            # the centre moves after the loss
    net.backward(dout)
    grads = net.grads()
    names = sorted(grads)
    assert "head.last_layer.weight_v" in names and "head.last_layer.weight_g" not in names
    params = [net.state_dict()[n] for n in names]
    check_direction(loss, params, [grads[n] for n in names], np.ones(()), h=1e-7, tol=1e-5,
                    directions=4)
