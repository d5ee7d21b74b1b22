"""Random patch masking for masked autoencoding, and mask tokens put in place.

The official CRATE-MAE rule: with L patches and ratio r, keep
``int(L (1 - r))`` patches per image, those with the SMALLEST noise
(argsort ascending); the mask is 1 on the removed ones. The encoder then
sees every position: removed patches are replaced by the learned
``mask_token`` in place,

    x_l <- (1 - m_l) x_l + m_l t        (m_l in {0, 1}, t the mask token)

so the gradient splits the same way: dx_l (1 - m_l) to the patch, and the
sum over removed positions to the token.
"""
import numpy as np

from ..backend import get_array_module


def num_kept(num_patches, mask_ratio):
    """How many patches the official rule keeps: int(L (1 - r))."""
    return int(num_patches * (1 - mask_ratio))


def mask_from_noise(noise, mask_ratio):
    """Inputs: noise (B, L) floats; mask_ratio r in [0, 1).
    Returns: mask (B, L) in noise's dtype, 1 on the L - int(L (1 - r)) patches
    with the largest noise, 0 on the rest.
    """
    xp = get_array_module(noise)
    B, L = noise.shape
    keep = num_kept(L, mask_ratio)
    # ascending: small is keep (CuPy's argsort is always stable and takes no kind)
    order = xp.argsort(noise, axis=1, **({"kind": "stable"} if xp is np else {}))
    mask = xp.ones((B, L), dtype=noise.dtype)
    rows = xp.arange(B)[:, None]
    mask[rows, order[:, :keep]] = 0
    return mask


def mask_tokens_forward(x, mask, token):
    """x (B, L, d) patch tokens; mask (B, L) of 0/1; token (1, 1, d).

    Returns: (1 - m) x + m t, shape (B, L, d), and the cache.
    """
    m = mask[:, :, None]                                    # (B, L, 1)
    return x * (1 - m) + m * token, m


def mask_tokens_backward(dout, cache):
    """dx = dout (1 - m);  dtoken = sum over (B, L) of dout m, shape (1, 1, d)."""
    m = cache
    dx = dout * (1 - m)
    dtoken = (dout * m).sum(axis=(0, 1)).reshape(1, 1, -1)
    return dx, dtoken
