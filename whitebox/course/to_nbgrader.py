"""The tutorials as nbgrader notebooks: solution cells and autograded check cells.

    python -m whitebox.course nbgrader --course COURSE_DIR [A1 A2 ...]

writes COURSE_DIR/nbgrader_config.py and COURSE_DIR/source/<assignment>/
holding each tutorial of the assignment as a notebook (converted by jupytext)
whose cells carry nbgrader metadata:

- a code cell that contains ``### BEGIN SOLUTION`` is a solution cell
  (nbgrader's generate_assignment replaces the marked lines with
  ``raise NotImplementedError()`` as tutorials/make_exercises.py does);
- the first code cell after it that asserts something (an ``assert`` or a
  call to ``check...``) is an autograded test cell, locked, worth one point
  per assert or check call, or N points where the cell says ``# points: N``.

Then, in COURSE_DIR, ``nbgrader generate_assignment A1`` writes the student
version to release/A1/, and ``nbgrader autograde A1`` grades the notebooks
collected under submitted/<student>/A1/. jupytext and nbgrader come with the
``course`` extra (``pip install whitebox-crate[course]``); nothing else in
whitebox imports them.
"""
import ast
import pathlib
import re
import shutil

from .assignments import get_assignment
from .release import ROOT

POINTS = re.compile(r"^\s*#\s*points:\s*(\d+)\s*$", re.MULTILINE)
KERNEL = {"name": "python3", "display_name": "Python 3", "language": "python"}
CONFIG = """\
c = get_config()                                        # noqa: F821 (nbgrader's config)
c.CourseDirectory.course_id = "whitebox"
c.CourseDirectory.root = {root!r}
c.CourseDirectory.db_assignments = {assignments!r}
c.CourseDirectory.db_students = []
c.ExecutePreprocessor.timeout = 600
"""


def _checks_in(source):
    """How many asserts and check calls a cell's top-level statements make (None: not Python)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    count = 0
    for stmt in ast.walk(tree):
        if isinstance(stmt, ast.Assert):
            count += 1
        elif isinstance(stmt, ast.Call):
            f = stmt.func
            name = f.id if isinstance(f, ast.Name) else getattr(f, "attr", "")
            count += name.startswith("check")
    return count


def _meta(grade_id, solution=False, grade=False, points=None):
    meta = {"grade": grade, "grade_id": grade_id, "locked": grade, "schema_version": 3,
            "solution": solution, "task": False}
    if grade:
        meta["points"] = points
    return meta


def convert(path):
    """A tutorial (jupytext percent .py) as an nbformat notebook with nbgrader metadata.

    Returns the notebook and a list of (solution grade_id, test grade_id, points).
    """
    import jupytext
    path = pathlib.Path(path)
    nb = jupytext.read(path)
    nb.metadata["kernelspec"] = KERNEL
    nb.metadata.pop("jupytext", None)
    stem = path.stem.replace("_", "-")
    graded, open_solution = [], None
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        if "### BEGIN SOLUTION" in cell.source:
            open_solution = f"{stem}-solution-{len(graded) + 1}"
            cell.metadata["nbgrader"] = _meta(open_solution, solution=True)
            continue
        if open_solution is None:
            continue
        count = _checks_in(cell.source)
        if count:
            m = POINTS.search(cell.source)
            points = int(m.group(1)) if m else count
            test_id = f"{stem}-check-{len(graded) + 1}"
            cell.metadata["nbgrader"] = _meta(test_id, grade=True, points=points)
            graded.append((open_solution, test_id, points))
            open_solution = None
    return nb, graded


def write_course(course, keys=None, root=ROOT, tutorials=None):
    """Write an nbgrader course folder for the assignments ``keys`` (default: all ready ones).

    tutorials: the folder of tutorial files (default: ROOT/tutorials).
    Returns {assignment: [(notebook path, [(solution id, test id, points)])]}.
    """
    import nbformat
    from .assignments import ASSIGNMENTS
    course, root = pathlib.Path(course), pathlib.Path(root)
    tutorials = pathlib.Path(tutorials) if tutorials else root / "tutorials"
    keys = [get_assignment(k).key for k in keys] if keys else \
        [k for k, a in ASSIGNMENTS.items() if not a.coming]
    written = {}
    for key in keys:
        folder = course / "source" / key
        folder.mkdir(parents=True, exist_ok=True)
        written[key] = []
        for name in get_assignment(key).tutorials:
            tutorial = tutorials / name
            if not tutorial.exists():
                continue
            nb, graded = convert(tutorial)
            target = folder / (tutorial.stem + ".ipynb")
            nbformat.write(nb, target)
            written[key].append((target, graded))
        for helper in tutorials.glob("*.py"):   # helpers the notebooks import
            if not re.match(r"\d\d_", helper.name) and helper.name != "make_exercises.py":
                shutil.copy2(helper, folder / helper.name)
    config = course / "nbgrader_config.py"
    config.write_text(CONFIG.format(root=str(course.resolve()),
                                    assignments=[{"name": k} for k in keys]))
    return written
