"""Numerical gradient checking in float64 by central differences.

The checks compare an analytic gradient (from a hand-written backward) with
a numerical one, for an array-valued function contracted against a random
upstream gradient ``dout``:  L(x) = sum(f(x) * dout), so dL/dx is exactly
what ``backward(dout)`` must return.

``check_backward`` and ``check_module`` perturb every entry (or a sample)
one at a time and say where a gradient is wrong; ``check_direction``
perturbs all entries at once along random directions, two forward calls
per direction, for arrays too large to walk entry by entry.
"""
import math

import numpy as np

from .backend import get_array_module, to_numpy


class GradientCheckError(AssertionError):
    """A hand-written gradient disagrees with the numerical one."""


def rel_error(a, b, floor=1e-8):
    """max |a - b| / max(|a| + |b|, floor), elementwise, as a Python float."""
    a, b = to_numpy(a).astype(np.float64), to_numpy(b).astype(np.float64)
    if a.shape != b.shape:
        raise ValueError(f"rel_error: shapes differ, {a.shape} vs {b.shape}")
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(a - b) / np.maximum(floor, np.abs(a) + np.abs(b))))


def _entries(x, max_entries, rng):
    """Indices to perturb: all of them, or a random sample of ``max_entries``."""
    n = x.size
    if max_entries is None or n <= max_entries:
        return np.arange(n)
    return np.sort(rng.choice(n, size=max_entries, replace=False))


def numerical_gradient(f, x, dout, h=1e-5, entries=None):
    """Central-difference gradient of sum(f(x) * dout) w.r.t. x (perturbed in place).

    Inputs: f a function of no arguments that reads ``x``; x the array to
    perturb; dout an array shaped like f's output; entries flat indices to
    check (default all). Returns: grad shaped like x (zeros where unchecked).
    """
    xp = get_array_module(x)
    if not x.flags.c_contiguous:
        # reshape(-1) of a strided view is a copy, and perturbing a copy changes nothing
        raise ValueError(f"numerical_gradient needs a C-contiguous array to perturb in place, "
                         f"got strides {x.strides} for shape {tuple(x.shape)}")
    grad = xp.zeros_like(x)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    for i in (range(x.size) if entries is None else entries):
        old = flat[i].item()
        flat[i] = old + h
        fp = float((f() * dout).sum())
        flat[i] = old - h
        fm = float((f() * dout).sum())
        flat[i] = old
        gflat[i] = (fp - fm) / (2 * h)
    return grad


def _compare(name, analytic, numeric, entries, tol, floor=1e-8):
    if analytic is None:
        raise GradientCheckError(f"gradient of {name}: backward returned None")
    if tuple(analytic.shape) != tuple(numeric.shape):
        raise GradientCheckError(f"gradient of {name} has shape {tuple(analytic.shape)}, "
                                 f"expected {tuple(numeric.shape)}")
    a = to_numpy(analytic).reshape(-1)[entries]
    n = to_numpy(numeric).reshape(-1)[entries]
    err = rel_error(a, n, floor)
    # NaN compares False with anything: test finiteness explicitly
    if not np.isfinite(err) or err > tol or not np.all(np.isfinite(a)):
        denom = np.maximum(floor, np.abs(a) + np.abs(n))
        ratio = np.abs(a - n) / denom
        k = int(np.argmax(np.where(np.isfinite(ratio), ratio, np.inf)))  # NaN counts as worst
        idx = np.unravel_index(int(entries[k]), analytic.shape)
        raise GradientCheckError(
            f"gradient of {name} at index {tuple(int(i) for i in idx)}: analytic "
            f"{a[k]:.10g}, numeric {n[k]:.10g} (relative error {err:.3g} > tol {tol:g})")
    return err


def _require_float64(name, a):
    if a.dtype != np.float64:
        raise TypeError(f"gradient checks run in float64; {name} has dtype {a.dtype}")


def check_backward(forward, backward, inputs, wrt=None, h=1e-5, tol=1e-7, seed=0,
                   max_entries=None, floor=1e-8):
    """Check a functional pair on float64 inputs.

    forward(*inputs) -> (out, cache); backward(dout, cache) -> one gradient or
    a tuple aligned with ``inputs`` (None for inputs without a gradient).
    wrt: indices of inputs to check (default: every float input whose
    gradient is not None). Returns {input index: relative error}; raises
    GradientCheckError naming the input and index on failure. ``floor``: see
    check_module.
    """
    rng = np.random.default_rng(seed)
    inputs = list(inputs)
    out, cache = forward(*inputs)
    xp = get_array_module(out)
    dout = xp.asarray(rng.standard_normal(out.shape))
    grads = backward(dout, cache)
    if not isinstance(grads, (tuple, list)):
        grads = (grads,)
    if wrt is None:
        wrt = [i for i, g in enumerate(grads) if g is not None and i < len(inputs)
               and hasattr(inputs[i], "dtype") and inputs[i].dtype.kind == "f"]
    errors = {}
    for i in wrt:
        if i >= len(grads):
            raise GradientCheckError(f"gradient of input {i}: backward returned only "
                                     f"{len(grads)} gradient(s)")
        x = inputs[i]
        _require_float64(f"input {i}", x)
        entries = _entries(x, max_entries, rng)
        num = numerical_gradient(lambda: forward(*inputs)[0], x, dout, h, entries)
        errors[i] = _compare(f"input {i}", grads[i], num, entries, tol, floor)
    return errors


def check_module(module, inputs, h=1e-5, tol=1e-7, seed=0, max_entries=None,
                 check_inputs=True, loss=None, floor=1e-8):
    """Check every parameter gradient (and the input gradient) of a Module.

    The module must be float64 (build it with dtype="float64"). With
    ``loss=None`` the scalar is sum(module(*inputs) * dout) for a random
    dout; with ``loss(out) -> (value, dout)`` (for example a cross-entropy
    with fixed labels) that loss is used instead. max_entries: check a random
    sample of that many entries per array (for large models). Every forward
    must compute the same function, so put dropout in eval mode (or p=0).
    floor: entries with |analytic| + |numeric| below it are judged by their
    absolute error (tol * floor). Central differences carry an absolute
    noise of about eps_machine * |L| / h (~1e-11), so a deep model whose
    gradient has entries near 1e-6 needs floor ~1e-4 to be judged fairly.
    Returns {name: relative error}; raises GradientCheckError naming the parameter
    (or 'input i'), the index, the analytic and the numeric value.
    """
    if module.dtype != "float64":
        raise TypeError(f"gradient checks run in float64; module has dtype {module.dtype} "
                        "(build it with dtype='float64')")
    rng = np.random.default_rng(seed)
    out = module(*inputs)
    xp = get_array_module(out)
    if loss is None:
        dout = xp.asarray(rng.standard_normal(out.shape))

        def scalar_out():
            return module(*inputs)
    else:
        dloss = loss(out)[1]
        dout = xp.ones(())

        def scalar_out():
            return xp.asarray(loss(module(*inputs))[0])
    module.zero_grad()
    dx = module.backward(dout if loss is None else dloss)
    errors = {}
    for name, p in module.trainable_parameters().items():
        _require_float64(name, p)
        entries = _entries(p, max_entries, rng)
        g = module.grads()[name].copy()
        num = numerical_gradient(scalar_out, p, dout, h, entries)
        errors[name] = _compare(name, g, num, entries, tol, floor)
    if check_inputs and dx is not None:
        x = inputs[0]
        if x.dtype.kind == "f":
            _require_float64("input 0", x)
            entries = _entries(x, max_entries, rng)
            num = numerical_gradient(scalar_out, x, dout, h, entries)
            errors["input 0"] = _compare("input 0", dx, num, entries, tol, floor)
    return errors


def check_direction(f, xs, dxs, dout, h=1e-6, tol=1e-6, seed=0, directions=1):
    """Check a gradient along random directions, two forward calls each, at any size.

    For L(x) = sum(f() * dout) and a random unit direction v (over all of
    ``xs`` together), the directional derivative <grad L, v> must equal
    (L(x + h v) - L(x - h v)) / (2h). The cost does not grow with the
    number of entries, so this suits arrays too large for an entry-by-entry
    check; an entry-by-entry check says *where* a gradient is wrong, this
    one only *whether*.

    Inputs: f a function of no arguments that reads the arrays ``xs`` (an
    array or a list of arrays, float64, changed in place and restored);
    dxs their analytic gradients (same structure and shapes); dout an array
    shaped like f's output; directions how many random directions to try.
    Returns: the largest relative error between the two directional
    derivatives; raises GradientCheckError when it exceeds ``tol``.
    """
    single = not isinstance(xs, (list, tuple))
    xs = [xs] if single else list(xs)
    dxs = [dxs] if single else list(dxs)
    if len(xs) != len(dxs):
        raise ValueError(f"check_direction: {len(xs)} arrays but {len(dxs)} gradients")
    for i, (x, dx) in enumerate(zip(xs, dxs)):
        _require_float64(f"array {i}", x)
        if dx is None or tuple(dx.shape) != tuple(x.shape):
            raise ValueError(f"check_direction: gradient {i} has shape "
                             f"{None if dx is None else tuple(dx.shape)}, expected "
                             f"{tuple(x.shape)}")
    rng = np.random.default_rng(seed)
    xp = get_array_module(*xs)
    originals = [x.copy() for x in xs]
    worst = 0.0
    for _ in range(directions):
        vs = [rng.standard_normal(x.shape) for x in xs]
        norm = np.sqrt(sum(float((v * v).sum()) for v in vs))
        vs = [xp.asarray(v / norm) for v in vs]
        analytic = sum(float((dx * v).sum()) for dx, v in zip(dxs, vs))
        try:
            for x, x0, v in zip(xs, originals, vs):
                x[...] = x0 + h * v
            loss_plus = float((f() * dout).sum())
            for x, x0, v in zip(xs, originals, vs):
                x[...] = x0 - h * v
            loss_minus = float((f() * dout).sum())
        finally:
            for x, x0 in zip(xs, originals):
                x[...] = x0
        numeric = (loss_plus - loss_minus) / (2 * h)
        err = abs(analytic - numeric) / max(abs(analytic) + abs(numeric), 1e-8)
        if not math.isfinite(err) or err > tol:
            raise GradientCheckError(
                f"directional derivative: analytic {analytic:.10g}, numeric {numeric:.10g} "
                f"(relative error {err:.3g} > tol {tol:g})")
        worst = max(worst, err)
    return worst
