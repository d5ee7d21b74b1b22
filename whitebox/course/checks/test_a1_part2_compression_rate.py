"""A1 part 2: the compression rate Rc(Z | U), its gradients in Z and U, one exact step."""
import numpy as np
import pytest

from course_helpers import assert_close, assert_gradient, describe, numerical_gradient, rng
from whitebox.rate import compression_rate, compression_step
from whitebox.rate.compression import compression_rate_backward, compression_rate_forward


def direct_rc(Z, U, eps):
    N = Z.shape[0]
    K, d, p = U.shape
    b = p / (N * eps ** 2)
    return sum(0.5 * np.linalg.slogdet(np.eye(p) + b * (Z @ U[k]).T @ (Z @ U[k]))[1]
               for k in range(K))


def inputs(seed, B=2, N=6, d=5, K=3, p=2):
    r = rng(seed)
    return r.standard_normal((B, N, d)), r.standard_normal((K, d, p))


@pytest.mark.parametrize("N, p", [(6, 2), (3, 4)])
def test_compression_rate_value(N, p):
    Z, U = inputs(1, N=N, d=5, p=p)
    Rc = compression_rate(Z, U, 0.5)
    assert_close("compression_rate", Rc, [direct_rc(z, U, 0.5) for z in Z],
                 describe(Z=Z, U=U, eps=0.5), 1e-9)


def test_compression_rate_gradient_Z():
    Z, U = inputs(2)
    dout = rng(3).standard_normal(2)
    _, cache = compression_rate_forward(Z, U, 0.5)
    dZ, _ = compression_rate_backward(dout, cache)
    assert_gradient("compression_rate_backward", "Z", dZ,
                    lambda: compression_rate_forward(Z, U, 0.5)[0], Z, dout,
                    describe(Z=Z, U=U, eps=0.5),
                    hint="dRc/dZ = sum_k G_k U_k^T with G_k the gradient through W_k = Z U_k")


def test_compression_rate_gradient_U():
    Z, U = inputs(4)
    dout = rng(5).standard_normal(2)
    _, cache = compression_rate_forward(Z, U, 0.5)
    _, dU = compression_rate_backward(dout, cache)
    assert_gradient("compression_rate_backward", "U", dU,
                    lambda: compression_rate_forward(Z, U, 0.5)[0], U, dout,
                    describe(Z=Z, U=U, eps=0.5),
                    hint="dRc/dU_k = Z^T G_k, summed over the batch")


def test_compression_step():
    Z, U = inputs(6, B=1)
    Z = Z[0]
    kappa = 0.05
    Z1 = compression_step(Z, U, 0.5, kappa)
    numeric = numerical_gradient(lambda: compression_rate(Z, U, 0.5), Z, np.ones(()))
    assert_close("compression_step", Z1, Z - kappa * numeric,
                 describe(Z=Z, U=U, eps=0.5, kappa=kappa), 1e-6)
    assert direct_rc(Z1, U, 0.5) < direct_rc(Z, U, 0.5), \
        "compression_step with a small kappa must lower Rc"
