"""A3 part 1: one ISTA step forward and backward."""
import numpy as np
import pytest

from course_helpers import assert_close, assert_gradient, describe, rng
from whitebox.functional import ista_backward, ista_forward


def inputs(seed, shape=(2, 5, 6)):
    r = rng(seed)
    x = r.standard_normal(shape)
    W = r.standard_normal((shape[-1], shape[-1])) * 0.3
    return x, W


def direct(x, W, eta, lam):
    """ReLU(x + eta (x W - x W^T W) - eta lam): the proximal step, warm-started at x."""
    return np.maximum(x + eta * (x @ W - x @ W.T @ W) - eta * lam, 0)


@pytest.mark.parametrize("eta, lam", [(0.1, 0.1), (0.5, 0.3)])
def test_ista_forward(eta, lam):
    x, W = inputs(1)
    y, _ = ista_forward(x, W, eta, lam)
    assert_close("ista_forward", y, direct(x, W, eta, lam),
                 describe(x=x, W=W, eta=eta, lam=lam), 1e-10)


def test_ista_forward_2d():
    x, W = inputs(2, (7, 4))
    assert_close("ista_forward (2-D x)", ista_forward(x, W)[0], direct(x, W, 0.1, 0.1),
                 describe(x=x, W=W), 1e-10)


@pytest.mark.parametrize("wrt", ["x", "W"])
def test_ista_backward(wrt):
    x, W = inputs(3)
    pre = x + 0.2 * (x @ W - x @ W.T @ W) - 0.2 * 0.1
    assert np.abs(pre).min() > 1e-4         # the check stays away from the ReLU's kink
    dout = rng(4).standard_normal(x.shape)
    _, cache = ista_forward(x, W, 0.2, 0.1)
    grads = dict(zip(("x", "W"), ista_backward(dout, cache)))
    assert_gradient("ista_backward", wrt, grads[wrt],
                    lambda: ista_forward(x, W, 0.2, 0.1)[0], {"x": x, "W": W}[wrt], dout,
                    describe(x=x, W=W, eta=0.2, lam=0.1),
                    hint="W appears twice in x W^T W: dW collects both terms"
                    if wrt == "W" else "")
