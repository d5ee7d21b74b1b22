"""A2 part 1: softmax forward (stable) and backward."""
import numpy as np

from course_helpers import assert_close, assert_gradient, describe, rng
from whitebox.functional import softmax_backward, softmax_forward


def test_softmax_forward():
    x = rng(1).standard_normal((2, 3, 5))
    y, _ = softmax_forward(x)
    expected = np.exp(x) / np.exp(x).sum(axis=-1, keepdims=True)
    assert_close("softmax_forward", y, expected, describe(x=x), 1e-10)


def test_softmax_forward_large_inputs():
    x = rng(2).standard_normal((4, 6)) * 5 + 1000.0
    y, _ = softmax_forward(x)
    assert np.all(np.isfinite(y)), ("softmax_forward(x) with entries near 1000 returned NaN "
                                    "or inf: subtract the row maximum before exp")
    assert_close("softmax_forward (entries near 1000)", y,
                 softmax_forward(x - 1000.0)[0], describe(x=x), 1e-10)


def test_softmax_backward():
    x = rng(3).standard_normal((2, 4, 5))
    dout = rng(4).standard_normal(x.shape)
    _, cache = softmax_forward(x)
    dx = softmax_backward(dout, cache)
    assert_gradient("softmax_backward", "x", dx, lambda: softmax_forward(x)[0], x, dout,
                    describe(x=x), hint="dx = y * (dout - sum(dout * y)) over the last axis")
