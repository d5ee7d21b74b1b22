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
    """Elementwise error function on either backend.

    CuPy: cupyx's erf. NumPy float32: :func:`erf_float32` (a rational fit, within
    8 float32 ulps of the exact value, 5-6x faster than SciPy's, which computes in
    float64). Other NumPy dtypes: SciPy's erf, or Python's ``math.erf`` element by
    element where SciPy is not installed (exact, slow: float64 gradient checks).
    """
    xp = get_array_module(x)
    if xp is not np:
        import cupyx.scipy.special as sp  # comes with cupy
        return sp.erf(x)
    if x.dtype == np.float32:
        return erf_float32(x)
    try:
        from scipy.special import erf as _erf
        return _erf(x)
    except ImportError:
        return np.vectorize(math.erf, otypes=[x.dtype])(x)


# erf(z) = z P(z^2) / Q(z^2) on |z| <= 4 (beyond it erf is +-1 in float32): the float32
# fit used by Eigen and XLA, P of degree 6 and Q of degree 4 in z^2, highest power first.
_ERF_P = np.array([-2.72614225801306e-10, 2.77068142495902e-08, -2.10102402082508e-06,
                   -5.69250639462346e-05, -7.34990630326855e-04, -2.95459980854025e-03,
                   -1.60960333262415e-02], np.float32)
_ERF_Q = np.array([-1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03,
                   -7.37332916720468e-03, -1.42647390514189e-02], np.float32)
_ERF_BLOCK = 32768      # elements per pass: the block's temporaries stay in cache


def erf_float32(x):
    """erf of a float32 NumPy array: z = clip(x, -4, 4), erf = z P(z^2) / Q(z^2).

    Horner's rule on blocks of _ERF_BLOCK elements, so the dozen passes of the two
    polynomials run in cache. NaN stays NaN; +-inf gives +-1.
    """
    flat = np.ascontiguousarray(x).reshape(-1)
    out = np.empty_like(flat)
    n = min(flat.size, _ERF_BLOCK)
    z, z2, q = (np.empty(n, np.float32) for _ in range(3))
    for lo in range(0, flat.size, _ERF_BLOCK):
        hi = min(lo + _ERF_BLOCK, flat.size)
        zb, z2b, qb, p = z[:hi - lo], z2[:hi - lo], q[:hi - lo], out[lo:hi]
        np.clip(flat[lo:hi], -4.0, 4.0, out=zb)
        np.multiply(zb, zb, out=z2b)
        np.multiply(z2b, _ERF_P[0], out=p)
        p += _ERF_P[1]
        for c in _ERF_P[2:]:
            p *= z2b
            p += c
        np.multiply(z2b, _ERF_Q[0], out=qb)
        qb += _ERF_Q[1]
        for c in _ERF_Q[2:]:
            qb *= z2b
            qb += c
        p *= zb
        p /= qb
    return out.reshape(x.shape)
