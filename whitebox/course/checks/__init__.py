"""The checks of every assignment, run by the judge (whitebox.course.judge) in the grader's process.

``aN.py`` registers the checks of assignment AN with ``@check(key, part, weight)``;
each receives ``run`` (calls into the submission's runner) and compares with the
grader's own whitebox. The weights stand next to each check: the check that a
backward has every term carries most of its part.
"""
from . import a1, a2, a3, a4  # noqa: F401
