"""Softmax over the last axis, with an optional additive mask (the causal mask of attention).

    y  = exp(z - max z) / sum exp(z - max z),   z = x + m
    dx = y * (dout - sum(dout * y))

m is 0 where an entry takes part and -inf where it does not (`causal_mask`);
a masked entry gets y = 0 and gradient 0. Subtracting the row max keeps exp
from overflowing and does not change y.

Two versions of the same math live here, as in layernorm.py:

- `softmax_forward` / `softmax_backward`: the READABLE REFERENCE, a new array
  per step. The models and tutorials call it; the tests hold the fast path to it.
- `softmax_fast_forward` / `softmax_fast_backward`: the FAST PATH of the
  attention, IN PLACE: the forward overwrites its input with y, the backward
  its upstream gradient with dx (three passes over the N x N scores instead
  of five). Where the fused loops of whitebox.functional.fused run, the max
  subtraction and the division by the sum are one compiled loop each. For
  MSSA's scores, a Gram matrix s w w^T, no shift is needed at all while the
  largest diagonal entry keeps exp in range (`_gram_needs_no_shift`): then
  there is no max and no subtraction, with either arrangement.
"""
import math

import numpy as np

from ..backend import get_array_module
from . import fused
from ._blas import sum_last, sum_last_product


def causal_mask(n_queries, n_keys, dtype, xp=np):
    """The additive causal mask m (n_queries, n_keys): 0 where query i may see key j, -inf after.

    The queries are the last n_queries of the n_keys positions, so query i sits
    at position n_keys - n_queries + i and sees keys 0 .. n_keys - n_queries + i
    (square: the lower triangle).
    """
    offset = n_keys - n_queries
    future = xp.arange(n_keys)[None, :] > (offset + xp.arange(n_queries))[:, None]
    return xp.where(future, -xp.inf, 0).astype(dtype)          # (n_queries, n_keys)


# ---------------------------------------------------------------- reference

def softmax_forward(x, mask=None):
    """y = exp(z - max z) / sum exp(z - max z), z = x + mask, over the last axis.

    Inputs: x (..., n); mask None or additive, broadcastable to x (0 or -inf).
    Returns: y (..., n), cache (y itself).
    """
    xp = get_array_module(x)
    z = x if mask is None else x + mask                       # (..., n)
    e = xp.exp(z - z.max(axis=-1, keepdims=True))             # (..., n) largest entry 1
    y = e / e.sum(axis=-1, keepdims=True)                     # (..., n) rows sum to one
    return y, y


def softmax_backward(dout, cache):
    """dx = y * (dout - sum(dout * y)) over the last axis (a masked entry has y = 0: dx = 0)."""
    y = cache
    return y * (dout - (dout * y).sum(axis=-1, keepdims=True))


# ---------------------------------------------------------------- fast path

def _gram_needs_no_shift(x):
    """True when exp(x) of a Gram matrix x = s w w^T (s > 0, (..., n, n)) can neither
    overflow nor lose a row to underflow, so softmax needs no shift at all.

    By Cauchy-Schwarz |x_ij| <= sqrt(x_ii x_jj) <= t, the largest diagonal entry,
    and each row's max is at least its own x_ii >= 0 (so exp of it is >= 1).
    Every row sum is then at most n e^t: below the dtype's largest number when
    t + log n < log(max) - 1. A NaN or infinity on the diagonal answers False.
    Host NumPy arrays only: on a device, reading t back would wait for the
    device every layer (the shift is kept there).
    """
    n = x.shape[-1]
    if type(x) is not np.ndarray or x.size == 0:
        return False
    top = x.diagonal(axis1=-2, axis2=-1).max()                # (..., n) diagonal, a view
    return bool(top < math.log(float(np.finfo(x.dtype).max)) - math.log(n) - 1)


def softmax_fast_forward(x, mask=None, symmetric=False, gram=False):
    """The same y as softmax_forward, written over x (fast path: x is consumed).

    Inputs: x (..., n), an array the caller gives up; mask as softmax_forward;
    symmetric: x (..., n, n) is symmetric in its last two axes and unmasked,
    so each row's max is its column's, a reduction NumPy vectorises (any
    shift near the row max keeps exp in range; the result is the same y);
    gram: x (..., n, n) is moreover a Gram matrix s w w^T with s > 0 (the
    scores of MSSA), and when its largest diagonal entry is small enough
    (`_gram_needs_no_shift`) exp(x) is taken with no shift: no max and one
    pass over the scores fewer. The result is the same y.
    Returns: y (x itself, now holding it), cache (y).
    """
    xp = get_array_module(x)
    if mask is not None:
        x += mask
    loops = fused.usable(x)                                   # contiguous: rows below is a view
    rows = x.reshape(-1, x.shape[-1])                         # (rows, n)
    if gram and mask is None and _gram_needs_no_shift(x):
        pass                                                  # exp(x) stays in range
    elif loops:
        fused.subtract_row_max(rows)
    elif symmetric and mask is None:
        x -= x.max(axis=-2)[..., None]                        # column max = row max
    else:
        x -= x.max(axis=-1, keepdims=True)
    y = xp.exp(x, out=x)
    if loops:
        fused.divide_row_sum(rows)
    else:
        y /= sum_last(y)                                      # (..., n)
    return y, y


def softmax_fast_backward(dout, cache):
    """dx = y * (dout - sum(dout * y)), written over dout (fast path: dout is consumed)."""
    y = cache
    dout -= sum_last_product(dout, y)                         # (..., n) sum without a temporary
    dout *= y
    return dout
