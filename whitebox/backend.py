"""Array backends: NumPy always, CuPy when it is installed and a GPU answers.

This is the only module in whitebox that imports cupy. Every other module
asks for the array module of its inputs with :func:`get_array_module`, so
one forward and one backward serve both backends.

The default backend for newly created arrays (parameters, data batches) is
``numpy`` unless the environment variable ``WHITEBOX_BACKEND`` says
``cupy``.

Value checks (NaN/inf inputs, token ids and labels out of range) read the
data, which on a GPU means waiting for it and copying the answer to the host.
They always run on NumPy arrays; on device arrays they run only when device
checks are switched on (``set_device_checks(True)`` or the environment
variable ``WHITEBOX_DEVICE_CHECKS=1``), a debug mode. The training jobs check
every dataset once on the host, before any batch moves to the device.
"""
import math
import os

import numpy as np

try:  # CuPy is optional: a missing cupy is not an error.
    import cupy as _cupy
except Exception:  # ImportError, or a broken CUDA install raising at import
    _cupy = None

BACKENDS = ("numpy", "cupy")


def cupy_installed():
    """True when the cupy package imports."""
    return _cupy is not None


def gpu_available():
    """True only when cupy imports AND a CUDA device answers."""
    if _cupy is None:
        return False
    try:
        return _cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def _check_name(name):
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
    if name == "cupy" and not gpu_available():
        why = "cupy is not installed (pip install 'whitebox-crate[gpu]')" \
            if _cupy is None else "cupy is installed but no CUDA device answers"
        raise RuntimeError(f"backend 'cupy' was asked for, but {why}")
    return name


def default_backend():
    """The backend named by WHITEBOX_BACKEND ('numpy' when unset)."""
    name = os.environ.get("WHITEBOX_BACKEND", "numpy").strip().lower() or "numpy"
    if name not in BACKENDS:
        raise ValueError(
            f"environment variable WHITEBOX_BACKEND must be one of {BACKENDS}, got {name!r}")
    return _check_name(name)


_device_checks = os.environ.get("WHITEBOX_DEVICE_CHECKS", "0").strip() not in ("", "0")


def set_device_checks(on=True):
    """Run value checks on device arrays too (a debug mode: each one syncs the GPU)."""
    global _device_checks
    _device_checks = bool(on)


def _on_host(a):
    return get_array_module(a) is np


def checks_values(a):
    """True when a value check of ``a`` should run: always on NumPy, on a device on demand."""
    return _device_checks or _on_host(a)


def get_array_module(*arrays):
    """Return cupy if any argument is a cupy array, else numpy."""
    if _cupy is not None:
        for a in arrays:
            if isinstance(a, _cupy.ndarray):
                return _cupy
    return np


def backend_name(a):
    """'cupy' for a cupy array, 'numpy' for anything else."""
    return "cupy" if get_array_module(a) is not np else "numpy"


def xp_of(name):
    """The array module for a backend name."""
    return _cupy if _check_name(name) == "cupy" else np


def to_numpy(a):
    """A NumPy copy (or the array itself if it is already NumPy)."""
    if _cupy is not None and isinstance(a, _cupy.ndarray):
        return _cupy.asnumpy(a)
    return np.asarray(a)


def to_device(a, backend=None):
    """Move an array to ``backend`` ('numpy' or 'cupy'; default: the default backend)."""
    backend = default_backend() if backend is None else _check_name(backend)
    if backend == "numpy":
        return to_numpy(a)
    return _cupy.asarray(a)


def synchronize(a=None):
    """Wait for queued GPU work (a no-op on NumPy); for honest timings."""
    if _cupy is not None and (a is None or isinstance(a, _cupy.ndarray)):
        if gpu_available():
            _cupy.cuda.get_current_stream().synchronize()


def erf(x):
    """Elementwise error function on either backend."""
    xp = get_array_module(x)
    if xp is not np:
        import cupyx.scipy.special as sp  # comes with cupy
        return sp.erf(x)
    try:
        from scipy.special import erf as _erf
        return _erf(x)
    except ImportError:  # exact but slow fallback without scipy
        return np.vectorize(math.erf, otypes=[x.dtype])(x)
