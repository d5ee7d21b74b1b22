"""Multi-crop views: shapes, one seed one set of views, ranges, the crop and resize rules."""
import numpy as np
import pytest

from whitebox.data import MultiCrop, crop_boxes, jitter_intensity, resize_crops


def _images(rng, B=5, C=1, H=8, W=8):
    return rng.random((B, C, H, W)).astype(np.float32)


def test_views_have_the_asked_shapes_and_stay_in_range(rng):
    mc = MultiCrop(8, 4, n_local=3, flip=False)
    views = mc(_images(rng, C=3), np.random.default_rng(1))
    assert mc.n_crops == 5 and len(views) == 5
    assert [v.shape for v in views] == [(5, 3, 8, 8)] * 2 + [(5, 3, 4, 4)] * 3
    for v in views:
        assert v.dtype == np.float32 and v.min() >= 0 and v.max() <= 1


def test_one_seed_gives_one_set_of_views(rng):
    x, mc = _images(rng), MultiCrop(8, 4, n_local=2)
    a, b = mc(x, np.random.default_rng(7)), mc(x, np.random.default_rng(7))
    c = mc(x, np.random.default_rng(8))
    assert all(np.array_equal(u, v) for u, v in zip(a, b))
    assert not all(np.array_equal(u, v) for u, v in zip(a, c))


def test_crop_boxes_fit_and_follow_the_scale(rng):
    boxes = crop_boxes(rng, 500, 32, 24, (0.05, 0.4))
    top, left, h, w = boxes.T
    assert (top >= 0).all() and (left >= 0).all()
    assert (top + h <= 32).all() and (left + w <= 24).all()
    area = h * w / (32 * 24)
    assert 0.03 < area.min() and area.max() < 0.45        # rounding moves the edges a little
    assert 0.6 < (w / h).min() and (w / h).max() < 1.6


def test_resize_of_the_whole_image_at_its_size_is_the_identity(rng):
    x = _images(rng, B=2, C=2, H=6, W=6)
    boxes = np.array([[0, 0, 6, 6]] * 2)
    np.testing.assert_allclose(resize_crops(x, boxes, 6), x, rtol=1e-6)


def test_resize_matches_a_direct_bilinear_loop(rng):
    x = rng.random((1, 1, 7, 9))
    top, left, h, w, S = 1, 2, 5, 6, 4
    out = resize_crops(x, np.array([[top, left, h, w]]), S)
    ref = np.empty((S, S))
    for i in range(S):
        for j in range(S):
            y = min(max(top + (i + 0.5) * h / S - 0.5, top), top + h - 1)
            z = min(max(left + (j + 0.5) * w / S - 0.5, left), left + w - 1)
            y0, z0 = int(np.floor(y)), int(np.floor(z))
            y1, z1 = min(y0 + 1, top + h - 1), min(z0 + 1, left + w - 1)
            fy, fz = y - y0, z - z0
            ref[i, j] = ((1 - fy) * (1 - fz) * x[0, 0, y0, z0] + (1 - fy) * fz * x[0, 0, y0, z1]
                         + fy * (1 - fz) * x[0, 0, y1, z0] + fy * fz * x[0, 0, y1, z1])
    np.testing.assert_allclose(out[0, 0], ref, rtol=1e-13)


def test_jitter_probability_zero_is_the_identity_and_flip_mirrors(rng):
    x = _images(rng)
    np.testing.assert_array_equal(jitter_intensity(x, rng, p=0.0), x)
    # only flips: a full-image crop at full size, no jitter
    mc = MultiCrop(8, 4, 0, global_scale=(1.0, 1.0), jitter_p=0.0, flip=True)
    views = mc(x, np.random.default_rng(3))
    for v in views:
        for i in range(len(x)):
            assert (np.allclose(v[i], x[i], atol=1e-6)
                    or np.allclose(v[i], x[i, :, :, ::-1], atol=1e-6))
    assert any(not np.allclose(v, x, atol=1e-6) for v in views)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="local_scale"):
        MultiCrop(8, 4, 2, local_scale=(0.5, 0.1))
    with pytest.raises(ValueError, match="n_local"):
        MultiCrop(8, 4, -1)
    with pytest.raises(TypeError, match="rng"):
        MultiCrop(8, 4, 1)(np.zeros((1, 1, 8, 8)), 0)
