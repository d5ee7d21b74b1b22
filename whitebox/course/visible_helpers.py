"""Helpers of the visible tests (copied into a handout's tests/ as visible_helpers.py).

Values come from the stored .npz/.json next to the tests; gradients are
central differences of the student's own forward. A failure names the
function, the index of the largest disagreement, both values and the
relative error.
"""
import importlib
import json

import numpy as np
from whitebox.gradcheck import numerical_gradient

H = 1e-6                   # the central differences' step, as the grader's

try:        # the fused loops restate answers, so a release hides them: run the NumPy ops
    from whitebox.functional import fused
    fused.set_enabled(False)
except ImportError:
    pass


def load_cases(stem):
    stem = str(stem)
    meta = json.loads(open(stem + ".json").read())
    with np.load(stem + ".npz", allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    for case in meta["values"] + meta["pairs"] + meta["modules"]:
        case["arrays"] = arrays
    return meta["values"], meta["pairs"], meta["modules"]


def _resolve(target):
    module, _, qualname = target.partition(":")
    obj = importlib.import_module(module)
    for name in qualname.split("."):
        obj = getattr(obj, name)
    return obj


def _decode(tree, arrays):
    if isinstance(tree, list):
        return [_decode(v, arrays) for v in tree]
    if isinstance(tree, dict):
        if "$a" in tree:
            return arrays[tree["$a"]].copy()
        if "$t" in tree:
            return tuple(_decode(v, arrays) for v in tree["$t"])
        if "$d" in tree:
            return {k: _decode(v, arrays) for k, v in tree["$d"].items()}
        if "$f" in tree:
            return float(tree["$f"])
        if "$dtype" in tree:
            return np.dtype(tree["$dtype"])
    return tree


def _inputs(case):
    a = case["arrays"]
    arrays = [a[f"v{case['n']}_in{j}"] for j in range(case["n_in"])]
    args, kwargs = _decode(case["inputs"]["$t"], arrays)
    return args, kwargs


def assert_close(what, got, expected, tol=1e-7, floor=1e-8):
    got = np.asarray(got, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert got.shape == expected.shape, f"{what}: shape {got.shape}, expected {expected.shape}"
    assert np.all(np.isfinite(got)), f"{what}: contains NaN or inf"
    ratio = np.abs(got - expected) / np.maximum(floor, np.abs(got) + np.abs(expected))
    err = float(ratio.max()) if ratio.size else 0.0
    if err > tol:
        idx = np.unravel_index(int(np.argmax(ratio)), got.shape) if got.ndim else ()
        raise AssertionError(f"{what}: at index {tuple(int(i) for i in idx)} got {got[idx]:.8g}, "
                             f"expected {expected[idx]:.8g}; relative error {err:.2e} > {tol:g}")


def _compare(what, got, expected):
    if isinstance(expected, (tuple, list)):
        assert isinstance(got, (tuple, list)) and len(got) == len(expected), \
            f"{what}: returned {type(got).__name__}, expected {len(expected)} values"
        for i, (g, e) in enumerate(zip(got, expected)):
            _compare(f"{what}[{i}]", g, e)
    elif isinstance(expected, dict):
        return                             # a cache: its contents are yours to choose
    elif isinstance(expected, np.ndarray) or isinstance(expected, float):
        assert_close(what, got, expected, 1e-8)
    elif expected is None:
        return


def check_value(case):
    a = case["arrays"]
    args, kwargs = _inputs(case)
    expected = _decode(case["outputs"], [a[f"v{case['n']}_out{j}"] for j in range(case["n_out"])])
    name = case["target"].split(":")[1]
    _compare(name, _resolve(case["target"])(*args, **kwargs), expected)


def check_pair(case):
    args, kwargs = _inputs(case)
    forward, backward = _resolve(case["forward"]), _resolve(case["backward"])
    fname, bname = case["forward"].split(":")[1], case["backward"].split(":")[1]
    y, cache = forward(*args, **kwargs)
    dout = np.random.default_rng(0).standard_normal(np.shape(y))
    grads = backward(dout, cache)
    grads = grads if isinstance(grads, tuple) else (grads,)
    for g, i in zip(grads, case["wrt"]):
        x = args[i]
        if x is None or not isinstance(x, np.ndarray) or x.dtype.kind != "f":
            continue
        x64 = x if x.dtype == np.float64 else None
        if x64 is None:
            continue
        numeric = numerical_gradient(lambda: forward(*args, **kwargs)[0], x, dout, H)
        floor = max(1e-8, 1e-3 * float(np.max(np.abs(numeric)))) if numeric.size else 1e-8
        try:
            assert_close(f"{bname}: gradient of input {i}, analytic vs numeric (of your "
                         f"{fname})", g, numeric, 1e-6, floor)
        except AssertionError as err:
            raise AssertionError(str(err)) from None


def check_module(case):
    a = case["arrays"]
    m = case["m"]
    x, expected = a[f"m{m}_x"].copy(), a[f"m{m}_y"]
    cls = _resolve(case["class"])
    name = case["class"].split(":")[1]
    module = cls(**case["kwargs"])
    assert_close(f"{name}.forward", module(x), expected, 1e-9)
    out = module(x)
    dout = np.random.default_rng(1).standard_normal(np.shape(out))
    module.zero_grad()
    dx = module.backward(dout)
    grads = {k: np.array(v) for k, v in module.grads().items()}
    params = module.parameters()
    for label, analytic, array in [("input x", dx, x)] + [(k, grads[k], params[k])
                                                          for k in list(grads)[:4]]:
        numeric = numerical_gradient(lambda: module(x), array, dout, H)
        floor = max(1e-8, 1e-3 * float(np.max(np.abs(numeric))))
        assert_close(f"{name}.backward: gradient of {label}, analytic vs numeric (of your "
                     f"forward)", analytic, numeric, 1e-6, floor)
