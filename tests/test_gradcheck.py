"""The gradient checkers themselves: they must pass right gradients and catch wrong ones."""
import re

import numpy as np
import pytest

from whitebox.gradcheck import (GradientCheckError, check_backward, check_direction,
                                check_module, numerical_gradient, rel_error)
from whitebox.nn import Linear, Module


# ---------------------------------------------------------------- rel_error


def test_rel_error_basics():
    a = np.array([1.0, -2.0, 3.0])
    assert rel_error(a, a) == 0.0
    assert rel_error([1.0], [1.1]) == pytest.approx(0.1 / 2.1)
    assert rel_error(a, a + 1e-9) == rel_error(a + 1e-9, a)           # symmetric
    assert rel_error(np.zeros(3), np.zeros(3)) == 0.0
    # the floor keeps tiny absolute differences near zero from looking huge
    assert rel_error(np.array([0.0]), np.array([1e-12])) == pytest.approx(1e-4)
    assert rel_error(np.array([0.0]), np.array([1e-12]), floor=1e-20) == pytest.approx(1.0)
    assert rel_error(np.zeros((0, 3)), np.zeros((0, 3))) == 0.0
    assert isinstance(rel_error(a, 2 * a), float)


def test_rel_error_reports_the_worst_entry():
    assert rel_error(np.array([1.0, 1.0]), np.array([1.0, 3.0])) == pytest.approx(0.5)


def test_rel_error_rejects_different_shapes():
    with pytest.raises(ValueError, match=r"shapes differ, \(3,\) vs \(1, 3\)"):
        rel_error(np.zeros(3), np.zeros((1, 3)))


# ------------------------------------------------------- numerical_gradient


def test_numerical_gradient_of_a_known_function(rng):
    x = rng.standard_normal((3, 4))
    x0 = x.copy()
    dout = rng.standard_normal((3, 4))
    grad = numerical_gradient(lambda: np.sin(x), x, dout)
    np.testing.assert_allclose(grad, np.cos(x0) * dout, rtol=1e-8, atol=1e-10)
    np.testing.assert_array_equal(x, x0)              # restored exactly


def test_numerical_gradient_only_fills_the_chosen_entries(rng):
    x, dout = rng.standard_normal(6), rng.standard_normal(6)
    grad = numerical_gradient(lambda: x ** 2, x, dout, entries=[1, 4])
    np.testing.assert_allclose(grad[[1, 4]], 2 * x[[1, 4]] * dout[[1, 4]], rtol=1e-8)
    np.testing.assert_array_equal(grad[[0, 2, 3, 5]], 0.0)


def test_numerical_gradient_refuses_a_strided_view():
    x = np.zeros((3, 4)).T              # perturbing a copy of it would change nothing
    with pytest.raises(ValueError, match=r"C-contiguous"):
        numerical_gradient(lambda: x * 2, x, np.ones((4, 3)))


# ----------------------------------------------------------- check_backward


def product_forward(x, y):
    return x * y, (x, y)


def product_backward(dout, cache):
    x, y = cache
    return dout * y, dout * x


def test_check_backward_passes_a_correct_pair(rng):
    x, y = rng.standard_normal((2, 3)), rng.standard_normal((2, 3))
    errors = check_backward(product_forward, product_backward, [x, y])
    assert set(errors) == {0, 1} and max(errors.values()) < 1e-9


def test_check_backward_checks_only_wrt(rng):
    x, y = rng.standard_normal((2, 3)), rng.standard_normal((2, 3))
    assert set(check_backward(product_forward, product_backward, [x, y], wrt=[1])) == {1}


def test_check_backward_catches_one_wrong_entry_and_says_where(rng):
    x, y = rng.standard_normal((2, 3)), rng.standard_normal((2, 3))
    saved = {}

    def wrong_backward(dout, cache):
        dx, dy = product_backward(dout, cache)
        dy = dy.copy()
        dy[1, 2] += 0.5
        saved["right"], saved["wrong"] = dy[1, 2] - 0.5, dy[1, 2]
        return dx, dy

    with pytest.raises(GradientCheckError) as info:
        check_backward(product_forward, wrong_backward, [x, y])
    msg = str(info.value)
    assert "gradient of input 1 at index (1, 2)" in msg
    assert f"analytic {saved['wrong']:.10g}" in msg
    numeric = float(re.search(r"numeric (\S+)", msg).group(1))
    assert numeric == pytest.approx(saved["right"], rel=1e-6)


def test_check_backward_catches_a_small_scale_error(rng):
    x = rng.standard_normal((3, 3))
    with pytest.raises(GradientCheckError, match=r"input 0"):
        check_backward(lambda x: (np.tanh(x), x),
                       lambda dout, x: dout * (1 - np.tanh(x) ** 2) * (1 + 1e-5), [x])


def test_check_backward_catches_none_and_misshaped_gradients(rng):
    x = rng.standard_normal((2, 3))
    with pytest.raises(GradientCheckError, match=r"input 0: backward returned None"):
        check_backward(lambda x: (2 * x, None), lambda dout, c: (None,), [x], wrt=[0])
    with pytest.raises(GradientCheckError, match=r"has shape \(3, 2\), expected \(2, 3\)"):
        check_backward(lambda x: (2 * x, None), lambda dout, c: 2 * dout.T, [x])


def test_check_backward_refuses_float32(rng):
    x = rng.standard_normal(3).astype(np.float32)
    with pytest.raises(TypeError, match=r"float64; input 0 has dtype float32"):
        check_backward(lambda x: (2 * x, None), lambda dout, c: 2 * dout, [x])


# ------------------------------------------------------------- check_module


class CountingLinear(Linear):
    """A Linear that counts its forward calls (to see how much a check costs)."""

    calls = 0

    def forward(self, x):
        self.calls += 1
        return super().forward(x)


class SlightlyWrongLinear(Linear):
    def backward(self, dout):
        dx = super().backward(dout)
        self._grads["weight"] *= 1.001
        return dx


def test_check_module_samples_max_entries(rng):
    model = CountingLinear(5, 4, dtype="float64")
    errors = check_module(model, [rng.standard_normal((2, 5))], max_entries=3)
    assert set(errors) == {"weight", "bias", "input 0"}
    assert max(errors.values()) < 1e-8
    # one forward for the analytic gradient, two per sampled entry of three arrays
    assert model.calls == 1 + 2 * 3 * 3


def test_check_module_without_sampling_perturbs_every_entry(rng):
    model = CountingLinear(5, 4, dtype="float64")
    check_module(model, [rng.standard_normal((2, 5))])
    assert model.calls == 1 + 2 * (20 + 4 + 10)


def test_check_module_catches_a_wrong_parameter_gradient(rng):
    with pytest.raises(GradientCheckError, match=r"gradient of weight at index"):
        check_module(SlightlyWrongLinear(5, 4, dtype="float64"), [rng.standard_normal((2, 5))],
                     max_entries=4)


def test_check_module_can_skip_the_input(rng):
    errors = check_module(Linear(3, 2, dtype="float64"), [rng.standard_normal((2, 3))],
                          check_inputs=False)
    assert set(errors) == {"weight", "bias"}


def test_check_module_refuses_float32(rng):
    with pytest.raises(TypeError, match=r"float64; module has dtype float32"):
        check_module(Linear(3, 2), [rng.standard_normal((2, 3))])


def test_check_module_zeroes_gradients_first(rng):
    """Stale gradients from an earlier backward must not leak into the check."""
    model = Linear(3, 2, dtype="float64")
    x = rng.standard_normal((2, 3))
    model(x)
    model.backward(np.ones((2, 2)))
    check_module(model, [x])


class NoInputGradient(Module):
    """A module whose backward fills its parameter gradients but returns no input gradient."""

    def __init__(self):
        super().__init__("float64")
        self.lin = Linear(3, 3, dtype="float64")

    def forward(self, x):
        return self.lin(x)

    def backward(self, dout):
        self.lin.backward(dout)
        return None


def test_check_module_with_no_input_gradient_checks_parameters(rng):
    errors = check_module(NoInputGradient(), [rng.standard_normal((2, 3))])
    assert set(errors) == {"lin.weight", "lin.bias"}


# ---------------------------------------------------------- check_direction


def test_check_direction_passes_at_size_with_two_forward_calls(rng):
    A = rng.standard_normal((60, 80))
    x = rng.standard_normal((80, 50))
    dout = rng.standard_normal((60, 50))
    calls = []

    def f():
        calls.append(1)
        return np.tanh(A @ x)

    dx = A.T @ (dout * (1 - np.tanh(A @ x) ** 2))
    x0 = x.copy()
    err = check_direction(f, x, dx, dout)
    assert err < 1e-6 and len(calls) == 2
    np.testing.assert_array_equal(x, x0)


def test_check_direction_catches_a_wrong_gradient(rng):
    A, x = rng.standard_normal((30, 40)), rng.standard_normal((40, 20))
    dout = rng.standard_normal((30, 20))
    x0 = x.copy()
    with pytest.raises(GradientCheckError, match=r"directional derivative: analytic"):
        check_direction(lambda: A @ x, x, 1.001 * (A.T @ dout), dout)
    np.testing.assert_array_equal(x, x0)              # restored even when it raises


def test_check_direction_over_several_arrays_and_directions(rng):
    x, y = rng.standard_normal((4, 5)), rng.standard_normal((5, 3))
    dout = rng.standard_normal((4, 3))
    calls = []

    def f():
        calls.append(1)
        return x @ y

    err = check_direction(f, [x, y], [dout @ y.T, x.T @ dout], dout, directions=5)
    assert err < 1e-7 and len(calls) == 10
    # the gradient of y alone is wrong: some direction must expose it
    with pytest.raises(GradientCheckError):
        check_direction(f, [x, y], [dout @ y.T, -(x.T @ dout)], dout, directions=3)


def test_check_direction_rejects_bad_arguments(rng):
    x = rng.standard_normal(3)
    with pytest.raises(TypeError, match=r"float64; array 0 has dtype float32"):
        check_direction(lambda: x, x.astype(np.float32), np.ones(3), np.ones(3))
    with pytest.raises(ValueError, match=r"gradient 0 has shape \(4,\), expected \(3,\)"):
        check_direction(lambda: x, x, np.ones(4), np.ones(3))
    with pytest.raises(ValueError, match=r"2 arrays but 1 gradients"):
        check_direction(lambda: x, [x, x], [np.ones(3)], np.ones(3))


def test_nan_numeric_gradient_fails_the_check():
    x = np.ones(3)
    with pytest.raises(GradientCheckError, match="numeric nan"):
        check_backward(lambda x: (x * np.nan, None), lambda d, c: 123.0 * d, [x])
