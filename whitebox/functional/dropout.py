"""Inverted dropout with the mask drawn from a passed-in generator."""
import numpy as np

from ._checks import check_probability
from ..backend import get_array_module, to_device, backend_name


def dropout_forward(x, p, rng=None, training=True):
    """y = x * mask / (1 - p), mask ~ Bernoulli(1 - p); identity when not training or p == 0.

    Inputs: x any shape; p in [0, 1); rng a numpy Generator (draws on the CPU,
    so NumPy and CuPy runs see the same mask).
    Returns: y, cache (the scaled mask, or None for identity).
    """
    p = check_probability("dropout probability p", p)
    if not training or p == 0.0:
        return x, None
    if rng is None:
        raise ValueError("dropout in training mode needs rng (a numpy.random.Generator)")
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"dropout rng must be a numpy.random.Generator, got "
                        f"{type(rng).__name__}")
    keep = rng.random(x.shape) >= p
    mask = (keep / (1.0 - p)).astype(x.dtype)
    xp = get_array_module(x)
    if xp is not np:
        mask = to_device(mask, backend_name(x))
    return x * mask, mask


def dropout_backward(dout, cache):
    """dx = dout * mask (the same scaled mask as forward)."""
    return dout if cache is None else dout * cache
