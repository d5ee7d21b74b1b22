"""Embedding lookup: integer ids -> rows of a table."""
from ..backend import checks_values, get_array_module
from ._checks import check_dout


def check_ids(name, ids, num):
    """Integer ids in [0, num). CuPy would wrap bad ones silently: the range is
    read on the host (NumPy), or on a device with backend.set_device_checks."""
    xp = get_array_module(ids)
    if not isinstance(ids, xp.ndarray) or ids.dtype.kind not in "iu":
        raise TypeError(f"{name} must be an integer array, got "
                        f"{getattr(ids, 'dtype', type(ids).__name__)}")
    if ids.size and checks_values(ids):
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= num:
            bad = lo if lo < 0 else hi
            raise ValueError(f"{name} must lie in [0, {num}), found {bad}")


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
