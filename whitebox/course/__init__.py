"""Course tooling: assignments built from the library, student releases, and a grader.

    python -m whitebox.course list
    python -m whitebox.course release A2 --out handout/
    python -m whitebox.course audit A2 [--folder handout/]
    python -m whitebox.course grade handout/ [--assignment A2] [--hidden tests_dir/]
    python -m whitebox.course nbgrader --course course/ A1 A2

An assignment's parts name library functions; a release is a copy of the
library with those functions' bodies removed (whitebox.course.strip), the
assignment's tutorials without their solutions, and visible tests (stored
values and gradient checks, whitebox/course/visible.py); the release audit
(whitebox/course/audit.py) refuses one that still holds an answer. The
grader judges each part in its own process (whitebox/course/judge.py, checks
in whitebox/course/checks/) while the folder's code runs alone in a limited
runner process (whitebox/course/runner.py), one score per part. See
tutorials/INSTRUCTORS.md.
"""
from .assignments import ASSIGNMENTS, Assignment, Part, get_assignment
from .grade import GradeReport, grade, grade_many
from .release import release

__all__ = ["ASSIGNMENTS", "Assignment", "Part", "get_assignment", "release", "grade",
           "GradeReport", "grade_many"]
