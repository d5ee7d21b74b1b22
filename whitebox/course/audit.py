"""The release audit: no code in a handout computes what a graded function computes.

    python -m whitebox.course audit A2            # release A2 in a temporary folder, audit it
    python -m whitebox.course audit A2 --folder handout/

``release`` runs it and refuses to write a handout that fails. Two layers:

Static. For every graded function the reference body (the statements a
student writes: after the docstring and the input checks) is normalised, each
statement on its own: names bound inside the function (parameters, assigned
variables) become ``_``, constants become their type; attribute and global
names stay, so ``self.attn.backward(_)`` still says what it calls. Every unit
of the handout (each function or method at any depth of every ``.py`` file:
library, tutorials, tests; each cell of a tutorial outside its functions) is
normalised the same way, and scored by the share of the reference's syntax
nodes whose statements it repeats (a statement counts as often as it occurs).
A unit at or above ``THRESHOLD`` holding at least ``MIN_NODES`` nodes of the
reference is a finding, ``file:line``.

Dynamic. Per part, the probes of ``assignments.py`` (a shared ``setup`` that
draws inputs with NumPy, then small snippets that set ``out``: build the
Module and call forward and backward, call another function that reaches the
same answer) run in a fresh interpreter against the release, and once against
the library for the answer. A probe that returns the answer (every array of
``out`` within ``RTOL``) is a finding; one that raises or returns something
else is not. A probe that fails on the library itself is stale: an error, so
a renamed option cannot pass the audit by accident. The part's ``calls`` name
a graded function and the arguments to give it: every function of the
release's package and tests whose first parameter has the same name and whose
signature takes these arguments is called with them, and returning the graded
function's answer is a finding (the graded stub included: it must raise).
"""
import ast
import copy
import json
import os
import pathlib
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field

import numpy as np

from .assignments import get_assignment
from .strip import _kept, find_functions

ROOT = pathlib.Path(__file__).resolve().parents[2]
THRESHOLD = 0.6          # share of the reference's nodes a unit repeats
MIN_NODES = 12           # fewer repeated nodes than this is a coincidence of idiom
RTOL, ATOL = 1e-6, 1e-9
PROBE_TIMEOUT = 300      # seconds for all probes of one assignment in one interpreter


@dataclass
class Finding:
    layer: str           # "static" or "dynamic"
    part: int
    graded: str          # the graded function (or the probe's label)
    where: str           # file:line name
    detail: str

    def line(self):
        return f"[{self.layer}] part {self.part} {self.graded}: {self.where}: {self.detail}"


@dataclass
class AuditReport:
    assignment: str
    folder: str
    findings: list = field(default_factory=list)
    errors: list = field(default_factory=list)        # stale probes, probes that did not run
    notes: list = field(default_factory=list)         # optional probes the library lacks
    checked: dict = field(default_factory=dict)       # counts, for the summary line

    @property
    def ok(self):
        return not self.findings and not self.errors

    def table(self):
        lines = [f"audit {self.assignment} of {self.folder}: "
                 + ("PASSED" if self.ok else "FAILED")
                 + "".join(f", {v} {k}" for k, v in self.checked.items())]
        lines += ["  " + f.line() for f in self.findings]
        lines += ["  [error] " + e for e in self.errors]
        lines += ["  [note] " + n for n in self.notes]
        return "\n".join(lines)


# ----------------------------------------------------------------------------- static layer

ARRAY_MODULES = {"np", "xp", "cp", "numpy", "cupy"}     # one code path reads as another


class _Normalise(ast.NodeTransformer):
    def __init__(self, local):
        self.local = local

    def visit_Name(self, node):
        name = ("xp" if node.id in ARRAY_MODULES else
                "_" if node.id in self.local else node.id)
        return ast.copy_location(ast.Name(name, ast.Load()), node)

    def visit_arg(self, node):
        return ast.copy_location(ast.arg("_"), node)

    def visit_Constant(self, node):
        return ast.copy_location(ast.Constant(type(node.value).__name__), node)


def _bound_names(node):
    """Names a function (or a list of statements) binds: parameters and assignments."""
    names = set()
    for top in node if isinstance(node, list) else [node]:
        for sub in ast.walk(top):
            if isinstance(sub, ast.Name) and isinstance(sub.ctx, (ast.Store, ast.Del)):
                names.add(sub.id)
            elif isinstance(sub, ast.arg):
                names.add(sub.arg)
    return names


_COMPOUND = (ast.If, ast.For, ast.AsyncFor, ast.While, ast.With, ast.AsyncWith, ast.Try)


def _flat(body):
    """The statements of a body, compound ones as their header, then their own bodies;
    nested functions and classes are units of their own and are left out."""
    for stmt in body:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Import,
                             ast.ImportFrom)):
            continue
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
            continue                                    # docstrings, bare strings
        if isinstance(stmt, _COMPOUND):
            head = copy.copy(stmt)
            for attr in ("body", "orelse", "finalbody", "handlers"):
                if hasattr(head, attr):
                    setattr(head, attr, [])
            yield head
            for attr in ("body", "orelse", "finalbody"):
                yield from _flat(getattr(stmt, attr, []))
            for handler in getattr(stmt, "handlers", []):
                yield from _flat(handler.body)
        else:
            yield stmt


def _signature(stmts, local):
    """[(normalised dump, node count)] of statements."""
    out = []
    norm = _Normalise(local)
    for stmt in stmts:
        n = norm.visit(copy.deepcopy(stmt))
        out.append((ast.dump(n, annotate_fields=False), sum(1 for _ in ast.walk(stmt))))
    return out


def reference_signature(source, name, filename="<source>"):
    """The normalised statements a student writes for graded function ``name``."""
    node = find_functions(source, [name], filename)[name]
    _, removed = _kept(node)
    module = _bound_names(ast.parse(source, filename).body)
    return _signature(list(_flat(removed)), _bound_names(node) | module)


def _cells(source):
    """Line numbers (1-based) where the cells of a percent-format script begin."""
    return [i for i, line in enumerate(source.splitlines(), 1) if line.startswith("# %%")]


def units(source, filename):
    """[(label, line, signature)] of one file: every function at any depth, and the
    module-level statements (grouped by cell for a percent-format script)."""
    try:
        tree = ast.parse(source, filename)
    except SyntaxError:
        return []
    found = []
    module = _bound_names(tree.body)           # a cell's names were bound in earlier cells

    def walk(body, prefix):
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = prefix + node.name
                found.append((name, node.lineno,
                              _signature(list(_flat(node.body)), _bound_names(node) | module)))
                walk(node.body, name + ".")
            elif isinstance(node, ast.ClassDef):
                walk(node.body, prefix + node.name + ".")
            elif isinstance(node, _COMPOUND):
                walk([n for attr in ("body", "orelse", "finalbody")
                      for n in getattr(node, attr, [])], prefix)
    walk(tree.body, "")
    starts = _cells(source) or [1]
    groups = {}
    for stmt in tree.body:
        start = max([s for s in starts if s <= stmt.lineno], default=1)
        groups.setdefault(start, []).append(stmt)
    for start, stmts in groups.items():
        found.append(("cell" if len(starts) > 1 else "module", start,
                      _signature(list(_flat(stmts)), module)))
    return found


def similarity(reference, unit):
    """(share of the reference's nodes that ``unit`` repeats, those nodes)."""
    pool = {}
    for dump, _ in unit:
        pool[dump] = pool.get(dump, 0) + 1
    total = sum(w for _, w in reference) or 1
    matched = 0
    for dump, weight in reference:
        if pool.get(dump, 0):
            pool[dump] -= 1
            matched += weight
    return matched / total, matched


def handout_files(folder):
    """Every .py file of a handout, relative paths, sorted."""
    folder = pathlib.Path(folder)
    return sorted(p.relative_to(folder) for p in folder.rglob("*.py")
                  if "__pycache__" not in p.parts)


def static_findings(assignment, folder, root=ROOT, threshold=THRESHOLD, min_nodes=MIN_NODES):
    folder, root = pathlib.Path(folder), pathlib.Path(root)
    refs = []
    for part in assignment.parts:
        for spec in part.functions:
            path, name = spec.split(":")
            sig = reference_signature((root / path).read_text(), name, path)
            refs.append((part.number, spec, sig))
    findings, count = [], 0
    for rel in handout_files(folder):
        for label, line, sig in units((folder / rel).read_text(), str(rel)):
            count += 1
            for number, spec, ref in refs:
                share, nodes = similarity(ref, sig)
                if share >= threshold and nodes >= min(min_nodes, sum(w for _, w in ref)):
                    findings.append(Finding(
                        "static", number, spec.split(":")[1], f"{rel}:{line} {label}",
                        f"repeats {share:.0%} of the reference body ({nodes} syntax nodes)"))
    return findings, count


# ---------------------------------------------------------------------------- dynamic layer

RUNNER = r'''
import inspect, json, os, pathlib, pkgutil, importlib, importlib.util, signal, sys, traceback
import numpy as np
spec = json.load(open(sys.argv[1]))
root = pathlib.Path(spec["root"])
sys.path.insert(0, str(root))
results, arrays = {}, {}

def as_arrays(value):
    if isinstance(value, (tuple, list)):
        return [a for v in value for a in as_arrays(v)]
    if isinstance(value, (bool, str, bytes, dict)) or value is None:
        return []
    try:
        import whitebox.backend as backend
        value = backend.to_numpy(value)
    except Exception:
        pass
    if isinstance(value, (np.ndarray, float, int, np.floating, np.integer)):
        value = np.asarray(value)
        if value.dtype.kind in "fiuc":
            return [value.astype(float if value.dtype.kind != "c" else complex)]
    return []

def keep(key, value):
    got = as_arrays(value)
    for i, a in enumerate(got):
        arrays[f"{key}|{i}"] = a
    return len(got)

def alarm(signum, frame):
    raise TimeoutError("the probe ran past its time")
signal.signal(signal.SIGALRM, alarm)

def run(key, fn):
    signal.alarm(20)
    try:
        results[key] = {"status": "returned", "n": keep(key, fn())}
    except BaseException as err:
        results[key] = {"status": "raised",
                        "error": f"{type(err).__name__}: {str(err)[:300]}"}
    finally:
        signal.alarm(0)

def tutorial_functions(path):
    """A tutorial's imports and function definitions, run without its cells."""
    import ast, types
    tree = ast.parse(path.read_text())
    keep = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom, ast.FunctionDef))]
    m = types.ModuleType("handout_tutorial_" + path.stem)
    m.__file__ = str(path)
    for node in keep:
        try:
            exec(compile(ast.Module([node], []), str(path), "exec"), m.__dict__)
        except BaseException:
            pass
    for name, f in list(vars(m).items()):
        if inspect.isfunction(f):
            f.__module__ = m.__name__
    return m

def load_test_file(path):
    """A test file of the handout, imported as a module."""
    s = importlib.util.spec_from_file_location("handout_tests_" + path.stem, path)
    m = importlib.util.module_from_spec(s)
    s.loader.exec_module(m)
    return m

def tutorial(name):
    """The imports and functions of tutorials/<name> in this folder (its cells not run)."""
    return tutorial_functions(root / "tutorials" / name)

def fresh(setup):
    ns = {"np": np, "tutorial": tutorial}
    exec(setup, ns)
    return ns

MODULES = []

def modules():
    """The package's modules, and the tests' and tutorials' functions (loaded once)."""
    if MODULES:
        return MODULES
    mods, anyname = [], set()
    import whitebox
    for info in pkgutil.walk_packages(whitebox.__path__, "whitebox."):
        try:
            mods.append(importlib.import_module(info.name))
        except BaseException:
            pass
    for folder, pattern, load in (("tests", "*.py", load_test_file),
                                  ("tutorials", "[0-9][0-9]_*.py", tutorial_functions)):
        where = root / folder
        if not where.is_dir():
            continue
        sys.path.insert(0, str(where))
        for path in sorted(where.glob(pattern)):
            try:
                m = load(path)
                mods.append(m)
                anyname.add(m.__name__)
            except BaseException:
                pass
    MODULES.extend([mods, anyname])
    return MODULES

def candidates(first):
    """Functions of the package whose first parameter is ``first``, and every function
    of the tests and the tutorials."""
    mods, anyname = modules()
    seen = set()
    for m in mods:
        for name, f in list(vars(m).items()):
            if not inspect.isfunction(f) or f.__module__ != m.__name__ or id(f) in seen:
                continue
            seen.add(id(f))
            try:
                params = list(inspect.signature(f).parameters.values())
            except (TypeError, ValueError):
                continue
            if not params or (params[0].name != first and m.__name__ not in anyname) or \
                    any(p.kind == p.VAR_POSITIONAL for p in params):
                continue
            where = f"{getattr(m, '__file__', m.__name__)}:{f.__code__.co_firstlineno} {name}"
            yield where, f

for part in spec["parts"]:
    tag, setup = f"{part['number']}/", part["setup"]
    for probe in part["probes"]:
        def go(probe=probe):
            ns = fresh(setup)
            exec(probe["code"], ns)
            return ns["out"]
        run(tag + "probe:" + probe["label"], go)
    for call in part["calls"]:
        if spec["mode"] == "reference":
            def go(call=call):
                ns = fresh(setup)
                exec(f"import {call['module']} as _m", ns)
                return eval(f"_m.{call['name']}({call['args']})", ns)
            run(tag + "call:" + call["name"], go)
            continue
        for where, f in candidates(call["first"]):
            ns = fresh(setup)
            args = eval(f"({call['args']},)", ns)
            try:
                inspect.signature(f).bind(*args)
            except TypeError:
                continue
            run(tag + "scan:" + call["name"] + "|" + where, lambda f=f, args=args: f(*args))

np.savez(sys.argv[2], **arrays)
json.dump(results, open(sys.argv[3], "w"))
'''


def _run_probes(folder, parts, mode, timeout=PROBE_TIMEOUT):
    """Run the probes and calls of ``parts`` in one fresh interpreter on ``folder``
    (mode "reference": the answers; "handout": what the release gives)."""
    spec = {"root": str(pathlib.Path(folder).resolve()), "mode": mode, "parts": []}
    for part in parts:
        calls = []
        for graded, args in part.calls:
            module, name = _module_and_name(part, graded)
            calls.append({"module": module, "name": name, "args": args,
                          "first": _first_parameter(part, graded)})
        spec["parts"].append({
            "number": part.number, "setup": part.setup, "calls": calls,
            "probes": [{"label": p.label, "code": p.code if mode == "handout" else
                        (p.answer or p.code)} for p in part.probes]})
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        (tmp / "spec.json").write_text(json.dumps(spec))
        (tmp / "runner.py").write_text(RUNNER)
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
        env.update(PYTHONPATH=str(pathlib.Path(folder).resolve()), MPLBACKEND="Agg",
                   WHITEBOX_FUSED="0", OMP_NUM_THREADS="1")
        proc = subprocess.run([sys.executable, "-s", str(tmp / "runner.py"), str(tmp / "spec.json"),
                               str(tmp / "arrays.npz"), str(tmp / "results.json")],
                              cwd=tmp, env=env, capture_output=True, text=True, timeout=timeout)
        if proc.returncode or not (tmp / "results.json").exists():
            raise RuntimeError(f"the audit's probes did not run on {folder} ({mode}):\n"
                               f"{proc.stderr[-2000:]}")
        results = json.loads((tmp / "results.json").read_text())
        with np.load(tmp / "arrays.npz") as data:
            arrays = {k: data[k] for k in data.files}
    return results, arrays


def _module_and_name(part, graded):
    for spec in part.functions:
        path, name = spec.split(":")
        if name == graded:
            return path[:-3].replace("/", "."), name
    raise KeyError(f"part {part.number} calls {graded!r}, which it does not grade "
                   f"(it grades {', '.join(part.function_names())})")


def _first_parameter(part, graded):
    for spec in part.functions:
        path, name = spec.split(":")
        if name == graded:
            node = find_functions((ROOT / path).read_text(), [name], path)[name]
            return node.args.args[0].arg
    raise KeyError(graded)


def _values(arrays, key, n):
    return [arrays[f"{key}|{i}"] for i in range(n)]


def _same(got, want):
    return (len(got) >= len(want) > 0 and
            all(g.shape == w.shape and np.allclose(g, w, rtol=RTOL, atol=ATOL)
                for g, w in zip(got, want)))


_ANSWERS = {}            # (root, assignment) -> the library's answers, computed once


def dynamic_findings(assignment, folder, root=ROOT, notes=None):
    """(findings, errors, number of probes and calls run); optional probes that are
    stale go to ``notes``."""
    findings, errors, count = [], [], 0
    notes = [] if notes is None else notes
    parts = [p for p in assignment.parts if p.probes or p.calls]
    if not parts:
        return findings, errors, count
    key = (str(pathlib.Path(root).resolve()), assignment.key)
    if key not in _ANSWERS:
        _ANSWERS[key] = _run_probes(root, parts, "reference")
    ref, ref_arrays = _ANSWERS[key]
    got, got_arrays = _run_probes(folder, parts, "handout")
    for part in parts:
        tag = f"{part.number}/"
        for probe in part.probes:
            key = tag + "probe:" + probe.label
            count += 1
            r = ref[key]
            if r["status"] != "returned" or r["n"] == 0:
                (notes if probe.optional else errors).append(
                    f"part {part.number} probe {probe.label!r} is stale: on the "
                    f"library it gave {r.get('error', 'no arrays')}")
                continue
            g = got[key]
            want = _values(ref_arrays, key, r["n"])
            if g["status"] == "returned" and _same(_values(got_arrays, key, g["n"]), want):
                findings.append(Finding("dynamic", part.number, probe.label, "probe",
                                        "returned the reference's answer"))
        for graded, _ in part.calls:
            key = tag + "call:" + graded
            r = ref[key]
            if r["status"] != "returned" or r["n"] == 0:
                errors.append(f"part {part.number} call of {graded} is stale: on the library "
                              f"it gave {r.get('error', 'no arrays')}")
                continue
            want = _values(ref_arrays, key, r["n"])[:1]
            prefix = tag + "scan:" + graded + "|"
            scanned = [k for k in got if k.startswith(prefix)]
            count += len(scanned)
            if not scanned:
                errors.append(f"part {part.number}: no function of the release takes "
                              f"{graded}'s arguments, not even its stub; is the call stale?")
            for k in scanned:
                g = got[k]
                if g["status"] == "returned" and _same(_values(got_arrays, k, g["n"])[:1], want):
                    where = k[len(prefix):]
                    try:
                        file, rest = where.rsplit(":", 1)
                        where = f"{pathlib.Path(file).resolve().relative_to(pathlib.Path(folder).resolve())}:{rest}"
                    except ValueError:
                        pass
                    findings.append(Finding("dynamic", part.number, graded, where,
                                            f"called with {graded}'s arguments, returned "
                                            "its answer"))
    return findings, errors, count


def audit(key, folder=None, root=ROOT, dynamic=True):
    """Audit the release of ``key`` in ``folder`` (default: a fresh release in a temporary
    folder); return an AuditReport. Every finding fails the audit; the report's notes
    list only the optional probes the library does not offer."""
    assignment = get_assignment(key)
    if folder is None:
        from .release import release
        with tempfile.TemporaryDirectory() as tmp:
            out = release(key, pathlib.Path(tmp) / "handout", root=root, audit=False)
            report = audit(key, out, root, dynamic)
            report.folder = f"a fresh {assignment.key} release"
            return report
    report = AuditReport(assignment.key, str(folder))
    found, units_checked = static_findings(assignment, folder, root)
    report.checked["units read"] = units_checked
    if dynamic:
        dyn, errors, probes = dynamic_findings(assignment, folder, root, report.notes)
        found += dyn
        report.errors += errors
        report.checked["probes and calls run"] = probes
    report.findings += found
    return report
