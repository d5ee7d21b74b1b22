import importlib.util
import os
import pathlib

import numpy as np
import pytest

# The suite's float64 tolerances were set on the NumPy arrangement of each op.
# The fused loops (whitebox.functional.fused, where Numba is installed) round
# differently; tests/test_fused.py holds them to that arrangement and turns
# them on itself. Scripts the tests run as subprocesses inherit this too.
os.environ.setdefault("WHITEBOX_FUSED", "0")

from whitebox import backend  # noqa: E402  (after the setting above)

ROOT = pathlib.Path(__file__).resolve().parents[1]


def load_script(relative):
    """A script of the repository (e.g. "benchmarks/bench_crate.py") imported as a module."""
    path = ROOT / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False,
                     help="also run tests marked slow")


def pytest_collection_modifyitems(config, items):
    """Skip `gpu` tests where no device answers, and `slow` tests unless asked for."""
    run_slow = config.getoption("--runslow") or "slow" in (config.getoption("-m") or "")
    no_gpu = pytest.mark.skip(reason="no CuPy/GPU available")
    slow = pytest.mark.skip(reason="slow: run with --runslow or -m slow")
    gpu = None
    for item in items:
        if "slow" in item.keywords and not run_slow:
            item.add_marker(slow)
        if "gpu" in item.keywords:
            gpu = backend.gpu_available() if gpu is None else gpu
            if not gpu:
                item.add_marker(no_gpu)


_BACKENDS = [pytest.param("numpy", id="numpy"),
             pytest.param("cupy", id="cupy", marks=pytest.mark.gpu)]


@pytest.fixture(params=_BACKENDS)
def xp(request):
    """The array module of each backend: NumPy always, CuPy where a GPU answers."""
    if request.param == "cupy" and not backend.gpu_available():
        pytest.skip("no CuPy/GPU available")
    return backend.xp_of(request.param)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def requires_gpu():
    return pytest.mark.skipif(not backend.gpu_available(), reason="no CuPy/GPU available")


def _write_idx(path, array):
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def write_bar_mnist(folder, noise=60, cols=(4, 24)):
    """A small learnable MNIST look-alike as idx files: each class a bright bar at its own height.

    160 training and 64 test images of 28 x 28 over noise in [0, ``noise``).
    Returns: the folder.
    """
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 160), ("t10k", 64)):
        labels = rng.integers(0, 10, size=n)
        images = rng.integers(0, noise, size=(n, 28, 28))
        for i, c in enumerate(labels):
            images[i, 2 * c + 3: 2 * c + 6, cols[0]:cols[1]] = 250
        _write_idx(folder / f"{prefix}-images-idx3-ubyte", images)
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels)
    return folder


def process_alive(pid):
    """True while process ``pid`` exists and is not a zombie (Linux /proc)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False
