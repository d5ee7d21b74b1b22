"""whitebox.backend: array modules, moving arrays, and choosing the default backend."""
import math

import numpy as np
import pytest

from whitebox import backend
from whitebox.backend import (backend_name, default_backend, get_array_module, gpu_available,
                              to_device, to_numpy, xp_of)
from whitebox.nn import Linear

no_gpu = pytest.mark.skipif(backend.gpu_available(), reason="a GPU is present")


def test_get_array_module_of_numpy_arrays():
    a, b = np.zeros(3), np.ones((2, 2), dtype=np.float32)
    assert get_array_module(a) is np
    assert get_array_module(a, b) is np
    assert get_array_module() is np
    assert get_array_module(1.0, [1, 2], None) is np


def test_backend_names_and_modules():
    assert backend_name(np.zeros(2)) == "numpy"
    assert xp_of("numpy") is np
    assert backend.BACKENDS == ("numpy", "cupy")


def test_to_numpy_and_to_device_round_trip(rng):
    a = rng.standard_normal((3, 4)).astype(np.float32)
    b = to_device(a, "numpy")
    assert isinstance(b, np.ndarray) and b.dtype == np.float32
    np.testing.assert_array_equal(to_numpy(b), a)
    assert isinstance(to_numpy([1.0, 2.0]), np.ndarray)


def test_round_trip_through_each_backend(xp, rng):
    a = rng.standard_normal((3, 4))
    moved = to_device(a, backend_name(xp.zeros(1)))
    assert get_array_module(moved) is xp
    back = to_numpy(moved)
    assert isinstance(back, np.ndarray)
    np.testing.assert_array_equal(back, a)


def test_gpu_available_is_a_bool():
    assert isinstance(gpu_available(), bool)
    assert isinstance(backend.cupy_installed(), bool)
    if not backend.cupy_installed():
        assert gpu_available() is False


def test_default_backend_is_numpy_when_unset(monkeypatch):
    monkeypatch.delenv("WHITEBOX_BACKEND", raising=False)
    assert default_backend() == "numpy"
    assert isinstance(to_device(np.zeros(2)), np.ndarray)


@pytest.mark.parametrize("value", ["numpy", " NumPy ", ""])
def test_default_backend_reads_the_environment(monkeypatch, value):
    monkeypatch.setenv("WHITEBOX_BACKEND", value)
    assert default_backend() == "numpy"


def test_unknown_backend_in_the_environment(monkeypatch):
    monkeypatch.setenv("WHITEBOX_BACKEND", "tpu")
    with pytest.raises(ValueError, match=r"WHITEBOX_BACKEND must be one of .* got 'tpu'"):
        default_backend()
    with pytest.raises(ValueError, match=r"WHITEBOX_BACKEND"):
        to_device(np.zeros(2))
    with pytest.raises(ValueError, match=r"WHITEBOX_BACKEND"):
        Linear(2, 2)                  # parameters are placed on the default backend


def test_unknown_backend_name():
    with pytest.raises(ValueError, match=r"backend must be one of \('numpy', 'cupy'\), got 'tpu'"):
        to_device(np.zeros(2), "tpu")
    with pytest.raises(ValueError, match=r"got 'tpu'"):
        xp_of("tpu")


@no_gpu
def test_asking_for_cupy_without_one_is_a_runtime_error():
    with pytest.raises(RuntimeError, match=r"backend 'cupy' was asked for, but cupy"):
        to_device(np.zeros(2), "cupy")
    with pytest.raises(RuntimeError, match=r"backend 'cupy' was asked for"):
        xp_of("cupy")


@no_gpu
def test_cupy_in_the_environment_without_one(monkeypatch):
    monkeypatch.setenv("WHITEBOX_BACKEND", "cupy")
    with pytest.raises(RuntimeError, match=r"backend 'cupy' was asked for"):
        default_backend()


@pytest.mark.gpu
def test_cupy_in_the_environment_places_new_parameters_on_the_gpu(monkeypatch):
    if not gpu_available():
        pytest.skip("no CuPy/GPU available")
    monkeypatch.setenv("WHITEBOX_BACKEND", "cupy")
    assert default_backend() == "cupy"
    assert Linear(3, 2).backend == "cupy"


def test_erf_on_each_backend(xp):
    x = np.linspace(-3, 3, 13)
    got = to_numpy(backend.erf(xp.asarray(x)))
    np.testing.assert_allclose(got, [math.erf(v) for v in x], rtol=1e-12, atol=1e-15)


def test_synchronize_is_harmless_on_numpy():
    a = np.arange(3.0)
    assert backend.synchronize(a) is None and backend.synchronize() is None
    np.testing.assert_array_equal(a, [0.0, 1.0, 2.0])


def test_float32_erf_is_within_a_few_ulps_of_the_exact_one():
    """The rational fit (backend.erf_float32, what float32 NumPy arrays get) against
    math.erf over the range where erf is not +-1 in float32, across block boundaries,
    with the edge values; a non-contiguous view keeps its shape."""
    x = np.concatenate([np.linspace(-5, 5, 70001), np.random.default_rng(0).normal(0, 2, 9999),
                        [0.0, 1e-30, -1e-30, 3.9, -3.9]]).astype(np.float32)
    got = backend.erf(x)
    assert got.dtype == np.float32 and got.shape == x.shape
    exact = np.array([math.erf(v) for v in x.astype(np.float64)])
    ulp = np.spacing(np.abs(exact).astype(np.float32)).astype(np.float64)
    assert np.max(np.abs(got - exact) / ulp) <= 8
    assert np.abs(got - exact).max() <= 5e-7
    edges = backend.erf(np.array([np.inf, -np.inf, np.nan, 0.0, 40.0], np.float32))
    np.testing.assert_array_equal(edges[[0, 1, 3, 4]], [1, -1, 0, 1])
    assert np.isnan(edges[2])
    grid = np.linspace(-2, 2, 24, dtype=np.float32).reshape(4, 6)[:, ::2]
    np.testing.assert_allclose(backend.erf(grid), [[math.erf(v) for v in r] for r in grid],
                               atol=5e-7)
