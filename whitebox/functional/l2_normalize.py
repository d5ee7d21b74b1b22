"""L2 normalisation over the last axis, as torch.nn.functional.normalize(x, dim=-1).

    y = x / max(||x||, eps)

Where ||x|| > eps, y is on the unit sphere and its Jacobian is the projection
onto the sphere's tangent space, scaled by 1/||x||:

    dx = (dout - y <y, dout>) / ||x||.

Where ||x|| <= eps the divisor is the constant eps, so dx = dout / eps.
"""
from ..backend import get_array_module
from ._checks import check_array, check_dout, check_real


def l2_normalize_forward(x, eps=1e-12):
    """y = x / max(||x||_2, eps) over the last axis.

    Inputs: x (..., d) floating; eps > 0 the floor on the norm (torch's default 1e-12).
    Returns: y (..., d), cache.
    """
    xp = check_array("x", x, ndim_min=1)
    eps = check_real("eps", eps, 0.0, low_open=True)
    norm = xp.sqrt((x * x).sum(axis=-1, keepdims=True))      # (..., 1)
    floored = norm <= eps
    denom = xp.where(floored, eps, norm).astype(x.dtype, copy=False)
    y = x / denom
    return y, (y, denom, floored)


def l2_normalize_backward(dout, cache):
    """dx = (dout - y <y, dout>) / ||x||, or dout / eps where the norm was floored.

    Returns: dx (..., d).
    """
    y, denom, floored = cache
    check_dout("l2_normalize", dout, y.shape)
    xp = get_array_module(y)
    tangent = dout - y * (y * dout).sum(axis=-1, keepdims=True)
    return xp.where(floored, dout, tangent) / denom
