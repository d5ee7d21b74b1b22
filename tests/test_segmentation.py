"""whitebox.segmentation: the masks, IoU and mIoU, ground truth, the PCA view, and the
``python -m whitebox.segment`` command on a tiny trained run."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from whitebox import segmentation as S
from whitebox.models import CRATE, ViT

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ------------------------------------------------------------------ masks
def _mask_by_loop(row, mass):
    """Decreasing order, keep an entry while the share of the mass before it is < mass."""
    keep = np.zeros(len(row), dtype=bool)
    total, before = row.sum(), 0.0
    for j in sorted(range(len(row)), key=lambda j: -row[j]):
        if total > 0 and before / total < mass:
            keep[j] = True
        before += row[j]
    return keep


@pytest.mark.parametrize("mass", [0.6, 0.05, 0.9, 1.0])
def test_attention_masks_match_a_direct_loop(mass):
    rng = np.random.default_rng(0)
    a = rng.dirichlet(np.ones(16) * 0.5, size=(5, 3))                 # (B, K, n)
    mask = S.attention_masks(a, mass)
    assert mask.shape == a.shape and mask.dtype == bool
    for b in range(5):
        for k in range(3):
            np.testing.assert_array_equal(mask[b, k], _mask_by_loop(a[b, k], mass))
    kept = (a * mask).sum(-1) / a.sum(-1)
    assert (kept >= mass - 1e-12).all()                             # holds the mass
    # and is the fewest: dropping its smallest kept entry falls below the mass
    smallest = np.where(mask, a, np.inf).min(-1)
    assert ((kept - smallest / a.sum(-1)) < mass + 1e-12).all()


def test_attention_masks_hand_made_rows():
    a = np.array([[0.5, 0.3, 0.1, 0.1], [0.1, 0.05, 0.2, 0.65], [0.1, 0.1, 0.25, 0.55],
                  [0.0, 0.0, 0.0, 0.0]])
    np.testing.assert_array_equal(S.attention_masks(a, 0.6),
                                  [[1, 1, 0, 0], [0, 0, 0, 1], [0, 0, 1, 1], [0, 0, 0, 0]])
    # an unnormalised row (the cls row without its weight on the cls token) is the same
    np.testing.assert_array_equal(S.attention_masks(0.3 * a, 0.6), S.attention_masks(a, 0.6))
    with pytest.raises(ValueError, match="mass"):
        S.attention_masks(a, 0.0)
    with pytest.raises(ValueError, match="non-negative"):
        S.attention_masks(-a, 0.6)


# ------------------------------------------------------------------ IoU and mIoU
def test_iou_and_miou_on_hand_made_masks():
    truth = np.array([[1, 1, 0, 0], [0, 1, 1, 0], [1, 0, 0, 0]], dtype=bool)
    pred = np.array([[[1, 1, 0, 0], [1, 0, 0, 1]],                     # head 0 exact, head 1 not
                     [[1, 1, 0, 0], [0, 1, 1, 1]],
                     [[1, 0, 0, 0], [0, 0, 0, 0]]], dtype=bool)
    labels = np.array([0, 0, 1])
    iou = S.iou_table(pred, truth, labels, num_classes=3)
    # class 0: head 0: inter 2 + 1, union 2 + 3 -> 3/5; head 1: inter 1 + 2, union 3 + 3 -> 3/6
    # class 1: head 0: 1/1; head 1: 0/1; class 2: no image -> nan
    np.testing.assert_allclose(iou[:, :2], [[3 / 5, 1.0], [0.5, 0.0]])
    assert np.isnan(iou[:, 2]).all()
    r = S.miou(iou)
    assert r["miou"] == pytest.approx((3 / 5 + 1.0) / 2)
    np.testing.assert_array_equal(r["best_heads"], [0, 0, -1])
    np.testing.assert_allclose(r["per_head"], [(3 / 5 + 1) / 2, 0.25])
    # no labels: one class, the best head over all images
    one = S.iou_table(pred, truth)
    np.testing.assert_allclose(one[:, 0], [4 / 6, 3 / 7])


def test_iou_refuses_bad_shapes_and_labels():
    with pytest.raises(ValueError, match="pred must be"):
        S.iou_table(np.zeros((2, 4), bool), np.zeros((2, 4), bool))
    with pytest.raises(ValueError, match="num_classes"):
        S.iou_table(np.zeros((2, 1, 4), bool), np.zeros((2, 4), bool), [0, 5], num_classes=3)


# ------------------------------------------------------------------ ground truth
def test_ground_truth_of_a_synthetic_image():
    img = np.zeros((1, 1, 8, 8), dtype=np.float32)
    img[0, 0, 0:4, 0:4] = 1.0               # patch (0, 0) of 4x4 patches: all foreground
    img[0, 0, 4:6, 4:8] = 0.9               # patch (1, 1): half its pixels
    img[0, 0, 4, 0:4] = 1.0                 # patch (1, 0): a quarter of its pixels (4 of 16)
    img[0, 0, 5, 0] = 1.0                   #   and one more at the coarser test below
    img[0, 0, 0:4, 4:8] = 0.4               # patch (0, 1): bright but under the threshold
    half = dict(patch_fraction=0.5)
    np.testing.assert_array_equal(S.ground_truth(img, 4, **half), [[1, 0, 0, 1]])
    np.testing.assert_array_equal(S.ground_truth(img, 4, patch_fraction=0.3), [[1, 0, 1, 1]])
    np.testing.assert_array_equal(S.ground_truth(img, 4, patch_fraction=0.6), [[1, 0, 0, 0]])
    np.testing.assert_array_equal(S.ground_truth(img, 4, pixel_threshold=0.3, **half),
                                  [[1, 1, 0, 1]])
    assert S.PATCH_FRACTION == 0.25 and S.PIXEL_THRESHOLD == 0.5
    np.testing.assert_array_equal(S.ground_truth(img, 4), [[1, 0, 1, 1]])
    # pixel masks give the same answer; 2x2 patches are in row-major order
    pix = img[:, 0] > 0.5
    np.testing.assert_array_equal(S.ground_truth(pix, 4), S.ground_truth(img, 4))
    fine = S.ground_truth(img, 2, **half).reshape(4, 4)
    np.testing.assert_array_equal(fine[:2, :2], 1)
    np.testing.assert_array_equal(fine[2, 2:], 1)
    np.testing.assert_array_equal(fine[2, :2], [1, 1])     # row 4 bright, 2 of 4 pixels
    assert fine.sum() == 8
    with pytest.raises(ValueError, match="divide"):
        S.ground_truth(img, 3)


# ------------------------------------------------------------------ models
def _crate():
    return CRATE(image_size=8, patch_size=2, num_classes=3, dim=16, depth=2, heads=2,
                 dim_head=8, channels=1, seed=0)


def test_crate_cls_attention_is_the_mssa_similarity_through_the_softmax():
    model = _crate()
    images = np.random.default_rng(1).standard_normal((3, 1, 8, 8)).astype(np.float32)
    a = S.cls_attention(model, images)
    assert a.shape == (3, 2, 16)
    model(images, capture=True)
    z = model.captured["mssa_in"][-1].astype(np.float64)           # LN1(Z^L) (B, N, d)
    U = model.subspaces(len(model.transformer.layers) - 1).astype(np.float64)  # (K, d, p)
    proj = np.einsum("bnd,kdp->bknp", z, U)                        # U_k^T z_i
    sim = np.einsum("bkp,bknp->bkn", proj[:, :, 0], proj) / np.sqrt(8)
    soft = np.exp(sim - sim.max(-1, keepdims=True))
    soft /= soft.sum(-1, keepdims=True)
    np.testing.assert_allclose(a, soft[:, :, 1:], rtol=1e-4, atol=1e-6)
    assert model.training                                          # left as it was


def test_vit_cls_attention_is_its_last_attention_row():
    model = ViT(image_size=8, patch_size=2, num_classes=3, dim=16, depth=2, heads=2,
                channels=1, seed=0)
    images = np.random.default_rng(2).standard_normal((2, 1, 8, 8)).astype(np.float32)
    a = S.cls_attention(model, images)
    model(images)
    np.testing.assert_allclose(a, model.attention_maps()[-1][:, :, 0, 1:], rtol=1e-6)
    assert (a.sum(-1) < 1).all() and (a > 0).all()
    assert S.patch_features(model, images).shape == (2, 16, 16)
    assert S.patch_grid(model) == (4, 4)


def test_segmentation_scores_take_pixel_or_patch_masks():
    model = _crate()
    rng = np.random.default_rng(3)
    images = rng.standard_normal((4, 1, 8, 8)).astype(np.float32)
    pixels = rng.random((4, 8, 8)) > 0.5
    labels = np.array([0, 1, 1, 2])
    by_pixels = S.segmentation_scores(model, images, pixels, labels, num_classes=3)
    by_patches = S.segmentation_scores(model, images, S.ground_truth(pixels, 2), labels, 3)
    np.testing.assert_allclose(by_pixels["iou"], by_patches["iou"])
    # the score is the best head's IoU of the 60% masks, recomputed here by hand
    pred = S.attention_masks(by_pixels["attention"], 0.6)
    truth = S.ground_truth(pixels, 2)
    for c in range(3):
        rows = labels == c
        inter = (pred[rows] & truth[rows][:, None]).sum((0, 2))
        union = (pred[rows] | truth[rows][:, None]).sum((0, 2))
        assert by_pixels["best_iou"][c] == pytest.approx((inter / union).max())
    with pytest.raises(ValueError, match="masks must be"):
        S.segmentation_scores(model, images, np.zeros((4, 5), bool))
    with pytest.raises(ValueError, match="at least one image"):
        S.cls_attention(model, images[:0])
    with pytest.raises(TypeError, match="attention_maps"):
        S.cls_attention(object(), images)


# ------------------------------------------------------------------ PCA view
def test_pca_view_shapes_and_threshold():
    rng = np.random.default_rng(4)
    B, h, w, d = 3, 4, 4, 12
    # two clusters along one direction: 4 "object" patches per image, 12 background
    direction = rng.standard_normal(d)
    obj = np.zeros((B, h * w), dtype=bool)
    obj[:, [5, 6, 9, 10]] = True
    f = rng.standard_normal((B, h * w, d)) * 0.05 + np.where(obj[..., None], 3.0, 0.0) * direction
    rgb, fg, comps = S.pca_view(f, (h, w))
    assert rgb.shape == (B, h, w, 3) and fg.shape == (B, h, w) and comps.shape == (B, h * w, 3)
    assert rgb.min() >= 0 and rgb.max() <= 1
    np.testing.assert_array_equal(fg.reshape(B, -1), obj)          # the smaller side is kept
    assert (rgb[~fg] == 0).all() and (rgb[fg].sum(-1) > 0).all()
    first = comps[..., 0].ravel()
    assert first.mean() == pytest.approx(0, abs=1e-9) and first.std() == pytest.approx(1)
    np.testing.assert_array_equal(fg.ravel(), first > S.PCA_THRESHOLD)
    # a higher threshold keeps fewer patches
    _, fewer, _ = S.pca_view(f, (h, w), threshold=3.0)
    assert fewer.sum() < fg.sum()
    with pytest.raises(ValueError, match="features"):
        S.pca_view(f, (3, 4))


# ------------------------------------------------------------------ the command line
def test_segment_command_on_a_tiny_trained_run(tmp_path, capsys):
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    from whitebox import segment
    from whitebox import train as train_job
    run = tmp_path / "run"
    train_job.main(["--fast", "--dataset", "digits", "--out", str(run), "--no-progress",
                    "--no-figures"])
    capsys.readouterr()
    out = tmp_path / "seg"
    report = segment.main([str(run), "--out", str(out), "--n", "64"])
    printed = capsys.readouterr().out
    assert "mIoU" in printed and "head 1" in printed and "best head per class" in printed
    for name in ("segmentation.json", "segmentation.png", "segmentation_pca.png"):
        assert (out / name).stat().st_size > 0
    saved = json.loads((out / "segmentation.json").read_text())
    assert saved == json.loads(json.dumps(report))
    row = saved["segmentation"][0]
    assert 0 < row["miou"] <= 1 and len(row["per_head_miou"]) == 2
    assert len(row["best_heads"]) == 10 and row["images"] == 64
    best = [max(v for v in col if v is not None)
            for col in zip(*row["iou"]) if any(v is not None for v in col)]
    assert row["miou"] == pytest.approx(np.mean(best))
    assert saved["settings"]["mass"] == S.MASS
    assert 0 < row["chance_miou"] < 1

    # two runs side by side (the same run, untrained), through the module entry point
    done = subprocess.run([sys.executable, "-m", "whitebox.segment", str(run), str(run),
                           "--untrained", "--out", str(tmp_path / "two"), "--n", "32"],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    two = json.loads((tmp_path / "two" / "segmentation.json").read_text())
    assert len(two["segmentation"]) == 2 and two["settings"]["untrained"]
    assert two["segmentation"][0]["miou"] == pytest.approx(two["segmentation"][1]["miou"])

    bad = subprocess.run([sys.executable, "-m", "whitebox.segment", str(run), "--threshold",
                          "1.5", "--out", str(tmp_path / "bad")],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert bad.returncode != 0 and "--threshold must be in (0, 1]" in bad.stderr


def test_chance_miou_is_the_score_of_random_masks():
    truth = np.zeros((40, 16), dtype=bool)
    truth[:, :4] = True
    labels = np.arange(40) % 2
    one = S.chance_miou(truth, labels, heads=1, num_classes=2, draws=3, seed=1)
    rng = np.random.default_rng(1)
    by_hand = np.mean([S.miou(S.iou_table(S.attention_masks(rng.random((40, 1, 16))), truth,
                                          labels, 2))["miou"] for _ in range(3)])
    assert one == pytest.approx(by_hand)
    # about 60% of 16 patches kept at random against 4 true ones: IoU near 2.4 / 11.6
    assert 0.15 < one < 0.28
    assert S.chance_miou(truth, labels, heads=8, num_classes=2) > one    # best of more heads
