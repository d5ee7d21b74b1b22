"""Grade a folder: run each part's checks against the folder's own code.

    grade("submission/")                       # the assignment from ASSIGNMENT.json
    grade(".", "A2")                           # the project itself: full marks
    grade("submission/", hidden="extra_tests/")

The checks run with pytest in a fresh interpreter whose ``import whitebox``
is the folder's (see _worker.py), so the graded code is never the grader's.
A part scores points x (checks passed) / (checks run). Hidden tests: every
``test_<assignment>_part<N>_<anything>.py`` in the hidden folder joins part
N of that assignment (files for other assignments are left out); any other
``test_*.py`` there is an error.
"""
import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field

from .assignments import get_assignment
from .release import CHECKS, ROOT, check_files
from .strip import function_source

WORKER = pathlib.Path(__file__).resolve().parent / "_worker.py"
TEST_FILE = re.compile(r"^test_(a\d+)_part(\d+)(_.*)?\.py$", re.IGNORECASE)


@dataclass
class PartScore:
    number: int
    title: str
    points: int
    passed: int = 0
    total: int = 0
    failures: list = field(default_factory=list)     # [(test, message)]

    @property
    def score(self):
        return self.points * self.passed / self.total if self.total else 0.0


@dataclass
class GradeReport:
    assignment: str
    folder: str
    parts: list
    fatal: str = ""

    @property
    def score(self):
        return sum(p.score for p in self.parts)

    @property
    def points(self):
        return sum(p.points for p in self.parts)

    def to_dict(self):
        return {"assignment": self.assignment, "folder": self.folder, "fatal": self.fatal,
                "score": self.score, "points": self.points,
                "parts": [{"number": p.number, "title": p.title, "points": p.points,
                           "score": p.score, "passed": p.passed, "total": p.total,
                           "failures": p.failures} for p in self.parts]}

    def table(self, failures=True):
        rows = [f"{self.assignment}: {get_assignment(self.assignment).title}   ({self.folder})",
                f"{'part':<5} {'title':<62} {'checks':>7} {'score':>8}"]
        for p in self.parts:
            rows.append(f"{p.number:<5} {p.title[:62]:<62} {f'{p.passed}/{p.total}':>7} "
                        f"{_num(p.score) + '/' + str(p.points):>8}")
        if self.fatal:
            rows.append(f"could not grade: {self.fatal}")
        if failures:
            for p in self.parts:
                groups = {}
                for test, message in p.failures:
                    groups.setdefault(message, []).append(test.split("::")[-1])
                for message, tests in groups.items():
                    which = tests[0] if len(tests) == 1 else f"{len(tests)} checks ({tests[0]}, ...)"
                    rows.append(f"  part {p.number} FAILED {which}: {message}")
        rows.append(f"score: {_num(self.score)}/{self.points}")
        return "\n".join(rows)


def _num(x):
    return f"{x:.1f}".rstrip("0").rstrip(".")


def read_assignment(folder):
    """The assignment key recorded in FOLDER/ASSIGNMENT.json, or None."""
    record = pathlib.Path(folder) / "ASSIGNMENT.json"
    if not record.exists():
        return None
    return json.loads(record.read_text())["assignment"]


def hidden_tests(folder, key):
    """[(path, part)] for the hidden test files of assignment ``key`` in ``folder``."""
    folder = pathlib.Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"hidden tests folder {folder} does not exist")
    assignment = get_assignment(key)
    found, bad = [], []
    for path in sorted(folder.glob("test_*.py")):
        m = TEST_FILE.match(path.name)
        if not m:
            bad.append(path.name)
        elif m.group(1).upper() == assignment.key:
            part = int(m.group(2))
            assignment.part(part)                     # KeyError names the parts there are
            found.append((str(path.resolve()), part))
    if bad:
        raise ValueError(f"hidden test files must be named test_<assignment>_part<N>_<name>.py "
                         f"(for example test_a2_part3_symmetric.py); cannot map: "
                         f"{', '.join(bad)}")
    return found


def _reference(assignment, root):
    """{part: [{module, qualname, source}]}: the reference of every function, from ``root``."""
    out = {}
    for part in assignment.parts:
        out[str(part.number)] = []
        for spec in part.functions:
            path, name = spec.split(":")
            source = (pathlib.Path(root) / path).read_text()
            module = path[:-3].replace("/", ".")
            out[str(part.number)].append({"module": module, "qualname": name,
                                          "source": function_source(source, name, path)})
    return out


def grade(folder, assignment=None, hidden=None, timeout=900, root=ROOT, verbose=False):
    """Grade ``folder`` (it holds a ``whitebox/`` package); return a GradeReport."""
    folder = pathlib.Path(folder).resolve()
    if not (folder / "whitebox" / "__init__.py").exists():
        raise FileNotFoundError(f"{folder} has no whitebox/ package to grade")
    key = assignment or read_assignment(folder)
    if key is None:
        raise ValueError(f"{folder} has no ASSIGNMENT.json; say which assignment to grade "
                         "with --assignment")
    a = get_assignment(key)
    if a.coming:
        raise ValueError(f"{a.key} cannot be graded yet: {a.coming}")
    tests = [(str(p), int(TEST_FILE.match(p.name).group(2))) for p in check_files(a.key)]
    paths = [str(CHECKS)]
    if hidden is not None:
        tests += hidden_tests(hidden, a.key)
        paths.append(str(pathlib.Path(hidden).resolve()))
    parts = {p.number: PartScore(p.number, p.title, p.points) for p in a.parts}
    with tempfile.TemporaryDirectory(prefix="whitebox-grade-") as tmp:
        ini = pathlib.Path(tmp) / "pytest.ini"
        ini.write_text("[pytest]\n")
        results = pathlib.Path(tmp) / "results.jsonl"
        results.touch()
        spec = {"dir": str(folder), "tests": tests, "paths": paths, "ini": str(ini),
                "results": str(results), "functions": _reference(a, root)}
        spec_path = pathlib.Path(tmp) / "spec.json"
        spec_path.write_text(json.dumps(spec))
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        # WHITEBOX_FUSED=0: the fused loops are hidden arrangements (stripped, never graded)
        env.update(PYTHONDONTWRITEBYTECODE="1", MPLBACKEND="Agg", WHITEBOX_FUSED="0")
        fatal = ""
        try:
            proc = subprocess.run([sys.executable, str(WORKER), str(spec_path)], cwd=tmp,
                                  env=env, capture_output=True, text=True, timeout=timeout)
            if verbose:
                print(proc.stdout[-20000:], proc.stderr[-5000:], sep="\n")
            if proc.returncode:
                fatal = f"the test run stopped with exit code {proc.returncode}: " \
                        f"{(proc.stderr or proc.stdout).strip()[-800:]}"
        except subprocess.TimeoutExpired:
            fatal = f"the checks did not finish within {timeout} s (unfinished checks fail)"
        records = [json.loads(line) for line in results.read_text().splitlines() if line]
    seen, collected = set(), {}
    for r in records:
        if "fatal" in r:
            fatal = r["fatal"]
            continue
        if "collected" in r:
            collected[r["collected"]] = r["part"]
            continue
        part = parts.get(r["part"])
        if part is None or r["outcome"] == "skipped":
            continue
        seen.add(r["test"])
        part.total += 1
        if r["outcome"] == "passed":
            part.passed += 1
        else:
            part.failures.append((r["test"], _short(r["message"])))
    for test, number in collected.items():
        if test not in seen and number in parts and not any(
                r.get("test") == test for r in records):
            parts[number].total += 1
            parts[number].failures.append((test, "did not finish"))
    return GradeReport(a.key, str(folder), list(parts.values()), fatal)


def _short(message):
    message = " ".join(str(message).split())
    if "NotImplementedError" in message:
        return "not written yet (" + message.split("NotImplementedError:", 1)[-1].strip()[:240] + ")"
    return message[:400]
