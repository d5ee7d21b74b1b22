"""Grading worker: runs in a fresh interpreter with the submission first on sys.path.

    python _worker.py SPEC.json

Run by whitebox.course.grade, never imported by it: this file imports nothing
from the grader's own whitebox, so ``import whitebox`` here is the graded
folder's. SPEC names the folder, the test files and their parts, and the
reference source of every function of the assignment; while a test of part
k runs, the functions of the other parts are swapped for their reference
versions, so each part is graded on its own. One JSON line per test is
appended to the results file as it finishes.
"""
import json
import os
import sys


def _fail(results, message):
    with open(results, "a") as f:
        f.write(json.dumps({"fatal": message}) + "\n")
    sys.exit(2)


class Swap:
    """One function replaced by its reference source, compiled in the graded module."""

    def __init__(self, module_name, qualname, source):
        import importlib
        self.module = importlib.import_module(module_name)
        owner_name, _, self.name = qualname.rpartition(".")
        self.owner = getattr(self.module, owner_name) if owner_name else self.module
        namespace = {}
        exec(compile(source, f"<reference {module_name}.{qualname}>", "exec"),
             self.module.__dict__, namespace)
        self.reference = namespace[self.name]
        self.target = vars(self.owner).get(self.name) if owner_name else \
            getattr(self.module, self.name, None)
        self.saved = None

    def install(self):
        t, r = self.target, self.reference
        if (t is not None and hasattr(t, "__code__")
                and len(t.__code__.co_freevars) == len(r.__code__.co_freevars)):
            # replacing the code object reaches every name bound to this function,
            # including ``from .module import name`` copies in other modules
            self.saved = ("code", t.__code__, t.__defaults__, t.__kwdefaults__)
            t.__code__, t.__defaults__, t.__kwdefaults__ = \
                r.__code__, r.__defaults__, r.__kwdefaults__
        else:
            self.saved = ("attr", t)
            setattr(self.owner, self.name, r)

    def restore(self):
        if self.saved is None:
            return
        kind = self.saved[0]
        if kind == "code":
            _, code, defaults, kwdefaults = self.saved
            t = self.target
            t.__code__, t.__defaults__, t.__kwdefaults__ = code, defaults, kwdefaults
        elif self.saved[1] is None:
            delattr(self.owner, self.name)
        else:
            setattr(self.owner, self.name, self.saved[1])
        self.saved = None


class Plugin:
    def __init__(self, spec, swaps):
        self.part_of = {os.path.realpath(path): part for path, part in spec["tests"]}
        self.swaps = swaps                          # {part: [Swap]}
        self.results = spec["results"]
        self.outcomes = {}
        self.part_of_node = {}

    def _part(self, path):
        return self.part_of.get(os.path.realpath(str(path)))

    def pytest_collection_modifyitems(self, items):
        for item in items:
            self.part_of_node[item.nodeid] = self._part(item.path)
            self._write({"collected": item.nodeid, "part": self.part_of_node[item.nodeid]})

    def _write(self, record):
        with open(self.results, "a") as f:
            f.write(json.dumps(record) + "\n")

    def pytest_collectreport(self, report):
        if report.failed:
            # node ids are paths from the root folder (pytest runs with --rootdir /)
            part = self._part(os.path.join(os.path.abspath(os.sep),
                                           report.nodeid.split("::")[0]))
            self._write({"test": report.nodeid, "part": part, "outcome": "failed",
                         "message": "could not collect: " + _first_line(report.longreprtext)})

    def pytest_runtest_setup(self, item):
        part = self._part(item.path)
        for other, swaps in self.swaps.items():
            if other != part:
                for swap in swaps:
                    swap.install()

    def pytest_runtest_teardown(self, item, nextitem):
        for swaps in self.swaps.values():
            for swap in swaps:
                swap.restore()

    def pytest_runtest_logreport(self, report):
        record = self.outcomes.setdefault(report.nodeid, {"outcome": "passed", "message": ""})
        if report.failed and record["outcome"] != "failed":
            record["outcome"] = "failed"
            crash = getattr(report.longrepr, "reprcrash", None)
            record["message"] = crash.message if crash else _first_line(report.longreprtext)
        elif report.skipped and record["outcome"] == "passed":
            record["outcome"] = "skipped"
        if report.when == "teardown":
            self._write({"test": report.nodeid, "part": self.part_of_node.get(report.nodeid),
                         **self.outcomes.pop(report.nodeid)})


def _first_line(text):
    lines = [l for l in str(text).splitlines() if l.strip()]
    return lines[-1][:500] if lines else ""


def main():
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    folder = os.path.realpath(spec["dir"])
    # the graded folder first; the grader's own folder (this file's) never
    sys.path[0] = folder
    for extra in reversed(spec["paths"]):
        sys.path.insert(1, extra)
    try:
        import whitebox
    except Exception as err:                                    # noqa: BLE001
        _fail(spec["results"], f"cannot import whitebox from {folder}: "
                               f"{type(err).__name__}: {err}")
    where = os.path.realpath(whitebox.__file__)
    if not where.startswith(folder + os.sep):
        _fail(spec["results"], f"import whitebox found {where}, not the graded folder {folder}")
    swaps = {}
    for part, functions in spec["functions"].items():
        try:
            swaps[int(part)] = [Swap(f["module"], f["qualname"], f["source"])
                                for f in functions]
        except Exception as err:                                # noqa: BLE001
            _fail(spec["results"], f"cannot prepare the reference of part {part}: "
                                   f"{type(err).__name__}: {err}")
    import pytest
    # a check file that fails to import (a function renamed away) costs its own checks only
    args = ["-q", "-p", "no:cacheprovider", "--import-mode=importlib", "--tb=short",
            "--continue-on-collection-errors",
            "-c", spec["ini"], "--rootdir", os.path.abspath(os.sep),
            *[path for path, _ in spec["tests"]]]
    code = pytest.main(args, plugins=[Plugin(spec, swaps)])
    sys.exit(0 if int(code) in (0, 1) else int(code))


if __name__ == "__main__":
    main()
