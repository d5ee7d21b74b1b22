"""Gradient clipping by the global norm, as torch.nn.utils.clip_grad_norm_.

    total = sqrt( sum over every gradient of sum(g^2) )
    if total > max_norm:   g <- g * max_norm / (total + 1e-6)    for every g
"""
import math

from ..backend import get_array_module
from .optimizer import to_float


def clip_grad_norm(grads, max_norm, error_if_nonfinite=False):
    """Scale all gradients in place so that their joint L2 norm is at most ``max_norm``.

    Inputs: grads, a dict name -> array or a Module (its ``grads()``);
    max_norm > 0; error_if_nonfinite, raise RuntimeError when the norm is NaN
    or infinite (otherwise such gradients are left untouched).
    Returns: the total norm BEFORE clipping, as a Python float.
    """
    from ..nn.module import Module

    if isinstance(grads, Module):
        grads = grads.grads()
    if not isinstance(grads, dict):
        raise TypeError(f"grads must be a dict of name -> array or a Module, "
                        f"got {type(grads).__name__}")
    max_norm = to_float("max_norm", max_norm)
    if not max_norm > 0:   # +inf is allowed: it only measures the norm
        raise ValueError(f"max_norm must be > 0, got {max_norm!r}")
    if not grads:
        return 0.0
    arrays = list(grads.values())
    xp = get_array_module(*arrays)
    # sum on the device in float64; a single float() at the end syncs once
    total_sq = xp.zeros((), dtype=xp.float64)
    for g in arrays:
        g64 = g.astype(xp.float64, copy=False)   # float32 squares could overflow
        total_sq = total_sq + xp.sum(g64 * g64)
    total = math.sqrt(float(total_sq))
    if not math.isfinite(total):
        if error_if_nonfinite:
            raise RuntimeError(f"clip_grad_norm: the total gradient norm is {total}; "
                               "some gradient holds NaN or infinite values")
        return total
    if total > max_norm:
        scale = max_norm / (total + 1e-6)
        for g in arrays:
            g *= scale
    return total
