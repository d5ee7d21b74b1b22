"""Every tutorial is a script that ends in asserts: running it is its test.

They run in fast mode (WHITEBOX_FAST=1: fewer steps, smaller data) with a
non-interactive matplotlib backend, each in a fresh interpreter.
"""
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
TUTORIALS = sorted((ROOT / "tutorials").glob("[0-9][0-9]_*.py"))


@pytest.mark.parametrize("path", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_runs(path, tmp_path):
    env = dict(os.environ, WHITEBOX_FAST="1", MPLBACKEND="Agg",
               WHITEBOX_OUT=str(tmp_path))
    proc = subprocess.run([sys.executable, str(path)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{path.name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
