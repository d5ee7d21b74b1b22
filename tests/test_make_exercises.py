"""The exercise versions of the tutorials: solutions removed, checks kept, wrong answers caught."""
import ast
import os
import subprocess
import sys

import pytest

from conftest import ROOT, load_script

make_exercises = load_script("tutorials/make_exercises.py")
TUTORIALS = sorted((ROOT / "tutorials").glob("[0-9][0-9]_*.py"))
WITH_EXERCISES = [p for p in TUTORIALS if "### BEGIN SOLUTION" in p.read_text()]


def run_fast(path, tmp_path):
    env = dict(os.environ, WHITEBOX_FAST="1", MPLBACKEND="Agg", WHITEBOX_OUT=str(tmp_path),
               PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, str(path)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)


def test_indented_solution_is_replaced_at_its_indentation():
    src = ("def f(x):\n    ### BEGIN SOLUTION\n    return 2 * x\n    ### END SOLUTION\n"
           "assert f(1) == 2\n")
    out = make_exercises.strip_solutions(src)
    assert "2 * x" not in out and "    raise NotImplementedError" in out
    assert "assert f(1) == 2" in out
    ast.parse(out)


@pytest.mark.parametrize("src, match", [
    ("### BEGIN SOLUTION\nx = 1\n", "never closed"),
    ("x = 1\n### END SOLUTION\n", "without a BEGIN"),
    ("### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION\n", "nested"),
])
def test_bad_markers(src, match):
    with pytest.raises(ValueError, match=match):
        make_exercises.strip_solutions(src)


def test_ungraded_solution_is_found():
    src = ("### BEGIN SOLUTION\nx = 1\n### END SOLUTION\ncheck('x', x, 1)\n"
           "### BEGIN SOLUTION\ny = 2\n### END SOLUTION\nprint(y)\n")
    assert make_exercises.ungraded_solutions(src) == [5]
    # two blanks in one cell share the check after the cell; not across cells
    same_cell = ("### BEGIN SOLUTION\nx = 1\n### END SOLUTION\ny = 0\n"
                 "### BEGIN SOLUTION\ny = 2\n### END SOLUTION\n# %%\ncheck('y', y, 2)\n")
    assert make_exercises.ungraded_solutions(same_cell) == []
    assert make_exercises.ungraded_solutions(same_cell.replace("y = 0", "# %%")) == [1]


def test_tutorials_exist_in_order():
    names = [p.name for p in TUTORIALS]
    assert names[:3] == ["01_coding_rate.py", "02_mssa.py", "03_ista.py"]
    assert "04_crate_end_to_end.py" in names and "08_redunet.py" in names


@pytest.mark.parametrize("path", WITH_EXERCISES, ids=[p.stem for p in WITH_EXERCISES])
def test_every_solution_is_graded_outside_its_block(path):
    src = path.read_text()
    assert make_exercises.ungraded_solutions(src, path.name) == []
    out = make_exercises.strip_solutions(src, path.name)
    assert "### BEGIN SOLUTION" not in out
    assert out.count("raise NotImplementedError") == src.count("### BEGIN SOLUTION") \
        + src.count("raise NotImplementedError")
    # no check or assert lives inside a solution: stripping keeps every one
    graders = [line for line in src.splitlines() if make_exercises.GRADER.match(line)]
    assert graders == [line for line in out.splitlines() if make_exercises.GRADER.match(line)]
    ast.parse(out)


def test_stripped_tutorial_stops_at_its_first_exercise(tmp_path):
    path = ROOT / "tutorials" / "01_coding_rate.py"      # the cheapest to run up to it
    out = tmp_path / path.name
    out.write_text(make_exercises.strip_solutions(path.read_text(), path.name))
    proc = run_fast(out, tmp_path)
    assert proc.returncode != 0
    assert "NotImplementedError: exercise: write your solution here" in proc.stderr
    assert "all checks passed" not in proc.stdout


# A deliberately wrong answer in a key step: the check after it names itself and the error.
WRONG_ANSWERS = [
    ("01_coding_rate.py", "a = d / (N * eps ** 2) ", "a = d / (N * eps)      ",
     "check 'coding rate R, step by step' failed: relative error"),
    ("02_mssa.py", "dw = dw + s * (dS + dS.transpose(0, 1, 3, 2)) @ w",
     "dw = dw + s * dS @ w", "check 'MSSA backward dx vs whitebox.functional.mssa_backward' "
     "failed: relative error"),
    ("03_ista.py", "dW = eta * dM - eta * W @ (dM + dM.T)", "dW = eta * dM - eta * W @ (2 * dM)",
     "check 'ISTA backward dW vs whitebox.functional.ista_backward' failed: relative error"),
]


@pytest.mark.parametrize("name, right, wrong, message", WRONG_ANSWERS,
                         ids=[w[0][:-3] for w in WRONG_ANSWERS])
def test_wrong_answer_fails_with_the_check_named(name, right, wrong, message, tmp_path):
    src = (ROOT / "tutorials" / name).read_text()
    assert src.count(right) == 1
    broken = tmp_path / name
    broken.write_text(src.replace(right, wrong))
    proc = run_fast(broken, tmp_path)
    assert proc.returncode != 0
    assert message in proc.stderr, proc.stderr[-2000:]


def test_command_line_writes_files(tmp_path):
    make_exercises.main(["--out", str(tmp_path)])
    assert sorted(p.name for p in tmp_path.iterdir()) == [p.name for p in TUTORIALS]
