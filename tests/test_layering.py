"""The package's import graph, read from the source (AST): the layers import downwards only.

``whitebox.training`` (the loop) must not import ``whitebox.tasks`` (what is
trained) nor the entry point ``whitebox.train`` that joins the two; the
tasks must not import the entry point either.
"""
import ast
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "whitebox")


def _module_name(path):
    rel = os.path.relpath(path, ROOT)[:-len(".py")].split(os.sep)
    return ".".join(rel[:-1] if rel[-1] == "__init__" else rel)


def imports_of(path):
    """The absolute module names a file imports (``from . import x`` counts as ``pkg.x``)."""
    name = _module_name(path)
    package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read(), path)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module
            found.add(stem)
            found.update(f"{stem}.{alias.name}" for alias in node.names)
    return found


def package_files(*parts):
    top = os.path.join(PACKAGE, *parts)
    for folder, _, files in os.walk(top):
        for f in files:
            if f.endswith(".py"):
                yield os.path.join(folder, f)


def _reaches(imported, target):
    return any(m == target or m.startswith(target + ".") for m in imported)


def test_imports_of_resolves_relative_imports(tmp_path):
    """The reader itself: a relative import two levels up is found, so the tests below can fail."""
    path = os.path.join(PACKAGE, "training", "loop.py")
    imported = imports_of(path)
    assert "whitebox.checkpoint" in imported and "whitebox.training.config" in imported


@pytest.mark.parametrize("path", sorted(package_files("training")),
                         ids=lambda p: os.path.relpath(p, PACKAGE))
def test_training_imports_no_task_and_not_the_entry_point(path):
    imported = imports_of(path)
    assert not _reaches(imported, "whitebox.tasks"), sorted(imported)
    assert not _reaches(imported, "whitebox.train"), sorted(imported)


@pytest.mark.parametrize("path", sorted(package_files("tasks")),
                         ids=lambda p: os.path.relpath(p, PACKAGE))
def test_tasks_do_not_import_the_entry_point(path):
    assert not _reaches(imports_of(path), "whitebox.train"), path


def test_importing_the_loop_loads_no_task():
    code = ("import sys, whitebox.training; "
            "print(sorted(m for m in sys.modules if m.startswith(('whitebox.tasks', "
            "'whitebox.train.', 'whitebox.torch_twins')) or m == 'whitebox.train'))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
