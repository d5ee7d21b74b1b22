"""benchmarks/gpu_check.py: where no GPU answers it says so and exits 0; its parsers read
pytest's and the training run's last lines."""
import subprocess
import sys

import pytest

from whitebox import backend

from conftest import ROOT, load_script



@pytest.fixture(scope="module")
def check():
    return load_script("benchmarks/gpu_check.py")


@pytest.mark.skipif(backend.gpu_available(), reason="a GPU is here: the check would run")
def test_without_a_gpu_it_says_so_and_exits_cleanly():
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "No GPU check here" in r.stdout
    assert ("CuPy is not installed" in r.stdout) or ("no CUDA device" in r.stdout)
    assert "Traceback" not in r.stderr


def test_gpu_status_without_cupy(check, monkeypatch):
    monkeypatch.setattr(check.importlib.util, "find_spec", lambda name: None)
    assert check.gpu_status() == (False, "CuPy is not installed (pip install "
                                          "'whitebox-crate[gpu]')")


def test_parsers(check):
    assert check.pytest_summary("...\n12 passed, 3 skipped, 40 deselected in 9.1s\n") == \
        "12 passed, 3 skipped"
    assert check.pytest_summary("1 failed, 2 passed in 1s") == "1 failed, 2 passed"
    assert check.held_out_accuracy("epoch 1 ...\ntest accuracy: 97.3%\n") == 97.3
    assert check.held_out_accuracy("crashed") is None


def test_table_has_one_row_per_result(check, capsys):
    rows = [("tests", "pytest -m gpu", "3 passed", "", "", "ok", 1.0),
            ("train", "run", "held-out acc 97.0%", "", "", "ok", 2.0)]
    check.print_table("a device", rows)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("|")]
    assert len(lines) == 2 + len(rows)
