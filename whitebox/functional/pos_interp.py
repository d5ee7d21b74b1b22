"""A position table resampled to another grid of patches: bilinear, with its backward.

A table (1, 1 + h w, d) holds the class token's row, then one row per patch of
an h x w grid in row-major order. For a grid h' x w' (a smaller crop has fewer
patches) the patch rows are resampled as an image of d channels:

    out[i', j'] = sum_{i, j} Ry[i', i] Rx[j', j] table[i, j],

Ry (h', h) and Rx (w', w) the bilinear weights of torch's
F.interpolate(mode="bilinear", align_corners=False) (half-pixel centres,
sources clamped to the grid, no antialiasing); the class row is kept. DINO
resamples bicubically; bilinear is chosen here for a map whose weights are
non-negative and sum to one (a resampled table never overshoots the stored
one). The map is linear, so its backward is its transpose:

    dtable[i, j] = sum_{i', j'} Ry[i', i] Rx[j', j] dout[i', j'].
"""
import numpy as np

from ..backend import get_array_module
from ._checks import check_array, check_dout, check_positive_int


def bilinear_matrix(n_in, n_out):
    """(n_out, n_in) weights of 1-D linear interpolation, align_corners=False, as torch."""
    src = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    src = np.clip(src, 0, n_in - 1)
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = src - lo
    R = np.zeros((n_out, n_in))
    np.add.at(R, (np.arange(n_out), lo), 1 - frac)
    np.add.at(R, (np.arange(n_out), hi), frac)
    return R


def interpolate_pos_embed_forward(table, grid_in, grid_out):
    """Inputs: table (1, 1 + h w, d); grid_in (h, w); grid_out (h', w').
    Returns: out (1, 1 + h' w', d) (the table itself when the grids are equal), cache."""
    xp = check_array("table", table, ndim=3)
    h, w = (check_positive_int("grid_in", v) for v in grid_in)
    h2, w2 = (check_positive_int("grid_out", v) for v in grid_out)
    if table.shape[:2] != (1, 1 + h * w):
        raise ValueError(f"table must have shape (1, 1 + h w, d) = (1, {1 + h * w}, d) for "
                         f"grid_in {(h, w)}, got {tuple(table.shape)}")
    d = table.shape[2]
    Ry = xp.asarray(bilinear_matrix(h, h2), dtype=table.dtype)     # (h', h)
    Rx = xp.asarray(bilinear_matrix(w, w2), dtype=table.dtype)     # (w', w)
    grid = table[0, 1:].reshape(h, w, d)                           # (h, w, d)
    out = xp.einsum("ai,bj,ijd->abd", Ry, Rx, grid).reshape(h2 * w2, d)
    out = xp.concatenate([table[0, :1], out], axis=0)[None]        # (1, 1 + h' w', d)
    return out, (Ry, Rx, d)


def interpolate_pos_embed_backward(dout, cache):
    """dtable = [dout's class row; Ry^T dout_grid Rx]. Returns: dtable (1, 1 + h w, d)."""
    Ry, Rx, d = cache
    (h2, h), (w2, w) = Ry.shape, Rx.shape
    check_dout("interpolate_pos_embed", dout, (1, 1 + h2 * w2, d))
    xp = get_array_module(dout)
    grid = dout[0, 1:].reshape(h2, w2, d)                          # (h', w', d)
    dgrid = xp.einsum("ai,bj,abd->ijd", Ry, Rx, grid).reshape(h * w, d)
    return xp.concatenate([dout[0, :1], dgrid], axis=0)[None]      # (1, 1 + h w, d)
