"""Weight normalisation of a Linear weight, row by row (torch's weight_norm with dim=0).

    W_k = g_k v_k / ||v_k||,      v (d_out, d_in), g (d_out, 1)

Each output row keeps the direction of v_k and the length g_k. With
u_k = v_k / ||v_k||, the chain rule through the normalisation gives

    dg_k = <dW_k, u_k>,       dv_k = g_k / ||v_k|| (dW_k - u_k <u_k, dW_k>),

the gradient in v is orthogonal to v_k (scaling v_k changes nothing).
"""
from ._checks import check_array, check_dout


def weight_norm_forward(v, g):
    """W = g * v / ||v|| over the rows of v.

    Inputs: v (d_out, d_in), no zero row; g (d_out, 1).
    Returns: W (d_out, d_in), cache.
    """
    xp = check_array("v", v, ndim=2)
    check_array("g", g, ndim=2)
    if tuple(g.shape) != (v.shape[0], 1):
        raise ValueError(f"weight_norm: g has shape {tuple(g.shape)}, expected "
                         f"({v.shape[0]}, 1) for v of shape {tuple(v.shape)}")
    norm = xp.sqrt((v * v).sum(axis=1, keepdims=True))     # (d_out, 1)
    if not bool(xp.all(norm > 0)):
        raise ValueError("weight_norm: v has a zero row, whose direction is undefined")
    u = v / norm                                           # (d_out, d_in)
    return g * u, (u, norm, g)


def weight_norm_backward(dout, cache):
    """dv = g / ||v|| (dW - u <u, dW>),  dg = <dW, u> per row.

    Inputs: dout (d_out, d_in) the gradient of W; cache.
    Returns: dv (d_out, d_in), dg (d_out, 1).
    """
    u, norm, g = cache
    check_dout("weight_norm", dout, u.shape)
    dg = (dout * u).sum(axis=1, keepdims=True)             # (d_out, 1)
    dv = (g / norm) * (dout - u * dg)
    return dv, dg
