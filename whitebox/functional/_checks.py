"""Every input check of the library, in one place: clear errors that name the argument.

Models and Modules validate at their boundary with these; the functional ops
keep only the checks their math needs, one line each.

    numbers   is_int, check_int, check_positive_int, check_threads, to_float, check_real,
              check_probability, check_flag
    arrays    check_array, check_finite, check_features, check_shape, check_divisible,
              check_dout, check_class_labels, check_ids, check_ignore_index, check_targets
    rates     check_tokens, check_bases, check_labels, check_accumulate, check_rate_dout
"""
import math
import operator

import numpy as np

from ..backend import checks_values, get_array_module


def check_array(name, a, ndim_min=None, ndim=None, floating=True):
    """Raise TypeError/ValueError unless ``a`` is an array of the expected kind."""
    xp = get_array_module(a)
    if not isinstance(a, xp.ndarray):
        raise TypeError(f"{name} must be an array, got {type(a).__name__}")
    if floating and a.dtype.kind != "f":
        raise TypeError(f"{name} must be a floating-point array, got dtype {a.dtype}")
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-dimensional, got shape {tuple(a.shape)}")
    if ndim_min is not None and a.ndim < ndim_min:
        raise ValueError(f"{name} must have at least {ndim_min} dimensions, "
                         f"got shape {tuple(a.shape)}")
    return xp


def check_finite(name, a):
    """NaN or inf in ``a`` is an error (on a device only with backend.set_device_checks)."""
    if not checks_values(a):
        return
    xp = get_array_module(a)
    if not bool(xp.all(xp.isfinite(a))):
        raise ValueError(f"{name} contains NaN or infinite values")


def check_features(op, name, a, d, against):
    """The last axis of ``a`` (..., d) has the size d that ``against`` fixes."""
    if a.shape[-1] != d:
        raise ValueError(f"{op}: {name} has {a.shape[-1]} input features (last dimension "
                         f"{a.shape[-1]} of shape {tuple(a.shape)}), expected {d} to match "
                         f"{against}")


def check_shape(name, a, shape, against=""):
    """``a`` (skipped when None) has exactly ``shape``."""
    if a is not None and tuple(a.shape) != tuple(shape):
        raise ValueError(f"{name} has shape {tuple(a.shape)}, expected {tuple(shape)}{against}")


def check_divisible(H, W, p1, p2):
    """An H x W image cut into whole p1 x p2 patches."""
    if H % p1 or W % p2:
        raise ValueError(f"image size {H}x{W} is not divisible by the patch size {p1}x{p2}")


def check_dout(op, dout, shape):
    """The upstream gradient must have the shape of the forward's output."""
    if tuple(getattr(dout, "shape", ())) != tuple(shape) or not hasattr(dout, "dtype"):
        got = tuple(dout.shape) if hasattr(dout, "shape") else type(dout).__name__
        raise ValueError(f"{op} backward: dout has shape {got}, expected {tuple(shape)} "
                         "(the shape of the forward's output)")


def is_int(value):
    """True for a Python or NumPy integer; False for booleans and everything else."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def check_int(name, value, low):
    """An integer (anything with __index__, not a bool) >= low: TypeError / ValueError."""
    try:
        if isinstance(value, bool):
            raise TypeError
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {value!r}") from None
    if value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return value


def check_positive_int(name, value, hint=""):
    """A positive integer (booleans refused); returns it as int."""
    if not is_int(value) or value <= 0:
        raise ValueError(f"{name} must be a positive integer{hint}, got {value!r}")
    return int(value)


def check_threads(n):
    """A thread count: a positive integer."""
    return check_positive_int("threads", n, " (or None for all cores)")


def to_float(name, value):
    """``value`` as a Python float, or a TypeError naming the argument.

    Strings and booleans are refused even though float() would take them:
    lr="1e-3" or momentum=True are almost always mistakes.
    """
    if isinstance(value, (str, bytes, bool, np.bool_)):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a real number, got {value!r}") from None


def check_real(name, value, low=None, high=None, low_open=False, high_open=False):
    """A finite real number within [low, high] (ends open where asked); returns it as float."""
    value = to_float(name, value)
    below = low is not None and (value <= low if low_open else value < low)
    above = high is not None and (value >= high if high_open else value > high)
    if not math.isfinite(value) or below or above:
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else f"{high:g}"
        span = f"{'(' if low_open or low is None else '['}{lo}, {hi}{')' if high_open or high is None else ']'}"
        what = "in" if math.isfinite(value) else "finite and in"
        raise ValueError(f"{name} must be {what} {span}, got {value!r}")
    return value


def check_probability(name, p):
    """A dropout probability in [0, 1)."""
    return check_real(name, p, 0.0, 1.0, high_open=True)


def check_flag(name, value):
    """True or False (NumPy booleans included), as a Python bool."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def check_class_labels(name, labels, n=None):
    """Class indices: an integer array of shape (n,) with no negative entry.

    Labels are never cast: a float array is refused even when its values are
    whole numbers (0.7 would otherwise become class 0 without a word), so the
    caller converts on purpose. The minimum is read on the host for NumPy
    input: call this once per dataset, not per batch.
    """
    xp = get_array_module(labels)
    if not isinstance(labels, xp.ndarray) or labels.dtype.kind not in "iu":
        got = f"dtype {labels.dtype}" if hasattr(labels, "dtype") else type(labels).__name__
        raise TypeError(f"{name} must be an integer array of class indices"
                        f"{'' if n is None else f' of shape ({n},)'}, got {got}; floats are "
                        f"never truncated: convert whole-number labels with .astype(int)")
    if labels.ndim != 1 or (n is not None and labels.shape[0] != n):
        raise ValueError(f"{name} must have shape ({'n' if n is None else n},) (one class "
                         f"index per sample), got shape {tuple(labels.shape)}")
    if labels.size and int(labels.min()) < 0:
        raise ValueError(f"{name} must be non-negative class indices, got min {int(labels.min())}")


def check_ids(name, ids, num):
    """Integer ids in [0, num). CuPy would wrap bad ones silently: the range is
    read on the host (NumPy), or on a device with backend.set_device_checks."""
    xp = get_array_module(ids)
    if not isinstance(ids, xp.ndarray) or ids.dtype.kind not in "iu":
        raise TypeError(f"{name} must be an integer array, got "
                        f"{getattr(ids, 'dtype', type(ids).__name__)}")
    if ids.size and checks_values(ids):
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= num:
            bad = lo if lo < 0 else hi
            raise ValueError(f"{name} must lie in [0, {num}), found {bad}")


def check_ignore_index(ignore_index, vocab_size):
    """An integer that is no class id: a class id would silently drop that class's targets."""
    if not is_int(ignore_index) or 0 <= ignore_index < vocab_size:
        raise ValueError(f"ignore_index must be an integer outside [0, {vocab_size}) (a class "
                         f"id would drop that class's targets), got {ignore_index!r}")


def check_targets(targets, logits, ignore_index):
    """Integer targets (...) on the logits' backend for logits (..., V): each in [0, V) or
    ignore_index, at least one counted (values read on the host, or with device checks)."""
    xp = get_array_module(logits)
    if not isinstance(targets, xp.ndarray) or targets.dtype.kind not in "iu":
        raise TypeError(f"targets must be an integer array on the logits' backend, got "
                        f"{getattr(targets, 'dtype', type(targets).__name__)}")
    if tuple(targets.shape) != tuple(logits.shape[:-1]):
        raise ValueError(f"targets have shape {tuple(targets.shape)}, expected "
                         f"{tuple(logits.shape[:-1])} to match logits {tuple(logits.shape)}")
    V = logits.shape[-1]
    check_ignore_index(ignore_index, V)
    if not checks_values(targets):
        return
    y = targets.reshape(-1)
    keep = y != ignore_index
    if not bool(keep.any()):
        raise ValueError("token_cross_entropy: every target is ignore_index; nothing to count")
    bad = keep & ((y < 0) | (y >= V))
    if bool(bad.any()):
        raise ValueError(f"targets must lie in [0, {V}) or equal ignore_index={ignore_index}, "
                         f"found {int(y[bad][0])}")


# ------------------------------------------------------------------ the rate functions' inputs
ACCUMULATE = (None, "float32", "float64")


def check_tokens(name, Z):
    """Z: a floating array (..., N, d) with at least one token and one feature, all finite."""
    xp = get_array_module(Z)
    if not isinstance(Z, xp.ndarray):
        raise TypeError(f"{name} must be an array of shape (N, d) or (B, N, d), "
                        f"got {type(Z).__name__}")
    if Z.dtype.kind != "f":
        raise TypeError(f"{name} must be a floating-point array, got dtype {Z.dtype}")
    if Z.ndim < 2:
        raise ValueError(f"{name} must have shape (N, d) or (B, N, d) (tokens as rows), "
                         f"got shape {tuple(Z.shape)}")
    if Z.shape[-1] == 0 or Z.shape[-2] == 0:
        raise ValueError(f"{name} must have at least one token and one feature, "
                         f"got shape {tuple(Z.shape)}")
    if not bool(xp.all(xp.isfinite(Z))):
        raise ValueError(f"{name} contains NaN or infinite values")
    return xp


def check_bases(U, Z, name="U"):
    """U: a floating array (K, d, p) on Z's backend whose d matches Z's last axis."""
    xp = get_array_module(Z)
    if get_array_module(U) is not xp or not isinstance(U, xp.ndarray):
        raise TypeError(f"{name} must be an array on the same backend as Z "
                        f"({xp.__name__}), got {type(U).__module__}.{type(U).__name__}")
    if U.dtype.kind != "f":
        raise TypeError(f"{name} must be a floating-point array, got dtype {U.dtype}")
    if U.ndim != 3:
        raise ValueError(f"{name} must have shape (K, d, p) (one d x p basis per subspace), "
                         f"got shape {tuple(U.shape)}")
    if U.shape[1] != Z.shape[-1]:
        raise ValueError(f"{name} has shape {tuple(U.shape)}, so d = {U.shape[1]}, but Z has "
                         f"d = {Z.shape[-1]} features (shape {tuple(Z.shape)})")
    if U.shape[0] == 0 or U.shape[2] == 0:
        raise ValueError(f"{name} must have K >= 1 subspaces of dimension p >= 1, "
                         f"got shape {tuple(U.shape)}")
    if not bool(xp.all(xp.isfinite(U))):
        raise ValueError(f"{name} contains NaN or infinite values")


def check_labels(labels, N, xp, name="labels"):
    """Non-negative integer labels of shape (N,), on the features' backend ``xp``."""
    if get_array_module(labels) is not xp or not isinstance(labels, xp.ndarray):
        raise TypeError(f"{name} must be an integer array on the same backend as Z "
                        f"({xp.__name__}), got {type(labels).__module__}."
                        f"{type(labels).__name__}; move it with whitebox.to_device")
    check_class_labels(name, labels, N)


def check_accumulate(accumulate):
    """None (work in Z's dtype, promoted to float64 when float32 cannot hold the answer),
    'float32' (refuse instead of promoting) or 'float64'; returned as a dtype or None."""
    if accumulate is None:
        return None
    try:
        name = np.dtype(accumulate).name
    except TypeError:
        name = None
    if name not in ACCUMULATE[1:]:
        raise ValueError(f"accumulate must be one of {ACCUMULATE}, got {accumulate!r}")
    return np.dtype(name)


def check_rate_dout(dout, shape, xp, name="dout"):
    """The upstream gradient of a batched rate: shape Z.shape[:-2] (ones when None)."""
    if dout is None:
        return None
    if not isinstance(dout, xp.ndarray):
        dout = xp.asarray(dout)
    if tuple(dout.shape) != tuple(shape):
        raise ValueError(f"{name} must have the shape of the rate, {tuple(shape)}, "
                         f"got {tuple(dout.shape)}")
    return dout
