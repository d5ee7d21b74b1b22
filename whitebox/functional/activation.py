"""Pointwise nonlinearities: ReLU and GELU (exact erf form or tanh approximation)."""
import math

from ..backend import erf, get_array_module


def relu_forward(x):
    """y = max(x, 0).  Returns: y (same shape), cache."""
    mask = x > 0
    return x * mask, mask


def relu_backward(dout, cache):
    """dx = dout * [x > 0]."""
    return dout * cache


def relu_in_place(a):
    """a <- max(a, 0), in place; returns a. Against a row of zeros: NumPy's maximum with a
    scalar 0 runs a loop about twice as slow as its loop over two arrays (both propagate NaN)."""
    xp = get_array_module(a)
    return xp.maximum(a, xp.zeros(a.shape[-1], dtype=a.dtype), out=a)


def gelu_forward(x, approximate="none"):
    """GELU as torch.nn.GELU: x * Phi(x) ('none') or the tanh approximation ('tanh')."""
    xp = get_array_module(x)
    if approximate == "none":
        phi = 0.5 * (1.0 + erf(x / math.sqrt(2.0)))
        return x * phi, (x, phi, approximate)
    if approximate == "tanh":
        c = math.sqrt(2.0 / math.pi)
        t = xp.tanh(c * (x + 0.044715 * x ** 3))
        return 0.5 * x * (1.0 + t), (x, t, approximate)
    raise ValueError(f"approximate must be 'none' or 'tanh', got {approximate!r}")


def gelu_backward(dout, cache):
    """'none': dx = dout (Phi(x) + x phi(x));  'tanh': derivative of the tanh form."""
    x, aux, approximate = cache
    xp = get_array_module(x)
    if approximate == "none":
        pdf = xp.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)
        return dout * (aux + x * pdf)
    c = math.sqrt(2.0 / math.pi)
    t = aux
    dinner = c * (1.0 + 3 * 0.044715 * x * x)
    return dout * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * dinner)
