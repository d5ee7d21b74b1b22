"""Gradient clipping by the global norm, as torch.nn.utils.clip_grad_norm_.

    total = sqrt( sum over every gradient of sum(g^2) )
    g <- g * min(1, max_norm / (total + 1e-6))    for every g

Everything stays on the device: the norm and the scale are 0-d arrays and
there is no Python ``if`` on them, so a CuPy step is not stalled by a
device-to-host copy. Convert the returned norm with ``float()`` only when you
log it.
"""
from ..backend import get_array_module
from ..functional._checks import to_float


def clip_grad_norm(grads, max_norm, error_if_nonfinite=False):
    """Scale all gradients in place so that their joint L2 norm is at most ``max_norm``.

    Inputs: grads, a dict name -> array or a Module (its ``grads()``);
    max_norm > 0 (+inf only measures); error_if_nonfinite, raise RuntimeError
    when the norm is NaN or infinite (this one reads the norm on the host);
    otherwise such gradients are left untouched.
    Returns: the total norm BEFORE clipping, a 0-d float64 array on the
    gradients' backend.
    """
    from ..nn.module import Module

    if isinstance(grads, Module):
        grads = grads.grads()
    if not isinstance(grads, dict):
        raise TypeError(f"grads must be a dict of name -> array or a Module, "
                        f"got {type(grads).__name__}")
    max_norm = to_float("max_norm", max_norm)
    if not max_norm > 0:
        raise ValueError(f"max_norm must be > 0, got {max_norm!r}")
    arrays = list(grads.values())
    xp = get_array_module(*arrays)
    total_sq = xp.zeros((), dtype=xp.float64)
    for g in arrays:
        g64 = g.astype(xp.float64, copy=False)   # float32 squares could overflow
        total_sq = total_sq + xp.sum(g64 * g64)
    total = xp.sqrt(total_sq)                     # 0-d, on the device
    if error_if_nonfinite and not bool(xp.isfinite(total)):
        raise RuntimeError(f"clip_grad_norm: the total gradient norm is {float(total)}; "
                           "some gradient holds NaN or infinite values")
    scale = xp.minimum(1.0, max_norm / (total + 1e-6))
    scale = xp.where(xp.isfinite(total), scale, 1.0)   # non-finite: leave them as they are
    for g in arrays:
        g *= scale.astype(g.dtype)
    return xp.asarray(total)              # NumPy would hand back a scalar
