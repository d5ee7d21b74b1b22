"""Small input checks shared by the functional ops (clear errors, no asserts)."""
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


def check_dout(op, dout, shape):
    """The upstream gradient must have the shape of the forward's output."""
    if tuple(getattr(dout, "shape", ())) != tuple(shape) or not hasattr(dout, "dtype"):
        got = tuple(dout.shape) if hasattr(dout, "shape") else type(dout).__name__
        raise ValueError(f"{op} backward: dout has shape {got}, expected {tuple(shape)} "
                         "(the shape of the forward's output)")


def is_int(value):
    """True for a Python or NumPy integer; False for booleans and everything else."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def check_positive_int(name, value):
    """A positive integer (booleans refused); returns it as int."""
    if not is_int(value) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def check_real(name, value, low=None, high=None, low_open=False, high_open=False):
    """A finite real number within [low, high] (ends open where asked); returns it as float."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    below = low is not None and (value <= low if low_open else value < low)
    above = high is not None and (value >= high if high_open else value > high)
    if not np.isfinite(value) or below or above:
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else f"{high:g}"
        span = f"{'(' if low_open or low is None else '['}{lo}, {hi}{')' if high_open or high is None else ']'}"
        what = "in" if np.isfinite(value) else "finite and in"
        raise ValueError(f"{name} must be {what} {span}, got {value!r}")
    return value


def check_probability(name, p):
    """A dropout probability in [0, 1)."""
    return check_real(name, p, 0.0, 1.0, high_open=True)


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
