"""The nbgrader course: points equal to the course grader's, hidden tests of stored arrays."""
import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

TUTORIAL = '''# %% [markdown]
# # A tiny tutorial

# %%
import numpy as np
x = np.arange(3.0)

# %%
### BEGIN SOLUTION
y = 2 * x
### END SOLUTION

# %%
assert np.allclose(y, [0, 2, 4]), "y must be twice x"
assert y.shape == (3,)

# %%
### BEGIN SOLUTION
z = y + 1
big = np.outer(np.arange(100.0), np.arange(50.0))
### END SOLUTION

# %%
# points: 5
assert z.sum() == 9
'''


def course(tmp_path):
    pytest.importorskip("jupytext")
    pytest.importorskip("nbclient")
    from whitebox.course.to_nbgrader import write_course
    tutorials = tmp_path / "tutorials"
    tutorials.mkdir()
    (tutorials / "01_coding_rate.py").write_text(TUTORIAL)     # stands in for A1's tutorial
    return write_course(tmp_path / "course", ["A1"], tutorials=tutorials)


def test_points_add_up_to_the_graders_and_hidden_tests_hold_arrays(tmp_path):
    from whitebox.course import get_assignment
    from whitebox.course.to_nbgrader import scale_points
    assert scale_points([2, 5], 30) == [9, 21] and sum(scale_points([1, 1, 1], 10)) == 10
    (notebook, graded), = course(tmp_path)["A1"]
    assert sum(p for _, _, p in graded) == get_assignment("A1").points
    nb = json.loads(notebook.read_text())
    tests = ["".join(c["source"]) for c in nb["cells"]
             if c.get("metadata", {}).get("nbgrader", {}).get("grade")]
    assert [t.count("### BEGIN HIDDEN TESTS") for t in tests] == [1, 1]
    assert "'y differs from the stored answer'" in tests[0]
    assert "'z differs" in tests[1] and "'big differs" in tests[1]   # big: as projections
    assert all("whitebox" not in t.split("### BEGIN HIDDEN TESTS")[1] for t in tests)


def test_config_reads_without_warnings(tmp_path):
    pytest.importorskip("nbgrader")
    course(tmp_path)
    config = (tmp_path / "course" / "nbgrader_config.py").read_text()
    assert "db_assignments" not in config and "db_students" not in config
    proc = subprocess.run(["nbgrader", "db", "assignment", "list"], cwd=tmp_path / "course",
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "WARNING" not in proc.stderr and "not recognized" not in proc.stderr, proc.stderr


@pytest.mark.slow
def test_autograde_solved_untouched_and_a_wrong_hidden_value(tmp_path):
    pytest.importorskip("nbgrader")
    (notebook, graded), = course(tmp_path)["A1"]
    root = tmp_path / "course"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    run = lambda *cmd: subprocess.run(["nbgrader", *cmd], cwd=root, env=env,  # noqa: E731
                                      capture_output=True, text=True, timeout=600)
    proc = run("generate_assignment", "A1", "--force")
    assert proc.returncode == 0, proc.stderr[-3000:]
    released = root / "release" / "A1" / notebook.name
    assert "HIDDEN TESTS" not in released.read_text() and "BEGIN SOLUTION" not in \
        released.read_text()
    sneaky = json.loads(notebook.read_text())                   # visible checks pass, big wrong
    for cell in sneaky["cells"]:
        cell["source"] = "".join(cell["source"]).replace("np.arange(50.0))",
                                                         "np.arange(50.0)) + 1")
    for student, content in (("solved", notebook.read_text()),
                             ("untouched", released.read_text()),
                             ("sneaky", json.dumps(sneaky))):
        folder = root / "submitted" / student / "A1"
        folder.mkdir(parents=True)
        (folder / notebook.name).write_text(content)
    proc = run("autograde", "A1", "--force")
    assert proc.returncode == 0, proc.stderr[-3000:]
    from nbgrader.api import Gradebook
    with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gb:
        scores = {s: gb.find_submission("A1", s).score for s in ("solved", "untouched", "sneaky")}
    assert scores == {"solved": 30, "untouched": 0, "sneaky": graded[0][2]}, scores
