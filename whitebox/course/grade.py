"""Grade a folder: the judge (this process) checks the folder's code, run in a runner process.

    grade("submission/")                       # the assignment from ASSIGNMENT.json
    grade(".", "A2")                           # the project itself: full marks
    grade("submission/", hidden="extra_tests/")
    grade_many(["alice/", "bob/"], "A2")       # a batch, one report each

Each part gets a fresh runner (whitebox/course/runner.py) that imports only
the folder's own ``whitebox`` and only executes the calls the checks send it;
the checks (whitebox/course/checks/aN.py), the reference values they compare
with, the hidden tests and the scores stay in this process (see judge.py).
A part scores points x (weight of the checks passed) / (weight of all its
checks); a check that did not return (the runner died, exited, timed out or
was refused) is a failed check with a line saying why.

Hidden tests: every ``test_<assignment>_part<N>_<anything>.py`` in the hidden
folder joins part N of that assignment (files for other assignments are left
out; any other ``test_*.py`` there is an error). They are loaded here, never
by the runner: each ``test_*`` function takes ``run`` like the checks do,
and may carry a ``weight`` attribute (default 1).
"""
import contextlib
import importlib.util
import inspect
import json
import os
import pathlib
import re
import shutil
import tempfile
from dataclasses import dataclass, field

from . import judge
from .assignments import get_assignment

MAX_PACKAGE = 256 << 20        # bytes of a submission's whitebox/
TEST_FILE = re.compile(r"^test_(a\d+)_part(\d+)(_.*)?\.py$", re.IGNORECASE)


@dataclass
class PartScore:
    number: int
    title: str
    points: int
    passed: int = 0
    total: int = 0
    failures: list = field(default_factory=list)     # [(check, message)]
    weight_passed: float = 0.0
    weight_total: float = 0.0

    @property
    def score(self):
        return self.points * self.weight_passed / self.weight_total if self.weight_total else 0.0


@dataclass
class GradeReport:
    assignment: str
    folder: str
    parts: list
    fatal: str = ""
    notes: list = field(default_factory=list)

    @property
    def score(self):
        return sum(p.score for p in self.parts)

    @property
    def points(self):
        return sum(p.points for p in self.parts)

    def to_dict(self):
        return {"assignment": self.assignment, "folder": self.folder, "fatal": self.fatal,
                "notes": self.notes, "score": self.score, "points": self.points,
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
        rows += [f"note: {n}" for n in self.notes]
        if failures:
            for p in self.parts:
                groups = {}
                for test, message in p.failures:
                    groups.setdefault(message, []).append(test)
                for message, tests in groups.items():
                    which = (tests[0] if len(tests) == 1
                             else f"{len(tests)} checks ({tests[0]}, ...)")
                    rows.append(f"  part {p.number} FAILED {which}: {message}")
        rows.append(f"score: {_num(self.score)}/{self.points}")
        return "\n".join(rows)


def _num(x):
    return f"{x:.1f}".rstrip("0").rstrip(".")


class Refused(ValueError):
    """A folder the grader will not run: why, in words."""


def read_assignment(folder):
    """The assignment key recorded in FOLDER/ASSIGNMENT.json, or None."""
    record = pathlib.Path(folder) / "ASSIGNMENT.json"
    if not record.exists() and not record.is_symlink():
        return None
    if record.is_symlink() or not record.is_file() or record.stat().st_size > 1 << 20:
        raise Refused(f"{record} is not a small plain file")
    try:
        data = json.loads(record.read_text())
        key = data["assignment"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as err:
        raise Refused(f"{record} is not a valid ASSIGNMENT.json ({type(err).__name__})") \
            from None
    if not isinstance(key, str):
        raise Refused(f"{record} names no assignment")
    return key


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


def load_hidden(folder, key):
    """The hidden tests as judge checks ([Check], [(name, part, why)] for files that fail
    to load). They are imported here, in the grader; the runner never sees them."""
    checks, broken = [], []
    for path, part in hidden_tests(folder, key):
        name = pathlib.Path(path).name
        spec = importlib.util.spec_from_file_location(f"_whitebox_hidden_{pathlib.Path(path).stem}",
                                                      path)
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except Exception as err:                                  # noqa: BLE001
            broken.append((name, part, f"could not load: {type(err).__name__}: {err}"))
            continue
        for attr, fn in vars(module).items():
            if attr.startswith("test_") and callable(fn):
                if list(inspect.signature(fn).parameters) != ["run"]:
                    broken.append((f"{name}::{attr}", part, "a hidden test takes one "
                                   "argument, run (see whitebox/course/judge.py)"))
                    continue
                checks.append(judge.Check(key, part, f"{name}::{attr}", fn,
                                          getattr(fn, "weight", 1.0), hidden=True))
    return checks, broken


def check_folder(folder):
    """Refuse a folder whose whitebox/ has links that leave it, or no package at all."""
    folder = pathlib.Path(folder).resolve()
    package = folder / "whitebox"
    if package.is_symlink() or not (package / "__init__.py").exists():
        if package.is_symlink():
            raise Refused(f"{package} is a link to {os.path.realpath(package)}; hand in the "
                          "files themselves")
        raise FileNotFoundError(f"{folder} has no whitebox/ package to grade")
    total = 0
    for path in [package, *package.rglob("*")]:
        if path.is_symlink():
            target = pathlib.Path(os.path.realpath(path))
            if not str(target).startswith(str(folder) + os.sep) or not target.exists():
                raise Refused(f"{path.relative_to(folder)} is a link to {target}, outside the "
                              "submission; hand in the files themselves")
            if target.is_dir():
                raise Refused(f"{path.relative_to(folder)} is a link to a folder; hand in "
                              "the folder itself")
        if not (path.is_dir() or path.is_file()):
            raise Refused(f"{path.relative_to(folder)} is neither a file nor a folder")
        if path.is_file():
            total += path.stat().st_size
    if total > MAX_PACKAGE:
        raise Refused(f"whitebox/ holds {total / 2**20:.0f} MiB, more than the "
                      f"{MAX_PACKAGE / 2**20:.0f} MiB a submission may")
    return folder


@contextlib.contextmanager
def _guarded():
    """While grading: orphans of the runner become this process's children (so they can be
    killed), and this process is not dumpable (another process of the same user cannot
    read or trace its memory)."""
    reaper = judge._prctl(judge.PR_SET_CHILD_SUBREAPER, 1) == 0
    dumpable = judge._prctl(judge.PR_GET_DUMPABLE, 0)       # -1 where there is no prctl
    if dumpable == 1:
        judge._prctl(judge.PR_SET_DUMPABLE, 0)
    try:
        yield
    finally:
        if dumpable == 1:
            judge._prctl(judge.PR_SET_DUMPABLE, 1)
        if reaper:
            judge._prctl(judge.PR_SET_CHILD_SUBREAPER, 0)


def grade(folder, assignment=None, hidden=None, timeout=120, verbose=False, limits=None,
          parts=None, _view=None):
    """Grade ``folder`` (it holds a ``whitebox/`` package); return a GradeReport.

    assignment: which one (default: the folder's ASSIGNMENT.json; a folder that
    declares another one is refused). hidden: a folder of hidden tests.
    timeout: seconds of wall-clock time the submission may take to answer one
    part's checks (the judge's own work does not count). limits: the runner's
    resource limits (judge.LIMITS: cpu_s, memory, file_size). parts: grade only
    these part numbers (default: all).
    """
    folder = pathlib.Path(folder).resolve()
    if not (folder / "whitebox").exists():
        raise FileNotFoundError(f"{folder} has no whitebox/ package to grade")
    declared = read_assignment(folder)
    key = assignment or declared
    if key is None:
        raise ValueError(f"{folder} has no ASSIGNMENT.json; say which assignment to grade "
                         "with --assignment")
    a = get_assignment(key)
    if a.coming:
        raise ValueError(f"{a.key} cannot be graded yet: {a.coming}")
    chosen = [a.part(n) for n in parts] if parts else list(a.parts)
    parts = {p.number: PartScore(p.number, p.title, p.points) for p in chosen}
    report = GradeReport(a.key, str(folder), list(parts.values()))
    if assignment is None:
        report.notes.append(f"graded as {a.key}, the assignment the folder's ASSIGNMENT.json "
                            "declares; pass --assignment to grade it as the one you set")
    checks = [c for c in judge.checks_for(a.key) if c.part in parts]
    broken = []
    if hidden is not None:
        extra, broken = load_hidden(hidden, a.key)
        checks += [c for c in extra if c.part in parts]
    for name, part, why in broken:
        if part not in parts:
            continue
        parts[part].total += 1
        parts[part].weight_total += 1
        parts[part].failures.append((name, why))
    refusal = ""
    if declared is not None and get_assignment_or_none(declared) != a.key:
        refusal = (f"the folder's ASSIGNMENT.json declares {declared!r}, not {a.key}: "
                   "hand in the release of this assignment")
    if not refusal:
        try:
            check_folder(folder)
        except Refused as err:
            refusal = str(err)
    if refusal:
        report.fatal = "refused: " + " ".join(refusal.split())
        for c in checks:
            _score(parts[c.part], c, False, "not run: the submission was refused")
        return report
    own_view = _view is None
    where = tempfile.mkdtemp(prefix="whitebox-view-") if own_view else None
    try:
        view, allowed = judge.make_view(where) if own_view else _view
        if own_view:
            os.chmod(where, 0o755)
        uid, _, note = judge.unprivileged_user()
        if note:
            report.notes.append(note)
        with _guarded():
            for number in parts:
                mine = [c for c in checks if c.part == number]
                if report.fatal:            # the package does not import, or was refused
                    for c in mine:
                        _score(parts[number], c, False, f"not run: {report.fatal}")
                    continue
                results, fatal = judge.run_part(folder, mine, view, allowed, timeout, limits)
                if fatal and not report.fatal:
                    report.fatal = fatal
                for c, ok, message in results:
                    _score(parts[number], c, ok, message)
                if verbose:
                    print(f"part {number}: {sum(ok for _, ok, _ in results)}/{len(results)}")
    finally:
        if own_view:
            shutil.rmtree(where, ignore_errors=True)
    return report


def get_assignment_or_none(key):
    try:
        return get_assignment(key).key
    except KeyError:
        return None


def _score(part, c, ok, message):
    part.total += 1
    part.weight_total += c.weight
    if ok:
        part.passed += 1
        part.weight_passed += c.weight
    else:
        part.failures.append((c.name, message))


def grade_many(folders, assignment=None, hidden=None, timeout=120, limits=None, parts=None):
    """One GradeReport per folder (a folder that cannot be graded gets a report with
    ``fatal`` set and score 0), sharing one view of the installed packages. Without
    ``assignment`` every folder is graded as the assignment most of them declare, and a
    folder that declares another one is refused."""
    if assignment is None:              # the assignment most folders declare, for every folder
        declared = []
        for folder in folders:
            try:
                declared.append(get_assignment_or_none(read_assignment(folder) or ""))
            except ValueError:
                pass
        declared = [d for d in declared if d]
        if declared:
            assignment = max(sorted(set(declared)), key=declared.count)
    where = tempfile.mkdtemp(prefix="whitebox-view-")
    reports = []
    try:
        os.chmod(where, 0o755)
        view = judge.make_view(where)
        for folder in folders:
            try:
                reports.append(grade(folder, assignment, hidden, timeout, limits=limits,
                                     parts=parts, _view=view))
            except (ValueError, FileNotFoundError, KeyError) as err:
                try:
                    key = assignment or read_assignment(folder)
                except ValueError:
                    key = None
                a = get_assignment(key) if key and get_assignment_or_none(key) else None
                scores = [PartScore(p.number, p.title, p.points) for p in a.parts] if a else []
                msg = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
                reports.append(GradeReport(a.key if a else "A1", str(folder), scores,
                                           fatal=str(msg)))
    finally:
        shutil.rmtree(where, ignore_errors=True)
    return reports
