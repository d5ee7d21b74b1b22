"""Layer normalisation over the last axis, as torch.nn.LayerNorm computes it."""
from ._blas import mean_last, sum_leading
from ._checks import check_array, check_dout


def layernorm_forward(x, gamma, beta, eps=1e-5):
    """y = (x - mean) / sqrt(var + eps) * gamma + beta, biased variance.

    Inputs: x (..., d); gamma, beta (d,).
    Returns: y (..., d), cache.
    """
    xp = check_array("x", x, ndim_min=1)
    for name, v in (("gamma", gamma), ("beta", beta)):
        if v.ndim != 1:
            raise ValueError(f"layernorm: {name} must be 1-dimensional (d,), "
                             f"got shape {tuple(v.shape)}")
    if gamma.shape != beta.shape:
        raise ValueError(f"layernorm: gamma has shape {tuple(gamma.shape)} but beta has "
                         f"{tuple(beta.shape)}")
    if x.shape[-1] != gamma.shape[0]:
        raise ValueError(f"layernorm: x has last dimension {x.shape[-1]} (shape "
                         f"{tuple(x.shape)}), expected {gamma.shape[0]} (normalized shape)")
    xc = x - mean_last(x)                                # (..., d) centred
    var = mean_last(xc * xc)                             # (..., 1) biased, as PyTorch
    rstd = 1.0 / xp.sqrt(var + eps)                      # (..., 1)
    xc *= rstd                                           # in place: xc becomes xhat
    xhat = xc
    y = xhat * gamma
    y += beta
    return y, (xhat, rstd, gamma)


def layernorm_backward(dout, cache):
    """g = dout * gamma;  dx = (g - mean(g) - xhat * mean(g * xhat)) / sigma.

    dgamma = sum dout * xhat;  dbeta = sum dout (over all leading axes).
    Returns: dx (..., d), dgamma (d,), dbeta (d,).
    """
    xhat, rstd, gamma = cache
    check_dout("layernorm", dout, xhat.shape)
    g = dout * gamma                                     # (..., d)
    correction = xhat * mean_last(g * xhat)
    correction += mean_last(g)
    g -= correction                                      # in place: g becomes dx * sigma
    g *= rstd
    dx = g
    dgamma = sum_leading(dout * xhat)
    dbeta = sum_leading(dout)
    return dx, dgamma, dbeta
