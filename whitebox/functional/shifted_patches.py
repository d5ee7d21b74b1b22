"""Shifted patch tokens: each image stacked with four diagonal shifts of itself.

Lee et al. ("Vision Transformer for Small-Size Datasets", 2021) let every
patch see a little of its neighbours by cutting the patches from the image
and from four copies of it moved by s pixels along the diagonals:

    out = [x, S(x, -s, -s), S(x, -s, s), S(x, s, -s), S(x, s, s)]   (channels)
    S(x, dy, dx)[.., i, j] = x[.., i + dy, j + dx], zero where that is outside

so a (B, C, H, W) batch becomes (B, 5C, H, W) and a p x p patch holds 5C p^2
numbers. The map is linear; its backward adds each copy's gradient back
where the copy read it: dx = g_0 + sum_k S^T(g_k), with S^T(g, dy, dx) =
S(g, -dy, -dx).
"""
from ..backend import get_array_module
from ._checks import check_array

DIAGONALS = ((-1, -1), (-1, 1), (1, -1), (1, 1))
COPIES = 1 + len(DIAGONALS)        # the image and its shifts: channels are multiplied by this


def shift(x, dy, dx):
    """S(x, dy, dx): out[..., i, j] = x[..., i + dy, j + dx], zero outside; x (B, C, H, W)."""
    H, W = x.shape[2:]
    out = get_array_module(x).zeros_like(x)
    rows_out = slice(max(-dy, 0), H - max(dy, 0))
    rows_in = slice(max(dy, 0), H - max(-dy, 0))
    cols_out = slice(max(-dx, 0), W - max(dx, 0))
    cols_in = slice(max(dx, 0), W - max(-dx, 0))
    out[:, :, rows_out, cols_out] = x[:, :, rows_in, cols_in]
    return out


def shifted_patches_forward(x, s):
    """Inputs: x (B, C, H, W); s, the shift in pixels (0 < s < min(H, W)).

    Returns: (B, 5C, H, W) (x, then the copies in DIAGONALS order), cache.
    """
    xp = check_array("x", x, ndim=4)
    copies = [x] + [shift(x, dy * s, dx * s) for dy, dx in DIAGONALS]
    return xp.concatenate(copies, axis=1), (x.shape[1], s)


def shifted_patches_backward(dout, cache):
    """dout (B, 5C, H, W) -> dx (B, C, H, W)."""
    C, s = cache
    dx = dout[:, :C].copy()
    for k, (dy, dxx) in enumerate(DIAGONALS, start=1):
        dx += shift(dout[:, k * C:(k + 1) * C], -dy * s, -dxx * s)
    return dx
