"""Images to patch tokens and back, in the official CRATE/ViT order.

'b c (h p1) (w p2) -> b (h w) (p1 p2 c)': patches in row-major order over the
image, and inside a patch the pixels in (row, col, channel) order with the
channel fastest.
"""
import numpy as np

from ._checks import check_array, check_divisible, check_shape


def _patch_pair(v):
    """patch_size as (p1, p2): an int means a square patch."""
    p = tuple(v) if isinstance(v, (tuple, list)) else (v, v)
    if len(p) != 2 or not all(isinstance(n, (int, np.integer)) and n > 0 for n in p):
        raise ValueError(f"patch_size must be a positive int or a pair of them, got {v!r}")
    return int(p[0]), int(p[1])


def patchify_forward(images, patch_size):
    """Inputs: images (B, C, H, W); patch_size int or (p1, p2).

    Returns: patches (B, n, p1*p2*C) with n = (H/p1)(W/p2), cache.
    """
    check_array("images", images, ndim=4)
    p1, p2 = _patch_pair(patch_size)
    B, C, H, W = images.shape
    check_divisible(H, W, p1, p2)
    h, w = H // p1, W // p2
    x = images.reshape(B, C, h, p1, w, p2)       # (B, C, h, p1, w, p2)
    x = x.transpose(0, 2, 4, 3, 5, 1)            # (B, h, w, p1, p2, C)
    return x.reshape(B, h * w, p1 * p2 * C), (images.shape, (p1, p2))


def unpatchify(patches, image_shape, patch_size):
    """The inverse map: (B, n, p1*p2*C) -> (B, C, H, W)."""
    p1, p2 = _patch_pair(patch_size)
    if len(image_shape) != 4:
        raise ValueError(f"image_shape must be (B, C, H, W), got {tuple(image_shape)}")
    B, C, H, W = image_shape
    check_divisible(H, W, p1, p2)
    h, w = H // p1, W // p2
    check_shape("patches", patches, (B, h * w, p1 * p2 * C),
                f" for images {tuple(image_shape)} and patch {p1}x{p2}")
    x = patches.reshape(B, h, w, p1, p2, C)      # (B, h, w, p1, p2, C)
    x = x.transpose(0, 5, 1, 3, 2, 4)            # (B, C, h, p1, w, p2)
    return x.reshape(B, C, H, W)


def patchify_backward(dout, cache):
    """Patchify is a permutation, so its gradient is the inverse permutation."""
    image_shape, patch = cache
    return unpatchify(dout, image_shape, patch)


def unpatchify_forward(patches, image_shape, patch_size):
    """Functional pair for unpatchify.  Returns: images, cache."""
    return unpatchify(patches, image_shape, patch_size), (image_shape, _patch_pair(patch_size))


def unpatchify_backward(dout, cache):
    """Unpatchify is a permutation too: its gradient is patchify of dout."""
    image_shape, patch = cache
    out, _ = patchify_forward(dout, patch)
    return out
