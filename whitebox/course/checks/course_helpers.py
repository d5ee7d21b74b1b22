"""Helpers for the assignment checks: numerical gradients and messages that say what is wrong.

Every check builds its inputs from a fixed seed in float64, calls the
function under test, and compares with a direct formula or with central
differences; a failure names the function, the input, the analytic and the
expected value, where they differ most and by how much.

The checks run the library's NumPy arrangement of every op, as grading does:
the fused loops (whitebox/functional/fused.py) restate answers, so a release
hides them, and a check must not depend on them.
"""
import numpy as np

from whitebox.functional import fused

fused.set_enabled(False)


def rng(seed=0):
    return np.random.default_rng(seed)


def describe(**shapes):
    """'x (2, 5, 8), W (8, 8)': how a failing case was built."""
    return ", ".join(f"{k} {tuple(v.shape)}" if hasattr(v, "shape") else f"{k}={v!r}"
                     for k, v in shapes.items())


def rel_error(a, b, floor=1e-8):
    """max |a - b| / max(|a| + |b|, floor), elementwise (the CS231n rel_error, floored)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b) / np.maximum(floor, np.abs(a) + np.abs(b)))) \
        if a.size else 0.0


def assert_close(what, got, expected, case="", tol=1e-7, floor=1e-8):
    """Fail with the place and size of the largest disagreement."""
    if got is None:
        raise AssertionError(f"{what}: got None ({case})")
    got = np.asarray(got)
    expected = np.asarray(expected)
    if got.shape != expected.shape:
        raise AssertionError(f"{what}: shape {got.shape}, expected {expected.shape} ({case})")
    if not np.all(np.isfinite(got)):
        raise AssertionError(f"{what}: contains NaN or inf ({case})")
    err = rel_error(got, expected, floor)
    if err > tol:
        ratio = np.abs(got - expected) / np.maximum(floor, np.abs(got) + np.abs(expected))
        idx = np.unravel_index(int(np.argmax(ratio)), got.shape) if got.ndim else ()
        raise AssertionError(
            f"{what} ({case}): at index {tuple(int(i) for i in idx)} got "
            f"{got[idx]:.8g}, expected {expected[idx]:.8g}; relative error {err:.2e} > {tol:g}")
    return err


def numerical_gradient(f, x, dout, h=1e-6):
    """Central differences of sum(f() * dout) with respect to x (perturbed in place)."""
    grad = np.zeros_like(x)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    for i in range(x.size):
        old = flat[i]
        flat[i] = old + h
        plus = float(np.sum(np.asarray(f()) * dout))
        flat[i] = old - h
        minus = float(np.sum(np.asarray(f()) * dout))
        flat[i] = old
        gflat[i] = (plus - minus) / (2 * h)
    return grad


def assert_gradient(function, name, analytic, f, x, dout, case="", tol=1e-6, hint=""):
    """Compare an analytic gradient with central differences; the message says which and where."""
    numeric = numerical_gradient(f, x, dout)
    # entries far below the largest are judged by their absolute error: central
    # differences carry an absolute noise of about 1e-10 times the function's size
    floor = max(1e-8, 1e-3 * float(np.max(np.abs(numeric))))
    try:
        return assert_close(f"{function}: gradient of {name}, analytic vs numeric",
                            analytic, numeric, case, tol, floor)
    except AssertionError as err:
        raise AssertionError(f"{err}{'. ' + hint if hint else ''}") from None
