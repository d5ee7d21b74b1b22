"""Small input checks shared by the functional ops (clear errors, no asserts)."""
from ..backend import get_array_module


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
    xp = get_array_module(a)
    if not bool(xp.all(xp.isfinite(a))):
        raise ValueError(f"{name} contains NaN or infinite values")
