"""The exercise versions of the tutorials: solutions removed, still valid Python."""
import ast
import importlib.util
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("make_exercises",
                                              ROOT / "tutorials" / "make_exercises.py")
make_exercises = importlib.util.module_from_spec(spec)
spec.loader.exec_module(make_exercises)
TUTORIALS = sorted((ROOT / "tutorials").glob("[0-9][0-9]_*.py"))


def test_indented_solution_is_replaced_at_its_indentation():
    src = ("def f(x):\n    ### BEGIN SOLUTION\n    return 2 * x\n    ### END SOLUTION\n"
           "print(f)\n")
    out = make_exercises.strip_solutions(src)
    assert "2 * x" not in out and "    raise NotImplementedError" in out
    ast.parse(out)


@pytest.mark.parametrize("src, match", [
    ("### BEGIN SOLUTION\nx = 1\n", "never closed"),
    ("x = 1\n### END SOLUTION\n", "without a BEGIN"),
    ("### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION\n", "nested"),
])
def test_bad_markers(src, match):
    with pytest.raises(ValueError, match=match):
        make_exercises.strip_solutions(src)


@pytest.mark.parametrize("path", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_every_tutorial_has_exercises_that_strip_to_valid_python(path):
    src = path.read_text()
    assert "### BEGIN SOLUTION" in src
    out = make_exercises.strip_solutions(src, path.name)
    assert "### BEGIN SOLUTION" not in out
    assert out.count("raise NotImplementedError") == src.count("### BEGIN SOLUTION") \
        + src.count("raise NotImplementedError")
    ast.parse(out)


def test_command_line_writes_files(tmp_path):
    make_exercises.main(["--out", str(tmp_path)])
    assert sorted(p.name for p in tmp_path.iterdir()) == [p.name for p in TUTORIALS]
