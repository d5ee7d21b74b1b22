"""Every tutorial is a script that ends in asserts: running it is its test.

They run in fast mode (WHITEBOX_FAST=1: fewer steps, smaller data; a few minutes
each on two busy cores) with a non-interactive matplotlib backend, each in a
fresh interpreter. A slow test
executes one as a Jupyter notebook and checks that its figures show inline.
"""
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
TUTORIALS = sorted((ROOT / "tutorials").glob("[0-9][0-9]_*.py"))
FIGURES_CHECKED = ("01", "02", "03", "04", "05", "07", "08", "09", "10")  # write NN_*.png into WHITEBOX_OUT


def fast_env(tmp_path):
    return dict(os.environ, WHITEBOX_FAST="1", MPLBACKEND="Agg", WHITEBOX_OUT=str(tmp_path),
                PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))


@pytest.mark.parametrize("path", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_runs(path, tmp_path):
    proc = subprocess.run([sys.executable, str(path)], cwd=tmp_path, env=fast_env(tmp_path),
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, \
        f"{path.name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    if path.name[:2] in FIGURES_CHECKED:
        assert list(tmp_path.glob(f"{path.name[:2]}_*.png")), "the tutorial wrote no figure"


@pytest.mark.slow
def test_notebook_shows_figures_inline(tmp_path, monkeypatch):
    jupytext = pytest.importorskip("jupytext")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    notebook = jupytext.read(ROOT / "tutorials" / "01_coding_rate.py")
    env = fast_env(tmp_path)
    env.pop("MPLBACKEND")                    # a notebook uses its own inline backend
    env.pop("WHITEBOX_OUT")                  # default: outputs/tutorials next to the notebook
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    images = [o for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if "image/png" in o.get("data", {})]
    assert len(images) == 2                  # both figures of 01, shown inline
    assert len(list((tmp_path / "outputs" / "tutorials").glob("01_*.png"))) == 2   # and saved
