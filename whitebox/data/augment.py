"""Random distortions of training images: shifts, rotations, zooms and smooth warps.

Every image of a batch gets its own draw. ``random_shift`` moves whole
pixels; ``random_distort`` moves every output pixel (y, x) to a real-valued
source point and reads the image there bilinearly:

    source(y, x) = centre + rotation by theta of ((y, x) - centre - (ty, tx)) / s
                   + offset(y, x)

with theta uniform in [-rotate, rotate] degrees, s in [1 - zoom, 1 + zoom],
(ty, tx) in [-shift, shift] pixels and the offset a random displacement
field: independent offsets uniform in [-warp, warp] pixels on a coarse
``grid`` x ``grid`` lattice over the image, resized to every pixel by
bilinear interpolation (a cheap relative of the elastic distortions of
Simard et al., "Best practices for convolutional neural networks applied to
visual document analysis", 2003). Points that fall outside the image read
zero, the background of [0, 1] digits, so distort before normalising.
"""
import numpy as np

from ..functional.pos_interp import bilinear_matrix


def random_shift(images, max_shift, rng):
    """Translate each image by its own random (dy, dx) in [-max_shift, max_shift].

    Pixels moved in from outside are zero (the background of [0, 1] digits),
    so shift before normalising.
    Inputs: images (B, C, H, W); max_shift >= 0 int; rng a Generator.
    Returns: shifted images (B, C, H, W).
    """
    if max_shift == 0:
        return images
    B, C, H, W = images.shape
    s = int(max_shift)
    padded = np.pad(images, ((0, 0), (0, 0), (s, s), (s, s)))    # (B, C, H+2s, W+2s)
    offset = rng.integers(0, 2 * s + 1, size=(2, B))             # top-left corner of the crop
    rows = offset[0][:, None, None, None] + np.arange(H)[None, None, :, None]  # (B, 1, H, 1)
    cols = offset[1][:, None, None, None] + np.arange(W)[None, None, None, :]  # (B, 1, 1, W)
    b = np.arange(B)[:, None, None, None]
    c = np.arange(C)[None, :, None, None]
    return padded[b, c, rows, cols]                              # (B, C, H, W)


def sample_bilinear(images, rows, cols):
    """Read every image at real-valued points, interpolating bilinearly; zero outside.

    Inputs: images (B, C, H, W); rows, cols (B, H', W'): the source point of
    every output pixel, in pixels (row 0 is the first row).
    Returns: (B, C, H', W') in the images' dtype.
    """
    B, C, H, W = images.shape
    # A zero border one pixel wide above and left, two below and right, and the
    # points clipped to [-1, H] x [-1, W]: every read lands inside the padded
    # array, and a point more than a pixel outside the image reads only zeros.
    padded = np.pad(images, ((0, 0), (0, 0), (1, 2), (1, 2))).reshape(-1)
    Hp, Wp = H + 3, W + 3
    rows = np.clip(rows, -1, H).astype(images.dtype, copy=False)
    cols = np.clip(cols, -1, W).astype(images.dtype, copy=False)
    r0, c0 = np.floor(rows), np.floor(cols)
    fr, fc = (rows - r0)[:, None], (cols - c0)[:, None]           # (B, 1, H', W')
    # flat index of each point's top-left neighbour in every (image, channel)
    plane = Hp * Wp * np.arange(B * C).reshape(B, C, 1, 1)
    top_left = plane + ((r0.astype(np.intp) + 1) * Wp + c0.astype(np.intp) + 1)[:, None]
    a, b = padded[top_left], padded[top_left + 1]                  # (B, C, H', W') each
    c, d = padded[top_left + Wp], padded[top_left + Wp + 1]
    upper = a + fc * (b - a)
    lower = c + fc * (d - c)
    return upper + fr * (lower - upper)


def upsample_bilinear(field, H, W):
    """Resize values on a coarse g x g lattice to H x W, bilinearly (half-pixel centres).

    Interpolation is linear in the values, along the rows and then the
    columns: R_H field R_W^T with R the 1-D interpolation matrices of
    ``functional.pos_interp.bilinear_matrix`` (the ones that resize ViT
    position tables).
    Inputs: field (..., g, g). Returns: (..., H, W) in field's dtype.
    """
    g = field.shape[-1]
    rows = bilinear_matrix(g, H).astype(field.dtype)                    # (H, g)
    cols = bilinear_matrix(g, W).astype(field.dtype)                    # (W, g)
    return rows @ field @ cols.T


def random_distort(images, rng, rotate=0.0, zoom=0.0, shift=0.0, warp=0.0, grid=7, part=None):
    """Rotate, zoom, translate and warp each image by its own random draw.

    Inputs: images (B, C, H, W) with zero background; rng a Generator;
    rotate (degrees), zoom (fraction, < 1), shift and warp (pixels), all
    >= 0: the ranges of the module docstring; grid, the warp's lattice;
    part, a slice of the batch: distort only those images and return the
    others as they are (for a process that trains on that part), None: all.
    The draws, in order, whatever ``part``: B angles, B zooms, 2B shifts,
    2 B grid^2 warp offsets (the last only when warp > 0).
    Returns: distorted images (B, C, H, W), same dtype.
    """
    B, C, H, W = images.shape
    dtype = images.dtype
    theta = np.deg2rad(rng.uniform(-rotate, rotate, B))
    s = rng.uniform(1 - zoom, 1 + zoom, B)
    ty, tx = rng.uniform(-shift, shift, (2, B))
    cos = (np.cos(theta) / s).astype(dtype)[:, None, None]
    sin = (np.sin(theta) / s).astype(dtype)[:, None, None]
    cy, cx = (H - 1) / 2, (W - 1) / 2
    y = (np.arange(H, dtype=dtype) - cy)[None, :, None] - ty.astype(dtype)[:, None, None]
    x = (np.arange(W, dtype=dtype) - cx)[None, None, :] - tx.astype(dtype)[:, None, None]
    rows = cos * y - sin * x + cy                                 # (B, H, W)
    cols = sin * y + cos * x + cx
    if warp:
        offsets = rng.uniform(-warp, warp, (2, B, grid, grid)).astype(dtype)
        dy, dx = upsample_bilinear(offsets, H, W)
        rows, cols = rows + dy, cols + dx
    if part is None:
        return sample_bilinear(images, rows, cols)
    out = images.copy()
    out[part] = sample_bilinear(images[part], rows[part], cols[part])
    return out
