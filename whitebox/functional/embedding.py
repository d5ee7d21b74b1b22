"""Embedding lookup: integer ids -> rows of a table."""
from ..backend import get_array_module
from ._checks import check_dout, check_ids


def embedding_forward(ids, W):
    """y = W[ids].  Inputs: ids (...) ints; W (V, d).  Returns: y (..., d), cache."""
    if W.ndim != 2:
        raise ValueError(f"embedding: table W must be 2-dimensional (V, d), "
                         f"got shape {tuple(W.shape)}")
    check_ids("ids", ids, W.shape[0])
    return W[ids], (ids, W.shape)


def embedding_backward(dout, cache):
    """dW[v] = sum of dout rows whose id is v (scatter-add: repeated ids accumulate)."""
    ids, shape = cache
    check_dout("embedding", dout, tuple(ids.shape) + (shape[1],))
    xp = get_array_module(dout)
    dW = xp.zeros(shape, dtype=dout.dtype)
    # dW[ids] += dout would keep only one row per repeated id; add.at sums them all
    xp.add.at(dW, ids.reshape(-1), dout.reshape(-1, shape[1]))   # (V, d)
    return dW
