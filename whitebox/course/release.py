"""Write a student release: the library with one assignment's functions removed.

    release("A2", "handout/")   # python -m whitebox.course release A2 --out handout

The folder holds ``whitebox/`` (a copy of the library, every function of the
assignment's parts stripped to a NotImplementedError that says which part
and which tutorial section derives it), ``tutorials/`` (the assignment's
tutorials without their solution blocks, written by
tutorials/make_exercises.py), ``tests/`` (visible tests: the graded functions
on the grader's inputs against values the reference stored, and each backward
against central differences of the student's own forward; whitebox.course.visible),
``pyproject.toml`` (``pip install -e .`` makes it
importable as ``whitebox``), ``README.md`` and ``ASSIGNMENT.json`` (which
assignment this is, read by the grader).

The library's PyTorch twins (``whitebox/torch_*.py``, ``whitebox/torch_twins/``)
stay behind: each computes a graded layer in a few lines of torch. Before it
returns, ``release`` runs the release audit (whitebox.course.audit) on the
folder and raises AuditError, leaving nothing behind, when code in it still
computes what a graded function computes.
"""
import datetime
import json
import pathlib
import re
import shutil
import subprocess
import sys

from .assignments import get_assignment
from .visible import write_visible_tests
from .strip import strip_functions

PACKAGE = pathlib.Path(__file__).resolve().parents[1]        # .../whitebox
ROOT = PACKAGE.parent                                         # the project
HEADING = re.compile(r"^#\s+(#{2,4})\s+(.*\S)\s*$")




def section(tutorial, words, root=ROOT):
    """The heading of ``tutorial`` that contains ``words`` (case-insensitive), or None."""
    path = root / "tutorials" / tutorial
    if not path.exists():
        return None
    for line in path.read_text().splitlines():
        m = HEADING.match(line)
        if m and words.lower() in m.group(2).lower():
            return m.group(2).replace("`", "")
    return None


def pointer(part, root=ROOT):
    """'tutorials/02_mssa.py, section "4. MSSA backward, with d-twins"' (or just the file)."""
    where = f"tutorials/{part.tutorial}"
    heading = section(part.tutorial, part.section, root)
    return f'{where}, section "{heading}"' if heading else where


def stub_messages(assignment, root=ROOT):
    """{file: {qualname: message}} for every function the assignment strips
    (the parts' functions, and their hidden other arrangements)."""
    out = {}
    for part in assignment.parts:
        where = pointer(part, root)
        for spec in part.functions:
            path, name = spec.split(":")
            out.setdefault(path, {})[name] = (
                f"{assignment.key} part {part.number}: write {name}; see {where}")
        asked = ", ".join(spec.split(":")[1] for spec in part.functions)
        for spec in part.hidden:
            path, name = spec.split(":")
            if not _defines(root / path, name):
                continue                      # not in this library; the audit checks
            out.setdefault(path, {})[name] = (
                f"{assignment.key} part {part.number}: {name} is another arrangement of "
                f"{asked}, hidden in this release; it is not part of the exercise")
    return out


def _defines(file, name):
    """Whether ``file`` defines function (or method) ``name``."""
    import ast
    from .strip import _functions
    return file.exists() and name in _functions(ast.parse(file.read_text()))


def _ignore(folder, names):
    skip = {"__pycache__", ".pytest_cache"}
    top = pathlib.Path(folder).resolve() == PACKAGE
    if top:
        skip |= {"course",             # the grader and its checks stay with the instructor
                 "torch_twins"}        # the PyTorch twins hold every graded layer in torch
    return [n for n in names if n in skip or n.endswith((".pyc", ".pyo"))
            or (top and n.startswith("torch_") and n.endswith(".py"))]


class AuditError(RuntimeError):
    """A release in which code still computes what a graded function computes."""


def _write_tutorials(assignment, out, root):
    """The assignment's tutorials with solutions stripped, by tutorials/make_exercises.py."""
    tutorials = root / "tutorials"
    files = [tutorials / t for t in assignment.tutorials]
    missing = [f.name for f in files if not f.exists()]
    if missing:
        raise FileNotFoundError(f"{assignment.key} lists tutorials that {tutorials} lacks: "
                                f"{missing}; a release without them would point students "
                                "at files they do not have")
    target = out / "tutorials"
    target.mkdir(parents=True, exist_ok=True)
    if files:
        proc = subprocess.run([sys.executable, str(tutorials / "make_exercises.py"),
                               *map(str, files), "--out", str(target)],
                              capture_output=True, text=True)
        if proc.returncode:
            raise RuntimeError(f"tutorials/make_exercises.py failed:\n{proc.stderr}")
    # helpers the tutorials import (plots.py and the like) travel unchanged
    for helper in tutorials.glob("*.py"):
        if not re.match(r"\d\d_", helper.name) and helper.name != "make_exercises.py":
            shutil.copy2(helper, target / helper.name)
    return [f.name for f in files]


PYPROJECT = """\
[build-system]
requires = ["setuptools>=61", "wheel"]
build-backend = "setuptools.build_meta"

[project]
name = "whitebox-{key_lower}"
version = "{version}"
description = "whitebox course assignment {key}: {title}"
requires-python = ">=3.10"
dependencies = ["numpy>=1.23", "matplotlib>=3.5", "tqdm>=4.60", "threadpoolctl>=3.1",
                "mlxtend>=0.21"]

[project.optional-dependencies]
test = ["pytest>=7"]

[tool.setuptools.packages.find]
include = ["whitebox", "whitebox.*"]

[tool.pytest.ini_options]
testpaths = ["tests"]
"""

README = """\
# Assignment {key}: {title}

{summary}

This folder is a copy of the whitebox library in which the functions below
raise `NotImplementedError`. Write them; everything else already works.

## Setup

```bash
pip install -e ".[test]"        # installs this folder as `whitebox`, and what it needs
```

## What to write ({points} points, about {hours:g} hours)

{parts}

## Check your work

```bash
python -m pytest tests -q                                # every part
python -m pytest tests/test_{key_lower}_part1_visible.py -q       # one part
```

The tests compare your functions, on fixed inputs, with values the
reference computed on the same inputs (stored in `tests/expected_*.npz`),
and check each backward against central differences of your own forward. A
failure names the function, the index where the values differ most, both
values and the relative error. Run the parts in order: a later part may call
the functions of an earlier one (MSSA calls your softmax), so a mistake in an
earlier part can cost a later part too. The grader checks the same functions
on these inputs and a few more against the reference, in a separate process
that sees only your folder; a backward is checked with the reference
forward's cache, so a wrong forward does not also fail it.

## The tutorials

`tutorials/` holds the notebooks of this assignment as jupytext scripts,
with their exercise solutions removed. They call the library functions you
write, so their cells that do raise `NotImplementedError` until you have
written them. Run one with
`python tutorials/<name>.py`, or open it as a notebook:
`pip install jupytext && jupytext --to notebook tutorials/<name>.py`.

## Hand in

Hand in this whole folder (or an archive of it) without renaming
`whitebox/`; `ASSIGNMENT.json` tells the grader which assignment it is.
"""


def release(key, out, root=ROOT, force=False, audit=True):
    """Write the student release of assignment ``key`` into folder ``out``; return its path.

    audit: run the release audit and raise AuditError (removing ``out``) when it fails.
    """
    assignment = get_assignment(key)
    if assignment.coming:
        raise ValueError(f"{assignment.key} cannot be released yet: {assignment.coming}")
    out = pathlib.Path(out)
    if out.exists() and any(out.iterdir()):
        if not force:
            raise FileExistsError(f"{out} exists and is not empty; choose a new folder "
                                  "or pass force=True (--force) to replace it")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    root = pathlib.Path(root)
    shutil.copytree(root / "whitebox", out / "whitebox", ignore=_ignore)

    for path, messages in stub_messages(assignment, root).items():
        target = out / path
        target.write_text(strip_functions(target.read_text(), messages, path))

    tutorials = _write_tutorials(assignment, out, root)
    (out / "tests").mkdir()
    write_visible_tests(assignment.key, out / "tests")

    from .. import __version__
    fields = dict(key=assignment.key, key_lower=assignment.key.lower(),
                  title=assignment.title, summary=assignment.summary,
                  points=assignment.points, hours=assignment.hours, version=__version__)
    parts = "\n".join(
        f"{p.number}. **{p.title}** ({p.points} points): "
        + ", ".join(f"`{f.split(':')[1]}` in `{f.split(':')[0]}`" for f in p.functions)
        + f". Derived in {pointer(p, root)}." for p in assignment.parts)
    (out / "pyproject.toml").write_text(PYPROJECT.format(**fields))
    (out / "README.md").write_text(README.format(parts=parts, **fields))
    record = {"assignment": assignment.key, "title": assignment.title,
              "points": assignment.points, "whitebox_version": __version__,
              "released": datetime.datetime.now(datetime.timezone.utc).isoformat(
                  timespec="seconds"),
              "tutorials": tutorials,
              "parts": [{"number": p.number, "title": p.title, "points": p.points,
                         "functions": list(p.functions)} for p in assignment.parts]}
    (out / "ASSIGNMENT.json").write_text(json.dumps(record, indent=2) + "\n")
    if audit:
        from .audit import audit as run_audit
        report = run_audit(assignment.key, out, root)
        if not report.ok:
            shutil.rmtree(out)
            raise AuditError(f"the {assignment.key} release holds answers; nothing was "
                             f"written:\n{report.table()}")
        for note in report.notes:
            print(f"release {assignment.key}: audit note: {note}", file=sys.stderr)
    return out


def fill_in(folder, key, parts, root=ROOT):
    """Put the reference functions of ``parts`` back into a release (a partial solution),
    with the part's hidden arrangements the library has (the reference may call them:
    A3's ``CRATELayer.forward`` is the shared ``ResidualBlock.forward``).

    For instructors checking a release, and for the course's own tests:
    ``fill_in("handout/", "A2", [1])`` makes part 1 of the handout complete.
    """
    from .strip import function_source, replace_function
    assignment = get_assignment(key)
    folder, root = pathlib.Path(folder), pathlib.Path(root)
    for number in parts:
        part = assignment.part(number)
        hidden = [s for s in part.hidden if _defines(root / s.split(":")[0], s.split(":")[1])]
        for spec in list(part.functions) + hidden:
            path, name = spec.split(":")
            reference = function_source((root / path).read_text(), name, path)
            target = folder / path
            target.write_text(replace_function(target.read_text(), name, reference, path))
