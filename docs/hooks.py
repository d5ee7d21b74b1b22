"""mkdocs hooks: write the generated pages of the site before mkdocs reads docs/.

- index.md: the project README (its tables included);
- tutorials/: every tutorials/NN_*.py, rendered by mkdocs-jupyter and executed
  during the build in fast mode (WHITEBOX_FAST=1 unless the environment says
  otherwise), figures inline; tutorials/index.md is tutorials/README.md;
- course/assignments.md: the assignments and their parts (whitebox.course);
- course/instructors.md: tutorials/INSTRUCTORS.md;
- api/<package>.md: one page per entry of API, the docstrings of its public modules
  (mkdocstrings reads the sources; nothing is imported).

WHITEBOX_TUTORIALS=<folder> renders the tutorials of another folder.
"""
import os
import pathlib
import re
import shutil
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
API = [  # (page title, the package or module the page documents)
    ("rate: coding and compression rates", "whitebox.rate"),
    ("functional: forward/backward pairs", "whitebox.functional"),
    ("nn: modules", "whitebox.nn"),
    ("models", "whitebox.models"),
    ("training", "whitebox.training"),
    ("tasks", "whitebox.tasks"),
    ("losses", "whitebox.losses"),
    ("optim", "whitebox.optim"),
    ("gradcheck", "whitebox.gradcheck"),
    ("data", "whitebox.data"),
    ("checkpoint and interop", ("whitebox.checkpoint", "whitebox.interop")),
    ("backend", "whitebox.backend"),
    ("threads and memory", ("whitebox.threads", "whitebox.memory")),
    ("course tooling", "whitebox.course"),
]
TITLE = re.compile(r"^#\s+#\s+(.*\S)\s*$")


def _write(path, text):
    """Write only what changed, so `mkdocs serve` (which watches docs/) does not loop."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def _tutorial_title(path):
    for line in path.read_text().splitlines():
        m = TITLE.match(line)
        if m:
            return m.group(1)
    return path.stem


def _modules(name):
    """The public modules on a package's page (the package itself, then its submodules)."""
    path = ROOT / pathlib.Path(*name.split("."))
    if path.with_suffix(".py").exists():
        return [name]
    if not (path / "__init__.py").exists():
        return []
    subs = sorted(p.stem for p in path.glob("*.py")
                  if not p.stem.startswith("_") and not p.stem.startswith("torch_"))
    return [name] + [f"{name}.{s}" for s in subs]


def _api_pages():
    nav = []
    for title, names in API:
        names = (names,) if isinstance(names, str) else names
        modules = [m for n in names for m in _modules(n)]
        if not modules:
            continue                  # a package this checkout does not have yet
        slug = names[0].split(".")[-1]
        body = [f"# {title}\n"]
        for m in modules:
            options = "    options:\n      members: false\n" if m in names and len(modules) > 1 \
                and (ROOT / pathlib.Path(*m.split("."))).is_dir() else ""
            body.append(f"::: {m}\n{options}")
        _write(DOCS / "api" / f"{slug}.md", "\n".join(body))
        nav.append({title: f"api/{slug}.md"})
    return nav


def _assignments_page():
    sys.path.insert(0, str(ROOT))
    from whitebox.course import ASSIGNMENTS
    from whitebox.course.release import pointer
    rows = ["# Assignments\n",
            "Each assignment is a week of work built from the library and the tutorials: "
            "the student writes the listed functions, runs the visible checks, and "
            "`python -m whitebox.course grade` scores each part. See the "
            "[instructor guide](instructors.md).\n"]
    for a in ASSIGNMENTS.values():
        rows.append(f"## {a.key}: {a.title}\n")
        rows.append(f"{a.summary}\n")
        if a.coming:
            rows.append(f"!!! note \"Coming\"\n    {a.coming}.\n")
        rows.append(f"{a.points} points, about {a.hours:g} hours of student time.\n")
        rows.append("| part | what the student writes | functions | points | derived in |")
        rows.append("|---|---|---|---|---|")
        for p in a.parts:
            funcs = "<br>".join(f"`{f.split(':')[1]}`" for f in p.functions)
            rows.append(f"| {p.number} | {p.title} | {funcs} | {p.points} | "
                        f"{pointer(p).replace('tutorials/', '')} |")
        rows.append("")
    _write(DOCS / "course" / "assignments.md", "\n".join(rows) + "\n")


def _tutorials(source):
    target = DOCS / "tutorials"
    nav, keep = [], set()
    readme = source / "README.md"
    if readme.exists():
        _write(target / "index.md", readme.read_text())
        nav.append({"Overview": "tutorials/index.md"})
        keep.add("index.md")
    for path in sorted(source.glob("[0-9][0-9]_*.py")):
        _write(target / path.name, path.read_text())
        nav.append({_tutorial_title(path): f"tutorials/{path.name}"})
        keep.add(path.name)
    for stale in target.iterdir():
        if stale.name not in keep:
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
    return nav


def on_config(config, **kwargs):
    source = pathlib.Path(os.environ.get("WHITEBOX_TUTORIALS", ROOT / "tutorials")).resolve()
    # the kernels that execute the tutorials inherit this environment
    os.environ.setdefault("WHITEBOX_FAST", "1")
    figures = ROOT / "build" / "site-figures"
    figures.mkdir(parents=True, exist_ok=True)
    os.environ["WHITEBOX_OUT"] = str(figures)
    os.environ.pop("MPLBACKEND", None)           # let the kernel show figures inline
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), str(source)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep)
                                    if p])

    readme = (ROOT / "README.md").read_text()
    _write(DOCS / "index.md", readme)
    tutorials = _tutorials(source)
    _assignments_page()
    course = [{"Assignments": "course/assignments.md"}]
    guide = ROOT / "tutorials" / "INSTRUCTORS.md"
    if guide.exists():
        _write(DOCS / "course" / "instructors.md", guide.read_text())
        course.append({"Instructor guide": "course/instructors.md"})
    config["nav"] = [{"Home": "index.md"}, {"Tutorials": tutorials}, {"Course": course},
                     {"API": _api_pages()}]
    return config
