"""The overcomplete two-step ISTA pair: a plain-loop reference and finite differences."""
import numpy as np
import pytest

from whitebox.backend import to_device, to_numpy
from whitebox.functional.overcomplete_ista import (overcomplete_ista_backward,
                                                   overcomplete_ista_forward)
from whitebox.gradcheck import check_backward


def loop_two_steps(x, D, eta, lam):
    """Each token on its own: two proximal steps from c = 0, written as the equations."""
    rows = x.reshape(-1, x.shape[-1])
    out = []
    for row in rows:
        a = row @ D
        c1 = np.maximum(eta * a - eta * lam, 0.0)
        residual = row - c1 @ D.T                    # x - c1 D^T
        c2 = np.maximum(c1 + eta * (residual @ D) - eta * lam, 0.0)
        out.append(c2)
    return np.array(out).reshape(x.shape[:-1] + (D.shape[1],))


def _inputs(rng, lead=(2, 3), d=4, m=12):
    x = rng.standard_normal(lead + (d,))
    D = rng.standard_normal((d, m)) / np.sqrt(d)
    return x, D


@pytest.mark.parametrize("eta,lam", [(0.1, 0.1), (0.5, 0.05), (1.0, 0.3)])
def test_forward_matches_the_equations(eta, lam):
    x, D = _inputs(np.random.default_rng(0))
    out, _ = overcomplete_ista_forward(x, D, eta, lam)
    assert out.shape == (2, 3, 12)
    np.testing.assert_allclose(out, loop_two_steps(x, D, eta, lam), rtol=1e-12, atol=1e-12)
    assert (out == 0).any() and (out > 0).any()      # the test sees both sides of the ReLU


@pytest.mark.parametrize("eta,lam,lead", [(0.5, 0.05, (2, 3)), (1.0, 0.1, (7,))])
def test_backward_matches_finite_differences(eta, lam, lead):
    x, D = _inputs(np.random.default_rng(1), lead)
    errors = check_backward(lambda x, D: overcomplete_ista_forward(x, D, eta, lam),
                            overcomplete_ista_backward, (x, D), tol=1e-7)
    assert max(errors.values()) < 1e-7


def test_a_wrong_gram_term_is_caught():
    """Dropping the D (dG + dG^T) term of dD must fail the check: the test can fail."""
    x, D = _inputs(np.random.default_rng(2))

    def wrong_backward(dout, cache):
        dx, dD = overcomplete_ista_backward(dout, cache)
        x_, D_, c1, S, a1, a2, eta = cache
        G2 = dout * a2
        dS = c1.reshape(-1, D_.shape[1]).T @ G2.reshape(-1, D_.shape[1])
        return dx, dD + eta * (D_ @ (dS + dS.T))     # undo the Gram term
    with pytest.raises(AssertionError):
        errors = check_backward(lambda x, D: overcomplete_ista_forward(x, D, 1.0, 0.05),
                                wrong_backward, (x, D), tol=1e-7)
        assert max(errors.values()) < 1e-7


def test_shape_errors_name_the_arguments():
    x, D = _inputs(np.random.default_rng(3))
    with pytest.raises(ValueError, match=r"overcomplete_ista: x has \d+ input features .*to match D \(d, m\)"):
        overcomplete_ista_forward(x, D.T)


@pytest.mark.gpu
def test_cupy_matches_numpy():
    x, D = _inputs(np.random.default_rng(4))
    out64, cache = overcomplete_ista_forward(x, D, 0.5, 0.05)
    outg, cacheg = overcomplete_ista_forward(to_device(x.astype(np.float32), "cupy"),
                                             to_device(D.astype(np.float32), "cupy"), 0.5, 0.05)
    np.testing.assert_allclose(to_numpy(outg), out64, rtol=1e-4, atol=1e-5)
    dout = np.random.default_rng(5).standard_normal(out64.shape)
    dx, dD = overcomplete_ista_backward(dout, cache)
    dxg, dDg = overcomplete_ista_backward(to_device(dout.astype(np.float32), "cupy"), cacheg)
    np.testing.assert_allclose(to_numpy(dxg), dx, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(to_numpy(dDg), dD, rtol=1e-4, atol=1e-4)
