"""Two ISTA steps from zero against an overcomplete dictionary (CRATE-alpha, CRATE-LM).

With a dictionary D of shape (d, m), m = expansion * d >= d, the sparse code
of a token x (a row, length d) is the non-negative LASSO solution
    min_{c >= 0}  lambda ||c||_1 + 1/2 ||x - c D^T||^2.
CRATE-alpha and the overcomplete causal CRATE take two proximal-gradient
steps on it, starting from c = 0 (tokens as rows, a = x D):
    c1 = ReLU(eta a - eta lambda)                                first step from 0
    c2 = ReLU(c1 + eta (a - c1 D^T D) - eta lambda)               second step
and return c2 (shape (..., m)). Decoding the code back to width d (c2 D^T in
the language model, c2 D1^T with a separate D1 in CRATE-alpha) is a plain
linear map and stays outside this operator.

The language model stores W = D^T of shape (m, d); CRATE-alpha stores D
itself. Both call this one pair.

The Gram matrix D^T D (m x m) is never formed: c1 D^T D is computed as
(c1 D^T) D, two products of N x d x m each, instead of d m^2 to form the
Gram plus N m^2 to apply it (at m = 4d the Gram route costs about twice as
much per token, and forming it alone costs d m^2 per call: at d = 768 that
dominates a step at small batch and every generated token).
"""
from .activation import relu_in_place
from ._blas import matmul_rows
from ._checks import check_array, check_dout, check_features


def overcomplete_ista_forward(x, D, eta=0.1, lam=0.1):
    """c2 = ReLU(c1 (I - eta D^T D) + eta a - eta lambda), c1 = ReLU(eta a - eta lambda), a = x D.

    Inputs: x (..., d); D (d, m); eta the step size; lam the sparsity weight.
    Returns: c2 (..., m), cache.
    """
    xp, _ = check_array("x", x, ndim_min=1), check_array("D", D, ndim=2)
    check_features("overcomplete_ista", "x", x, D.shape[0], f"D (d, m) of shape {tuple(D.shape)}")
    u1 = matmul_rows(x, D)                           # (..., m) a = x D, correlations with atoms
    u1 *= eta
    u1 -= eta * lam                                  # first step's pre-activation, in place
    active1 = u1 > 0
    c1 = xp.maximum(u1, 0)                           # c1 = ReLU(u1)
    r = matmul_rows(c1, D.T)                         # (..., d) c1 D^T, the first reconstruction
    u2 = matmul_rows(r, D)                           # (..., m) c1 D^T D
    u2 *= -eta
    u2 += c1                                         # c1 - eta c1 D^T D
    u2 += u1                                         # + eta a - eta lambda
    active2 = u2 > 0
    relu_in_place(u2)                                # c2 = ReLU(u2), in place
    return u2, (x, D, c1, r, active1, active2, eta)


def overcomplete_ista_backward(dout, cache):
    """With G2 = dout * [u2 > 0], q = G2 D^T and r = c1 D^T:
        G1 = (G2 - eta q D) * [u1 > 0];  da = eta (G2 + G1);
        dD = x^T da - eta (r^T G2 + q^T c1);  dx = da D^T.

    Returns: dx (..., d), dD (d, m).
    """
    x, D, c1, r, active1, active2, eta = cache
    check_dout("overcomplete_ista", dout, c1.shape)
    d, m = D.shape
    G2 = dout * active2                              # (..., m)
    q = matmul_rows(G2, D.T)                         # (..., d) G2 D^T
    G1 = matmul_rows(q, D)                           # (..., m) G2 D^T D
    G1 *= -eta
    G1 += G2                                         # G2 (I - eta D^T D)
    G1 *= active1                                    # through the first step
    da = G1                                          # in place from here: G1 is not needed again
    da += G2
    da *= eta                                        # (..., m)
    dD = x.reshape(-1, d).T @ da.reshape(-1, m)      # (d, m) through a = x D
    # through c1 D^T D: d/dD of -eta <G2, c1 D^T D> = -eta (r^T G2 + q^T c1)
    dD -= eta * (r.reshape(-1, d).T @ G2.reshape(-1, m)
                 + q.reshape(-1, d).T @ c1.reshape(-1, m))
    dx = matmul_rows(da, D.T)                        # (..., d)
    return dx, dD
