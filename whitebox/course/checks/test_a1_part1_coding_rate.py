"""A1 part 1: the coding rate R(Z) and its gradient (gram_logdet_*, coding_rate_*)."""
import numpy as np
import pytest

from course_helpers import assert_close, assert_gradient, describe, rng
from whitebox.rate import coding_rate, coding_rate_backward, coding_rate_forward
from whitebox.rate.gram import gram_logdet_backward, gram_logdet_forward


def direct_rate(Z, eps):
    """1/2 logdet(I + d/(N eps^2) Z^T Z), straight from the definition."""
    N, d = Z.shape
    return 0.5 * np.linalg.slogdet(np.eye(d) + d / (N * eps ** 2) * Z.T @ Z)[1]


@pytest.mark.parametrize("n, m, side", [(4, 7, "rows"), (4, 7, "cols"), (9, 3, "auto"),
                                        (9, 3, "rows")])
def test_gram_logdet_forward(n, m, side):
    X = rng(1).standard_normal((2, n, m))
    h, _ = gram_logdet_forward(X, 0.7, side)
    expected = [0.5 * np.linalg.slogdet(np.eye(m) + 0.7 * x.T @ x)[1] for x in X]
    assert_close("gram_logdet_forward", h, expected, describe(X=X, a=0.7, side=side), 1e-9)


@pytest.mark.parametrize("n, m, side", [(4, 7, "rows"), (9, 3, "cols"), (5, 5, "auto")])
def test_gram_logdet_backward(n, m, side):
    X = rng(2).standard_normal((2, n, m))
    dout = rng(3).standard_normal(2)
    _, cache = gram_logdet_forward(X, 0.7, side)
    dX = gram_logdet_backward(dout, cache)
    assert_gradient("gram_logdet_backward", "X", dX,
                    lambda: gram_logdet_forward(X, 0.7, side)[0], X, dout,
                    describe(X=X, a=0.7, side=side))


@pytest.mark.parametrize("N, d", [(6, 10), (20, 5)])
def test_coding_rate_value(N, d):
    Z = rng(4).standard_normal((N, d))
    assert_close("coding_rate", coding_rate(Z, 0.5), direct_rate(Z, 0.5),
                 describe(Z=Z, eps=0.5), 1e-9)


def test_coding_rate_batched():
    Z = rng(5).standard_normal((3, 8, 4))
    R = coding_rate(Z, 0.3)
    assert np.shape(R) == (3,), f"coding_rate of Z {Z.shape} must have shape (3,), got {np.shape(R)}"
    assert_close("coding_rate (batched)", R, [direct_rate(z, 0.3) for z in Z],
                 describe(Z=Z, eps=0.3), 1e-9)


@pytest.mark.parametrize("N, d", [(5, 8), (12, 3)])
def test_coding_rate_gradient(N, d):
    Z = rng(6).standard_normal((2, N, d))
    dout = rng(7).standard_normal(2)
    _, cache = coding_rate_forward(Z, 0.6)
    dZ = coding_rate_backward(dout, cache)
    assert_gradient("coding_rate_backward", "Z", dZ, lambda: coding_rate_forward(Z, 0.6)[0],
                    Z, dout, describe(Z=Z, eps=0.6, dout=dout),
                    hint="dR/dZ = a Z (I + a Z^T Z)^-1 with a = d / (N eps^2)")


def test_coding_rate_gradient_float32_dtype():
    Z = rng(8).standard_normal((6, 4)).astype(np.float32)
    _, cache = coding_rate_forward(Z, 0.5, accumulate="float64")
    dZ = coding_rate_backward(None, cache)
    assert dZ.dtype == np.float32, f"coding_rate_backward must return Z's dtype float32, got {dZ.dtype}"
