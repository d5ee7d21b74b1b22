"""Patch embedding as the official CRATE-MAE computes it: a convolution with
kernel = stride = patch (``patch_embed.proj``), i.e. one matrix product on
patch vectors.

The conv weight W (d, C, p1, p2) reads each patch in (channel, row, col)
order; whitebox's patchify gives (row, col, channel) order. So the conv is
patchify followed by a linear map with the weight viewed in that order:

    W_rows = W.transpose(0, 2, 3, 1).reshape(d, p1 p2 C)
    y = patchify(images) W_rows^T + b                   (B, L, d)
"""
from ._checks import check_array
from .linear import linear_backward, linear_forward
from .patches import patchify_backward, patchify_forward


def patch_embed_forward(images, W, b):
    """Inputs: images (B, C, H, W); W (d, C, p1, p2); b (d,).
    Returns: tokens (B, L, d), cache.
    """
    d, C, p1, p2 = W.shape
    check_array("images", images, ndim=4)
    if images.shape[1] != C:
        raise ValueError(f"patch_embed: images have {images.shape[1]} channels (shape "
                         f"{tuple(images.shape)}), expected {C} to match W of shape "
                         f"{tuple(W.shape)}")
    patches, pcache = patchify_forward(images, (p1, p2))          # (B, L, p1 p2 C)
    W_rows = W.transpose(0, 2, 3, 1).reshape(d, p1 * p2 * C)      # (d, p1 p2 C)
    y, lcache = linear_forward(patches, W_rows, b)                # (B, L, d)
    return y, (pcache, lcache, W.shape)


def patch_embed_backward(dout, cache):
    """dW_rows = dout^T patches (back to the conv layout); db = sum dout;
    dimages = unpatchify(dout W_rows).
    Returns: dimages (B, C, H, W), dW (d, C, p1, p2), db (d,).
    """
    pcache, lcache, (d, C, p1, p2) = cache
    dpatches, dW_rows, db = linear_backward(dout, lcache)
    dW = dW_rows.reshape(d, p1, p2, C).transpose(0, 3, 1, 2)      # (d, C, p1, p2)
    return patchify_backward(dpatches, pcache), dW, db
