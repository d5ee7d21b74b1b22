"""The fixed 2-D sine-cosine position table of CRATE-MAE (and MAE), as a plain function.

For a grid of h x w patches and width d (d divisible by 4), with q = d/4 and
frequencies w_k = 10000^(-k/q), k = 0..q-1, patch (row i, col j) gets

    [sin(j w), cos(j w), sin(i w), cos(i w)]        (d numbers)

the first half encoding the column, the second the row. A cls row of zeros
goes first. The official table is computed in float32 and stored in the
state dict as ``pos_embed`` / ``decoder_pos_embed`` (frozen); this function
computes it the same way, so a float32 model holds the official bits.
"""
import numpy as np


def sincos_pos_embed_2d(dim, grid_hw, cls_token=True):
    """Inputs: dim d (divisible by 4); grid_hw (h, w) patches per column and row;
    cls_token: prepend a row of zeros.
    Returns: a NumPy array (h w + 1, d) (or (h w, d)), rows in row-major patch order.
    """
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim <= 0 or dim % 4:
        raise ValueError(f"dim must be a positive multiple of 4 for a 2-D sin-cos table, "
                         f"got {dim!r}")
    h, w = grid_hw
    q = dim // 4
    omega = 1.0 / 10000 ** (np.arange(q, dtype=np.float32) / np.float32(q))   # (q,)
    rows, cols = np.meshgrid(np.arange(h, dtype=np.float32),
                             np.arange(w, dtype=np.float32), indexing="ij")   # (h, w) each
    col_angle = cols.reshape(-1, 1) * omega                                   # (h w, q)
    row_angle = rows.reshape(-1, 1) * omega                                   # (h w, q)
    table = np.concatenate([np.sin(col_angle), np.cos(col_angle),
                            np.sin(row_angle), np.cos(row_angle)], axis=1)    # (h w, d)
    table = table.astype(np.float64)
    if cls_token:
        table = np.concatenate([np.zeros((1, dim)), table], axis=0)           # (h w + 1, d)
    return table
