"""Random distortions of training images (whitebox/data/augment.py) and the loader's use of them."""
import numpy as np
import pytest

from whitebox.data import BatchLoader
from whitebox.data.augment import random_distort, random_shift, sample_bilinear, upsample_bilinear
from whitebox.functional.pos_interp import bilinear_matrix


def bilinear_reference(image, r, c):
    """One pixel of one image plane, read at (r, c) the long way: zero outside."""
    H, W = image.shape
    r0, c0 = int(np.floor(r)), int(np.floor(c))
    total = 0.0
    for dr, wr in ((0, 1 - (r - r0)), (1, r - r0)):
        for dc, wc in ((0, 1 - (c - c0)), (1, c - c0)):
            y, x = r0 + dr, c0 + dc
            if 0 <= y < H and 0 <= x < W:
                total += wr * wc * image[y, x]
    return total


def test_sample_bilinear_matches_the_pixel_by_pixel_reference_inside_and_outside():
    rng = np.random.default_rng(0)
    images = rng.random((3, 2, 6, 7))
    rows = rng.uniform(-3, 9, (3, 4, 5))          # many points outside, some far outside
    cols = rng.uniform(-3, 10, (3, 4, 5))
    out = sample_bilinear(images, rows, cols)
    assert out.shape == (3, 2, 4, 5) and out.dtype == images.dtype
    for b in range(3):
        for ch in range(2):
            for i in range(4):
                for j in range(5):
                    want = bilinear_reference(images[b, ch], rows[b, i, j], cols[b, i, j])
                    assert out[b, ch, i, j] == pytest.approx(want, abs=1e-12)


def test_sample_bilinear_at_whole_pixels_moves_pixels_exactly():
    rng = np.random.default_rng(1)
    images = rng.random((2, 1, 5, 5)).astype(np.float32)
    r, c = np.meshgrid(np.arange(5.0), np.arange(5.0), indexing="ij")
    # rows <- cols and cols <- 4 - rows turns every image a quarter turn
    turned = sample_bilinear(images, np.broadcast_to(c, (2, 5, 5)),
                             np.broadcast_to(4 - r, (2, 5, 5)))
    np.testing.assert_array_equal(turned, np.rot90(images, k=1, axes=(2, 3)))
    assert turned.dtype == np.float32


def test_distort_without_distortion_is_the_identity():
    images = np.random.default_rng(2).random((4, 1, 9, 9)).astype(np.float32)
    np.testing.assert_array_equal(random_distort(images, np.random.default_rng(0)), images)


def test_a_shift_alone_moves_a_digit_without_losing_ink():
    images = np.zeros((8, 1, 16, 16))
    images[:, :, 6:10, 5:11] = np.random.default_rng(3).random((8, 1, 4, 6))
    moved = random_distort(images, np.random.default_rng(4), shift=2.0)
    assert not np.allclose(moved, images)
    # bilinear weights of a translation sum to one for every source pixel
    np.testing.assert_allclose(moved.sum(axis=(1, 2, 3)), images.sum(axis=(1, 2, 3)), rtol=1e-12)


def test_rotation_and_zoom_keep_the_centre_and_stay_in_range():
    images = np.zeros((16, 1, 15, 15))
    images[:, :, 7, 7] = 1.0                       # the centre pixel
    out = random_distort(images, np.random.default_rng(5), rotate=30.0, zoom=0.2)
    assert np.all(out[:, :, 7, 7] == 1.0)          # the centre is its own source point
    assert out.min() >= 0.0 and out.max() <= 1.0   # convex combinations of [0, 1] pixels
    assert np.ptp(out.sum(axis=(1, 2, 3))) > 0     # each image drew its own zoom


def test_distort_is_a_function_of_the_generator_and_every_image_draws_its_own():
    images = np.tile(np.random.default_rng(6).random((1, 1, 12, 12)), (5, 1, 1, 1))
    a = random_distort(images, np.random.default_rng(7), 15.0, 0.1, 1.5, 1.0)
    b = random_distort(images, np.random.default_rng(7), 15.0, 0.1, 1.5, 1.0)
    np.testing.assert_array_equal(a, b)
    assert all(not np.allclose(a[0], a[i]) for i in range(1, 5))
    # as many draws as the docstring lists: angles, zooms, shifts, warp offsets
    rng = np.random.default_rng(7)
    rng.uniform(size=5 + 5 + 10 + 2 * 5 * 49)
    g = np.random.default_rng(7)
    random_distort(images, g, 15.0, 0.1, 1.5, 1.0)
    assert g.bit_generator.state == rng.bit_generator.state


def test_distorting_part_of_a_batch_draws_as_for_the_whole():
    """A process of a split run distorts only its rows, with the whole batch's draws."""
    images = np.random.default_rng(6).random((7, 1, 12, 12))
    g, h = np.random.default_rng(7), np.random.default_rng(7)
    whole = random_distort(images, g, 15.0, 0.1, 1.5, 1.0)
    part = random_distort(images, h, 15.0, 0.1, 1.5, 1.0, part=slice(2, 5))
    np.testing.assert_array_equal(part[2:5], whole[2:5])
    np.testing.assert_array_equal(part[:2], images[:2])
    np.testing.assert_array_equal(part[5:], images[5:])
    assert g.bit_generator.state == h.bit_generator.state


def test_upsample_bilinear_resizes_rows_then_columns():
    field = np.random.default_rng(8).random((2, 3, 5, 5))
    up = upsample_bilinear(field, 11, 13)
    rows, cols = bilinear_matrix(5, 11), bilinear_matrix(5, 13)
    np.testing.assert_allclose(up, np.einsum("hi,abij,wj->abhw", rows, field, cols), rtol=1e-12)
    np.testing.assert_allclose(upsample_bilinear(np.full((1, 4, 4), 0.7), 9, 9), 0.7)
    assert up.min() >= field.min() and up.max() <= field.max()


def test_loader_distorts_only_when_asked_and_checks_the_ranges():
    rng = np.random.default_rng(9)
    images = rng.random((6, 1, 10, 10)).astype(np.float32)
    labels = np.arange(6)
    plain = BatchLoader(images, labels, 6, rng=np.random.default_rng(0), shuffle=False,
                        max_shift=1)
    (x_plain, _), = list(plain)
    np.testing.assert_array_equal(
        x_plain, random_shift(images, 1, np.random.default_rng(0)))   # whole-pixel shifts
    warped = BatchLoader(images, labels, 6, rng=np.random.default_rng(0), shuffle=False,
                         max_shift=1, rotate=10.0, zoom=0.1, warp=1.0)
    (x, _), = list(warped)
    np.testing.assert_array_equal(
        x, random_distort(images, np.random.default_rng(0), 10.0, 0.1, 1, 1.0))
    halves = [list(BatchLoader(images, labels, 6, rng=np.random.default_rng(0),
                               shuffle=False, max_shift=1, rotate=10.0, zoom=0.1, warp=1.0,
                               part=(rank, 2)))[0][0] for rank in (0, 1)]
    np.testing.assert_array_equal(halves[0][:3], x[:3])     # each process's rows, as whole
    np.testing.assert_array_equal(halves[1][3:], x[3:])
    for part in ((2, 2), (0, 0), [0, 1], (0.0, 1)):
        with pytest.raises(ValueError, match="part must be"):
            BatchLoader(images, labels, 6, rng=rng, part=part)
    for name, bad in (("rotate", -1.0), ("zoom", 1.0), ("warp", float("nan")),
                      ("rotate", True)):
        with pytest.raises(ValueError, match=name):
            BatchLoader(images, labels, 6, rng=rng, **{name: bad})
    with pytest.raises(TypeError, match="rng"):
        BatchLoader(images, labels, 6, shuffle=False, warp=1.0)
