"""Input checks for the rate functions: clear errors that name the argument."""
import math
import numbers

import numpy as np

from ..backend import get_array_module
from ..functional._checks import check_class_labels

ACCUMULATE = (None, "float32", "float64")


def check_eps(eps, name="eps"):
    """A positive, finite real number, returned as a Python float."""
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real):
        raise TypeError(f"{name} must be a positive real number, got {eps!r} "
                        f"of type {type(eps).__name__}")
    eps = float(eps)
    if not (math.isfinite(eps) and eps > 0):
        raise ValueError(f"{name} must be a positive finite number, got {eps!r}")
    return eps


def rate_scale(dim, N, eps, name="eps"):
    """a = dim / (N eps^2), refusing an eps so small that the scale overflows float64."""
    a = dim / N / eps / eps                 # not eps ** 2: that underflows to 0 first
    if not math.isfinite(a):
        smallest = math.sqrt(dim / N / np.finfo(np.float64).max)
        raise ValueError(f"{name} = {eps!r} is too small: the scale {dim}/(N {name}^2) "
                         f"overflows float64; {name} must be at least {smallest:.3g} (and "
                         f"larger still for features that are not tiny)")
    return a


def check_tokens(name, Z):
    """Z: a floating array (..., N, d) with at least one token and one feature, all finite."""
    xp = get_array_module(Z)
    if not isinstance(Z, xp.ndarray):
        raise TypeError(f"{name} must be an array of shape (N, d) or (B, N, d), "
                        f"got {type(Z).__name__}")
    if Z.dtype.kind != "f":
        raise TypeError(f"{name} must be a floating-point array, got dtype {Z.dtype}")
    if Z.ndim < 2:
        raise ValueError(f"{name} must have shape (N, d) or (B, N, d) (tokens as rows), "
                         f"got shape {tuple(Z.shape)}")
    if Z.shape[-1] == 0 or Z.shape[-2] == 0:
        raise ValueError(f"{name} must have at least one token and one feature, "
                         f"got shape {tuple(Z.shape)}")
    if not bool(xp.all(xp.isfinite(Z))):
        raise ValueError(f"{name} contains NaN or infinite values")
    return xp


def check_bases(U, Z, name="U"):
    """U: a floating array (K, d, p) on Z's backend whose d matches Z's last axis."""
    xp = get_array_module(Z)
    if get_array_module(U) is not xp or not isinstance(U, xp.ndarray):
        raise TypeError(f"{name} must be an array on the same backend as Z "
                        f"({xp.__name__}), got {type(U).__module__}.{type(U).__name__}")
    if U.dtype.kind != "f":
        raise TypeError(f"{name} must be a floating-point array, got dtype {U.dtype}")
    if U.ndim != 3:
        raise ValueError(f"{name} must have shape (K, d, p) (one d x p basis per subspace), "
                         f"got shape {tuple(U.shape)}")
    if U.shape[1] != Z.shape[-1]:
        raise ValueError(f"{name} has shape {tuple(U.shape)}, so d = {U.shape[1]}, but Z has "
                         f"d = {Z.shape[-1]} features (shape {tuple(Z.shape)})")
    if U.shape[0] == 0 or U.shape[2] == 0:
        raise ValueError(f"{name} must have K >= 1 subspaces of dimension p >= 1, "
                         f"got shape {tuple(U.shape)}")
    if not bool(xp.all(xp.isfinite(U))):
        raise ValueError(f"{name} contains NaN or infinite values")


def check_labels(labels, N, xp, name="labels"):
    """Non-negative integer labels of shape (N,), on the features' backend ``xp``."""
    if get_array_module(labels) is not xp or not isinstance(labels, xp.ndarray):
        raise TypeError(f"{name} must be an integer array on the same backend as Z "
                        f"({xp.__name__}), got {type(labels).__module__}."
                        f"{type(labels).__name__}; move it with whitebox.to_device")
    check_class_labels(name, labels, N)


def check_accumulate(accumulate):
    """None (work in Z's dtype, promoted to float64 when float32 cannot hold the answer),
    'float32' (refuse instead of promoting) or 'float64'; returned as a dtype or None."""
    if accumulate is None:
        return None
    try:
        name = np.dtype(accumulate).name
    except TypeError:
        name = None
    if name not in ACCUMULATE[1:]:
        raise ValueError(f"accumulate must be one of {ACCUMULATE}, got {accumulate!r}")
    return np.dtype(name)


def check_dout(dout, shape, xp, name="dout"):
    """The upstream gradient of a batched rate: shape Z.shape[:-2] (ones when None)."""
    if dout is None:
        return None
    if not isinstance(dout, xp.ndarray):
        dout = xp.asarray(dout)
    if tuple(dout.shape) != tuple(shape):
        raise ValueError(f"{name} must have the shape of the rate, {tuple(shape)}, "
                         f"got {tuple(dout.shape)}")
    return dout
