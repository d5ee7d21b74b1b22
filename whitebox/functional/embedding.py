"""Embedding lookup: integer ids -> rows of a table."""
import numpy as np

from ..backend import get_array_module


def check_ids(name, ids, num):
    """Integer ids in [0, num); CuPy would wrap bad ones silently, so check here."""
    xp = get_array_module(ids)
    if not isinstance(ids, xp.ndarray) or ids.dtype.kind not in "iu":
        raise TypeError(f"{name} must be an integer array, got "
                        f"{getattr(ids, 'dtype', type(ids).__name__)}")
    if ids.size:
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= num:
            bad = lo if lo < 0 else hi
            raise ValueError(f"{name} must lie in [0, {num}), found {bad}")


def embedding_forward(ids, W):
    """y = W[ids].  Inputs: ids (...) ints; W (V, d).  Returns: y (..., d), cache."""
    check_ids("ids", ids, W.shape[0])
    return W[ids], (ids, W.shape)


def embedding_backward(dout, cache):
    """dW[v] = sum of dout rows whose id is v (scatter-add: repeated ids accumulate)."""
    ids, shape = cache
    xp = get_array_module(dout)
    dW = xp.zeros(shape, dtype=dout.dtype)
    flat = ids.reshape(-1)
    if xp is np:
        np.add.at(dW, flat, dout.reshape(-1, shape[1]))
    else:
        xp.add.at(dW, flat, dout.reshape(-1, shape[1]))
    return dW
