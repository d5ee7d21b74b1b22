"""Judge-side helpers for the checks: inputs, comparisons, and messages that say what is wrong.

Everything here runs in the grader's process. A value that came back from
the submission is hostile data: ``assert_close`` first checks that it is a
numeric array of the expected shape, then compares; a failure names the
function, the inputs, the index of the largest disagreement, both values and
the relative error (the CS231n rel_error, floored).
"""
import contextlib

import numpy as np

from .. import runner as codec
from ..judge import CheckFailed, StudentError
from ...functional import fused
from ...gradcheck import numerical_gradient


def rng(seed=0):
    return np.random.default_rng(seed)


@contextlib.contextmanager
def reference():
    """The reference runs its NumPy arrangement (the one the release's docstrings describe)."""
    with fused.setting(False):
        yield


def describe(**shapes):
    """'x (2, 5, 8), W (8, 8)': how a failing case was built."""
    return ", ".join(f"{k} {tuple(v.shape)}" if hasattr(v, "shape") else f"{k}={v!r}"
                     for k, v in shapes.items())


def fail(message):
    raise CheckFailed(message)


def as_array(what, got, case=""):
    """``got`` as a numeric array, or a failure saying what came back instead."""
    if got is None:
        fail(f"{what}: got None ({case})")
    if isinstance(got, (bool, int, float, np.generic)):
        got = np.asarray(got)
    if not isinstance(got, np.ndarray):
        fail(f"{what}: got a {type(got).__name__}, expected an array ({case})")
    if got.dtype.kind not in "biuf":
        fail(f"{what}: got an array of dtype {got.dtype}, expected floating point ({case})")
    return got


def unpack(what, got, n):
    """The ``n`` values a function must return (a tuple or list), or a failure."""
    if not isinstance(got, (tuple, list)) or len(got) != n:
        kind = f"{len(got)} values" if isinstance(got, (tuple, list)) else type(got).__name__
        fail(f"{what} must return {n} values, got {kind}")
    return got


def rel_error(a, b, floor=1e-8):
    """max |a - b| / max(|a| + |b|, floor), elementwise."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b) / np.maximum(floor, np.abs(a) + np.abs(b)))) \
        if a.size else 0.0


def assert_close(what, got, expected, case="", tol=1e-7, floor=1e-8, hint=""):
    """Fail with the place and size of the largest disagreement."""
    got = as_array(what, got, case)
    expected = np.asarray(expected, dtype=np.float64)
    tail = f". {hint}" if hint else ""
    if got.shape != expected.shape:
        fail(f"{what}: shape {got.shape}, expected {expected.shape} ({case}){tail}")
    got = got.astype(np.float64)
    if not np.all(np.isfinite(got)):
        fail(f"{what}: contains NaN or inf ({case}){tail}")
    err = rel_error(got, expected, floor)
    if err > tol:
        ratio = np.abs(got - expected) / np.maximum(floor, np.abs(got) + np.abs(expected))
        idx = np.unravel_index(int(np.argmax(ratio)), got.shape) if got.ndim else ()
        fail(f"{what} ({case}): at index {tuple(int(i) for i in idx)} got "
             f"{got[idx]:.8g}, expected {expected[idx]:.8g}; relative error {err:.2e} > "
             f"{tol:g}{tail}")
    return err


def assert_gradient(function, name, analytic, f, x, dout, case="", tol=1e-6, hint=""):
    """The submission's gradient against central differences of the REFERENCE forward ``f``."""
    with reference():
        numeric = numerical_gradient(f, x, dout, h=1e-6)
    # entries far below the largest are judged by their absolute error: central
    # differences carry an absolute noise of about 1e-10 times the function's size
    floor = max(1e-8, 1e-3 * float(np.max(np.abs(numeric))))
    return assert_close(f"{function}: gradient of {name}, analytic vs numeric", analytic,
                        numeric, case, tol, floor, hint)


def sendable(value):
    try:
        codec.encode(value)
        return True
    except codec.ProtocolError:
        return False


def backward(run, target, dout, cache, forward=None, args=(), kwargs=None):
    """The submission's backward ``target`` given the REFERENCE forward's cache, so a
    wrong forward does not fail a right backward. When it cannot read that cache
    (its forward keeps other entries), it gets its own forward's cache instead
    (``forward`` called with ``args``), and a failure says so."""
    if sendable(cache):
        try:
            return run.call(target, dout, cache)
        except StudentError as err:
            if forward is None or err.kind not in ("KeyError", "TypeError", "IndexError",
                                                   "AttributeError", "ValueError"):
                raise
            why = str(err)[:200]
    else:
        why = "the reference cache holds objects"
    out = unpack(forward.split(":")[1], run.forward(forward, *args, **(kwargs or {})), 2)
    try:
        return run.call(target, dout, out[1])
    except StudentError as err:
        raise StudentError(f"{err} (with its own forward's cache; the reference forward's "
                           f"cache gave {why})") from None


def module_gradients(function, got_dx, got_grads, ref_dx, ref_grads, case="", tol=1e-7,
                     hint="", names=None):
    """A Module's backward: dx and every parameter gradient against the reference's."""
    assert_close(f"{function}: gradient of the input", got_dx, ref_dx, case, tol, hint=hint)
    if not isinstance(got_grads, dict):
        fail(f"{function}: grads() returned a {type(got_grads).__name__}, expected a dict")
    for name in names or ref_grads:
        if name not in got_grads:
            fail(f"{function}: grads() has no {name!r}")
        assert_close(f"{function}: gradient of {name}", got_grads[name], ref_grads[name], case,
                     tol, hint=hint)


def compare_backward(function, ref, sub, inputs, dout, case="", tol=1e-7, hint="", **kwargs):
    """The reference ``ref`` (in its NumPy arrangement) and the submission's ``sub`` each run
    forward(inputs, **kwargs), zero_grad() and backward(dout); module_gradients compares
    their dx and every parameter gradient."""
    with reference():
        ref.forward(inputs, **kwargs)
        ref.zero_grad()
        ref_dx = ref.backward(dout)
    sub.forward(inputs, **kwargs)
    sub.zero_grad()
    module_gradients(function, sub.backward(dout), sub.grads(), ref_dx, ref.grads(), case, tol,
                     hint=hint)


def copy_state(module):
    return {k: np.array(v, dtype=np.float64) for k, v in module.state_dict().items()}
