"""The tutorials as nbgrader notebooks: solution cells and autograded check cells.

    python -m whitebox.course nbgrader --course COURSE_DIR [A1 A2 ...]

writes COURSE_DIR/nbgrader_config.py and COURSE_DIR/source/<assignment>/
holding each tutorial of the assignment as a notebook (converted by jupytext)
whose cells carry nbgrader metadata:

- a code cell that contains ``### BEGIN SOLUTION`` is a solution cell
  (nbgrader's generate_assignment replaces the marked lines with
  ``raise NotImplementedError()`` as tutorials/make_exercises.py does);
- the first code cell after it that asserts something (an ``assert`` or a
  call to ``check...``) is an autograded test cell, locked, weighted by its
  asserts and check calls (or N where the cell says ``# points: N``); the
  weights of an assignment's notebooks are scaled to whole points that add up
  to the course grader's points for it (``python -m whitebox.course list``);
- each test cell also gets a hidden part (``### BEGIN HIDDEN TESTS``, removed
  from the student version by nbgrader) that compares the arrays its solution
  cell assigns with arrays stored in the cell itself, computed once by running
  the tutorial whole: the hidden test calls nothing of the library.

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
c.ExecutePreprocessor.timeout = 600
# assignments: {assignments}; nbgrader adds each to its database on generate_assignment
"""
STORED_LIMIT = 4096        # entries stored whole; a larger array is stored as 32 projections


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


def scale_points(weights, total):
    """Whole points proportional to ``weights`` that add up to ``total`` (largest remainders)."""
    if not weights:
        return []
    raw = [w * total / sum(weights) for w in weights]
    points = [int(r) for r in raw]
    for i in sorted(range(len(raw)), key=lambda i: points[i] - raw[i])[:total - sum(points)]:
        points[i] += 1
    return points


def _assigned_names(source):
    """Module-level names a solution cell assigns inside its solution blocks."""
    lines = source.splitlines()
    inside, spans = None, []
    for number, line in enumerate(lines, 1):
        if line.strip() == "### BEGIN SOLUTION":
            inside = number if not line.startswith((" ", "\t")) else None
        elif line.strip() == "### END SOLUTION" and inside:
            spans.append((inside, number))
            inside = None
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    names = []
    for stmt in tree.body:
        if any(a < stmt.lineno < b for a, b in spans):
            for node in ast.walk(stmt):
                if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store) \
                        and node.id not in names and not node.id.startswith("_"):
                    names.append(node.id)
    return names


DUMP = """\
import numpy as _np
_saved = {{}}
for _name in {names!r}:
    try:
        _value = _np.asarray(globals()[_name])
    except Exception:
        continue
    if _value.dtype.kind in "biuf" and _value.size:
        _saved[_name] = _value.astype(float)
_np.savez({path!r}, **_saved)
"""


def _encode(array):
    import base64
    import io
    import numpy as np
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def hidden_test(stored):
    """The hidden block of a test cell: each name compared with its stored array."""
    import numpy as np
    lines = ["### BEGIN HIDDEN TESTS",
             "import base64 as _b64, io as _io",
             "import numpy as _np",
             "def _stored(text):",
             "    return _np.load(_io.BytesIO(_b64.b64decode(text)), allow_pickle=False)"]
    for name, value in stored.items():
        value = np.asarray(value, dtype=float)
        if value.size <= STORED_LIMIT:
            got = f"_np.asarray({name}, dtype=float)"
            want = value
        else:                               # 32 fixed random projections of the flat array
            projection = np.random.default_rng(0).standard_normal((value.size, 32))
            got = (f"_np.asarray({name}, dtype=float).reshape(-1) @ "
                   f"_np.random.default_rng(0).standard_normal(({value.size}, 32))")
            want = value.reshape(-1) @ projection
        lines += [f"_want = _stored({_encode(want)!r})",
                  f"assert _np.shape(_np.asarray({name})) == {value.shape!r}, "
                  f"f'{name} has shape {{_np.shape(_np.asarray({name}))}}, expected {value.shape!r}'",
                  f"assert _np.allclose({got}, _want, rtol=1e-6, atol=1e-9), "
                  f"'{name} differs from the stored answer'"]
    lines.append("### END HIDDEN TESTS")
    return "\n".join(lines)


def add_hidden_tests(nb, path, timeout=1800):
    """Run the tutorial notebook whole (its solutions in), store what each solution cell
    assigns, and append a hidden test of those arrays to the cell that grades it.

    Returns {test grade_id: [names]}.
    """
    import copy
    import tempfile
    import nbclient
    import nbformat
    pairs, open_cell = [], None
    for i, cell in enumerate(nb.cells):
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("solution"):
            open_cell = i
        elif meta.get("grade") and open_cell is not None:
            pairs.append((open_cell, i))
            open_cell = None
    if not pairs:
        return {}
    with tempfile.TemporaryDirectory() as tmp:
        run = copy.deepcopy(nb)
        dumps = {}
        for solution, test in reversed(pairs):
            names = _assigned_names(nb.cells[solution].source)
            if names:
                dump = pathlib.Path(tmp) / f"cell{solution}.npz"
                dumps[test] = dump
                run.cells.insert(solution + 1, nbformat.v4.new_code_cell(
                    DUMP.format(names=names, path=str(dump))))
        if not dumps:
            return {}
        import os
        fast = os.environ.get("WHITEBOX_FAST")
        os.environ["WHITEBOX_FAST"] = fast or "1"        # the kernel inherits it
        try:
            nbclient.NotebookClient(run, timeout=timeout, kernel_name=KERNEL["name"],
                                    resources={"metadata": {"path": str(pathlib.Path(path).parent)}}
                                    ).execute()
        finally:
            if fast is None:
                os.environ.pop("WHITEBOX_FAST")
        import numpy as np
        added = {}
        for test, dump in dumps.items():
            with np.load(dump) as data:
                stored = {k: data[k] for k in data.files}
            if stored:
                cell = nb.cells[test]
                cell.source = cell.source.rstrip("\n") + "\n" + hidden_test(stored)
                added[cell.metadata["nbgrader"]["grade_id"]] = list(stored)
    return added


def write_course(course, keys=None, root=ROOT, tutorials=None, hidden=True):
    """Write an nbgrader course folder for the assignments ``keys`` (default: all ready ones).

    tutorials: the folder of tutorial files (default: ROOT/tutorials). The test cells'
    points are scaled to add up to the course grader's points of each assignment.
    hidden: add the hidden stored-array tests (runs each tutorial once, in fast mode
    unless WHITEBOX_FAST says otherwise: grade in the same mode).
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
        converted = []
        for name in get_assignment(key).tutorials:
            tutorial = tutorials / name
            if not tutorial.exists():
                continue
            nb, graded = convert(tutorial)
            converted.append((tutorial, nb, graded))
        points = iter(scale_points([p for _, _, graded in converted for _, _, p in graded],
                                   get_assignment(key).points))
        for tutorial, nb, graded in converted:
            scaled = []
            for solution_id, test_id, _ in graded:
                p = next(points)
                for cell in nb.cells:
                    if cell.metadata.get("nbgrader", {}).get("grade_id") == test_id:
                        cell.metadata["nbgrader"]["points"] = p
                scaled.append((solution_id, test_id, p))
            if hidden:
                add_hidden_tests(nb, tutorial)
            target = folder / (tutorial.stem + ".ipynb")
            nbformat.write(nb, target)
            written[key].append((target, scaled))
        for helper in tutorials.glob("*.py"):   # helpers the notebooks import
            if not re.match(r"\d\d_", helper.name) and helper.name != "make_exercises.py":
                shutil.copy2(helper, folder / helper.name)
    config = course / "nbgrader_config.py"
    config.write_text(CONFIG.format(root=str(course.resolve()), assignments=", ".join(keys)))
    return written
