"""Numerically stable softmax over the last axis."""
from ..backend import get_array_module


def softmax_forward(x):
    """y = exp(x - max x) / sum exp(x - max x), over the last axis.  Returns: y, cache."""
    xp = get_array_module(x)
    e = xp.exp(x - x.max(axis=-1, keepdims=True))
    y = e / e.sum(axis=-1, keepdims=True)
    return y, y


def softmax_backward(dout, cache):
    """dx = y * (dout - sum(dout * y)) over the last axis."""
    y = cache
    return y * (dout - (dout * y).sum(axis=-1, keepdims=True))
