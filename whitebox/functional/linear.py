"""Affine map y = x W^T + b over the last axis (PyTorch's F.linear)."""
from ._blas import matmul_rows, sum_leading
from ._checks import check_array, check_dout, check_features, check_shape


def linear_forward(x, W, b=None):
    """y = x W^T + b.

    Inputs: x (..., d_in); W (d_out, d_in); b (d_out,) or None.
    Returns: y (..., d_out), cache.
    """
    check_array("x", x, ndim_min=1), check_array("W", W, ndim=2)
    check_features("linear", "x", x, W.shape[1], f"weight of shape {tuple(W.shape)}")
    check_shape("linear: bias b", b, (W.shape[0],), f" to match weight of shape {tuple(W.shape)}")
    y = matmul_rows(x, W.T)                  # (..., d_out)
    if b is not None:
        y += b
    return y, (x, W, b is not None)


def linear_backward(dout, cache):
    """dx = dout W;  dW = dout^T x (summed over leading axes);  db = sum dout.

    Returns: dx (..., d_in), dW (d_out, d_in), db (d_out,) or None.
    """
    x, W, has_bias = cache
    check_dout("linear", dout, x.shape[:-1] + (W.shape[0],))
    dx = matmul_rows(dout, W)                            # (..., d_in)
    d_out, d_in = W.shape
    dW = dout.reshape(-1, d_out).T @ x.reshape(-1, d_in)  # (d_out, d_in)
    db = sum_leading(dout) if has_bias else None
    return dx, dW, db
