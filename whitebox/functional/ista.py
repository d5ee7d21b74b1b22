"""One ISTA step of non-negative sparse coding, as the official CRATE computes it.

The layer sparsifies Z against a dictionary D (the stored weight W, d x d)
by one proximal-gradient step on
    min_{Z >= 0}  lambda ||Z||_1 + 1/2 ||X - Z D^T||^2,
warm-started at Z = X (Yu et al., "White-Box Transformers via Sparse Rate
Reduction", 2023, section 2.4, written with tokens as rows):
    ISTA(X) = ReLU(X + eta (X W - X W^T W) - eta lambda).
The pre-activation is linear in X, so it is one product with the d x d
matrix M = I + eta (W - W^T W), formed once per call instead of three
products per token.
"""
from .activation import relu_in_place
from ._blas import matmul_rows
from ._checks import check_array, check_dout, check_features, check_shape


def ista_forward(x, W, eta=0.1, lam=0.1):
    """y = ReLU(x M - eta lambda),  M = I + eta (W - W^T W).

    Inputs: x (..., d); W (d, d); eta the step size; lam the sparsity weight.
    Returns: y (..., d), cache.
    """
    xp = check_array("x", x, ndim_min=1)
    d = W.shape[0]
    check_shape("ista: W", W, (d, d), " (square)")
    check_features("ista", "x", x, d, f"W of shape {tuple(W.shape)}")
    M = W - W.T @ W                                  # (d, d)
    M *= eta
    M[xp.arange(d), xp.arange(d)] += 1
    a = matmul_rows(x, M)                            # (..., d) pre-activation
    a -= eta * lam
    active = a > 0                                   # kept for the backward
    return relu_in_place(a), (x, W, M, active, eta)


def ista_backward(dout, cache):
    """GA = dout * [A > 0];  dx = GA M^T = GA + eta GA W^T - eta GA W^T W;
    dM = x^T GA;  dW = eta dM - eta W (dM + dM^T).

    Returns: dx (..., d), dW (d, d).
    """
    x, W, M, active, eta = cache
    check_dout("ista", dout, x.shape)
    d = W.shape[0]
    GA = dout * active                               # (..., d)
    dx = matmul_rows(GA, M.T)
    dM = x.reshape(-1, d).T @ GA.reshape(-1, d)      # (d, d)
    dW = dM - W @ (dM + dM.T)
    dW *= eta
    return dx, dW
