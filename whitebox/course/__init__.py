"""Course tooling: assignments built from the library, student releases, and a grader.

    python -m whitebox.course list
    python -m whitebox.course release A2 --out handout/
    python -m whitebox.course grade handout/ [--assignment A2] [--hidden tests_dir/]

An assignment's parts name library functions; a release is a copy of the
library with those functions' bodies removed (whitebox.course.strip), the
assignment's tutorials without their solutions, and the checks the grader
runs (whitebox/course/checks/). The grader runs the checks with pytest in a
fresh interpreter that imports the graded folder's whitebox, one score per
part. See tutorials/INSTRUCTORS.md.
"""
from .assignments import ASSIGNMENTS, Assignment, Part, get_assignment
from .grade import GradeReport, grade
from .release import release

__all__ = ["ASSIGNMENTS", "Assignment", "Part", "get_assignment", "release", "grade",
           "GradeReport"]
