"""examples/mcr2_features.py: its hand-written chain is exact, and a fast run learns."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from whitebox import rate
from whitebox.gradcheck import check_backward, check_module

from conftest import ROOT, load_script

pytest.importorskip("sklearn")

SCRIPT = ROOT / "examples" / "mcr2_features.py"


@pytest.fixture(scope="module")
def example():
    return load_script("examples/mcr2_features.py")


def test_l2_normalize_gradient(example):
    x = np.random.default_rng(0).standard_normal((7, 5)) + 0.5
    errs = check_backward(example.l2_normalize_forward, example.l2_normalize_backward, [x])
    assert errs[0] < 1e-7


def test_whole_chain_gradient(example):
    """MCR^2 loss -> L2 normalisation -> network, every parameter against finite differences."""
    rng = np.random.default_rng(1)
    model = example.build_encoder(6, 8, 5, seed=2, dtype="float64")
    X = rng.standard_normal((18, 6))
    y = np.arange(18) % 3

    def loss(h):
        Z, cache = example.l2_normalize_forward(h)
        value, dZ = rate.mcr2_loss(Z, y, 0.7)
        return value, example.l2_normalize_backward(dZ, cache)

    # The loss is a difference of log-dets of size ~10 whose curvature is large:
    # h = 3e-5 balances round-off (~1e-16 * 10 / h) against truncation (~h^2),
    # and entries below floor = 1e-3 are judged by absolute error (tol * floor).
    errs = check_module(model, [X], loss=loss, h=3e-5, tol=1e-7, floor=1e-3)
    assert set(errs) >= {"0.weight", "0.bias", "1.weight", "1.bias", "3.weight", "3.bias"}


def test_fast_run_learns(tmp_path):
    env = dict(os.environ, MPLBACKEND="Agg")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--fast", "--out", str(tmp_path)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("mcr2_similarity.png", "mcr2_rates.png", "mcr2_metrics.json"):
        assert (tmp_path / name).stat().st_size > 0, name
    metrics = json.loads((tmp_path / "mcr2_metrics.json").read_text())
    assert metrics["epochs"] == 3
    assert metrics["dR"] > metrics["dR_init"] + 1.0       # the rate reduction went up
    assert metrics["R"] > metrics["R_init"]
    assert "nearest-subspace test accuracy" in proc.stdout


def test_figures_leave_the_matplotlib_backend_alone(tmp_path):
    """The figures are bare matplotlib Figures: no pyplot, no backend switch under a display."""
    code = (
        "import importlib.util, sys, numpy as np\n"
        f"spec = importlib.util.spec_from_file_location('m', {str(SCRIPT)!r})\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        "import matplotlib; before = matplotlib.rcParams._get_backend_or_none()\n"
        "Z = np.eye(6)[np.arange(12) % 6]; y = np.arange(12) % 3\n"
        "m.save_similarity_figure('sim.png', [('a', Z), ('b', Z)], y)\n"
        "m.save_rates_figure('rates.png', {'R': [1.0, 2.0], 'Rc': [0.5, 0.4], 'dR': [0.5, 1.6]})\n"
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot was imported'\n"
        "assert matplotlib.rcParams._get_backend_or_none() == before\n")
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("sim.png", "rates.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
