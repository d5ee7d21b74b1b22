"""mkdocs hooks: write the generated pages of the site before mkdocs reads docs/.

- index.md: the project README (its tables included);
- tutorials/: every tutorials/NN_*.py, executed here in fast mode (WHITEBOX_FAST=1
  unless the environment says otherwise) into a notebook with its figures inline,
  then rendered by mkdocs-jupyter; tutorials/index.md is tutorials/README.md;
- course/assignments.md: the assignments and their parts (whitebox.course);
- course/instructors.md: tutorials/INSTRUCTORS.md;
- api/<package>.md: one page per entry of API, the docstrings of its public modules
  (mkdocstrings reads the sources; nothing is imported).

WHITEBOX_TUTORIALS=<folder> renders the tutorials of another folder.

Two builds. The default, WHITEBOX_SITE=student, is the public site: each
tutorial runs whole (so its figures and numbers are the real ones) but its
code cells are shown with every solution block replaced by the stub a student
sees, and the API pages show no source (the graded functions' bodies are the
answers). WHITEBOX_SITE=instructor shows the solutions and the source, and
says so at the top of every page.

Math: markdown pages go through pymdownx.arithmatex; every page loads MathJax
2.7 through docs/javascripts/mathjax.js, from a local copy when one is found
(WHITEBOX_MATHJAX=<folder holding MathJax.js>, else the system's
/usr/share/javascript/mathjax, copied into the site under assets/mathjax) or
else from a CDN. Lines that only echo a saved figure's path (``PosixPath(...)``)
are dropped from the notebooks' outputs.
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
    ("compare, segmentation and self-supervision",
     ("whitebox.compare", "whitebox.segmentation", "whitebox.ssl", "whitebox.knn")),
    ("course tooling", "whitebox.course"),
]
TITLE = re.compile(r"^#\s+#\s+(.*\S)\s*$")
MATHJAX_CDN = "https://cdnjs.cloudflare.com/ajax/libs/mathjax/2.7.7/MathJax.js"
MATHJAX_LOCAL = "assets/mathjax"
PATH_ECHO = re.compile(r"^(Posix|Windows|Pure)?Path\(")
BANNER = ('<div class="admonition warning"><p class="admonition-title">Instructor build</p>'
          "<p>This site shows the exercise solutions and the source of the graded "
          "functions. Do not publish it to students; the public site is built with "
          "<code>WHITEBOX_SITE=student</code> (the default).</p></div>\n")


def site_mode():
    mode = os.environ.get("WHITEBOX_SITE", "student").strip().lower()
    if mode not in ("student", "instructor"):
        raise ValueError(f"WHITEBOX_SITE must be 'student' or 'instructor', got {mode!r}")
    return mode


def local_mathjax():
    """A folder holding MathJax.js (2.x) to ship with the site, or None."""
    for folder in (os.environ.get("WHITEBOX_MATHJAX"), "/usr/share/javascript/mathjax"):
        if folder and (pathlib.Path(folder) / "MathJax.js").exists():
            return pathlib.Path(folder)
    return None


def plain_title(title):
    """A heading as plain text for the navigation: ``$R^c$`` -> ``Rc``, ``\\epsilon`` -> ``epsilon``."""
    def math(m):
        return re.sub(r"[\\{}^_$]", "", m.group(0))
    return re.sub(r"\$[^$]+\$", math, title).replace("`", "")


def _write(path, text):
    """Write only what changed, so `mkdocs serve` (which watches docs/) does not loop."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def _tutorial_title(path):
    for line in path.read_text().splitlines():
        m = TITLE.match(line)
        if m:
            return plain_title(m.group(1))
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
        source = "true" if site_mode() == "instructor" else "false"
        for m in modules:
            options = f"    options:\n      show_source: {source}\n"
            if m in names and len(modules) > 1 and (ROOT / pathlib.Path(*m.split("."))).is_dir():
                options += "      members: false\n"
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


def _strip_cells(nb, name):
    """Every code cell with its solution blocks replaced by the exercise stub."""
    sys.path.insert(0, str(ROOT / "tutorials"))
    from make_exercises import strip_solutions
    for cell in nb.cells:
        if cell.cell_type == "code" and "### BEGIN SOLUTION" in cell.source:
            cell.source = strip_solutions(cell.source, name)
    return nb


def _drop_path_echoes(nb):
    """Remove ``Out[n]: PosixPath(...)``: the value of a cell that ends in save(...)."""
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.get("outputs", [])
                            if not (o.get("output_type") == "execute_result" and
                                    PATH_ECHO.match(o.get("data", {}).get("text/plain", "")))]
    return nb


def _notebook(path, target, mode):
    """Execute tutorial ``path`` whole and write the notebook shown for ``mode``.

    Skipped when ``target`` is newer than the tutorial and this file (mkdocs serve)."""
    if target.exists() and target.stat().st_mtime > max(path.stat().st_mtime,
                                                          pathlib.Path(__file__).stat().st_mtime) \
            and target.with_suffix(".mode").exists() \
            and target.with_suffix(".mode").read_text() == mode:
        return
    import jupytext
    import nbclient
    import nbformat
    nb = jupytext.read(path)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbclient.NotebookClient(nb, timeout=1800, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}}).execute()
    _drop_path_echoes(nb)
    if mode == "student":
        _strip_cells(nb, path.name)
    target.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, target)
    target.with_suffix(".mode").write_text(mode)


def _tutorials(source):
    target = DOCS / "tutorials"
    nav, keep = [], set()
    readme = source / "README.md"
    if readme.exists():
        _write(target / "index.md", readme.read_text())
        nav.append({"Overview": "tutorials/index.md"})
        keep.add("index.md")
    mode = site_mode()
    for path in sorted(source.glob("[0-9][0-9]_*.py")):
        name = path.stem + ".ipynb"
        _notebook(path, target / name, mode)
        nav.append({_tutorial_title(path): f"tutorials/{name}"})
        keep |= {name, path.stem + ".mode"}
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
    _math(config)
    return config


def _math(config):
    """MathJax for every page: docs/javascripts/mathjax.js, and the notebooks' own URL."""
    local = local_mathjax()
    url = MATHJAX_LOCAL + "/MathJax.js" if local else MATHJAX_CDN
    loader = (DOCS / "javascripts" / "mathjax.template.js").read_text()
    _write(DOCS / "javascripts" / "mathjax.js",
           loader.replace("@MATHJAX@", url).replace("@LOCAL@", "true" if local else "false"))
    if local:                       # tutorial pages sit two folders below the site root
        jupyter = config["plugins"].get("mkdocs-jupyter")
        if jupyter is not None:
            jupyter.config["custom_mathjax_url"] = \
                f"../../{MATHJAX_LOCAL}/MathJax.js?config=TeX-AMS_CHTML-full,Safe"


def on_post_build(config, **kwargs):
    local = local_mathjax()
    if local:
        target = pathlib.Path(config["site_dir"]) / MATHJAX_LOCAL
        if not (target / "MathJax.js").exists():
            shutil.copytree(local, target, dirs_exist_ok=True, symlinks=False,
                            ignore=shutil.ignore_patterns("unpacked", "test", "docs"))


def on_page_content(html, page, config, files, **kwargs):
    if site_mode() == "instructor":
        return BANNER + html
    return html


def on_page_context(context, page, config, nav, **kwargs):
    """A page's table of contents in plain text, like the navigation: a heading's
    ``$U$`` is typeset in the page but would show raw in the side bar."""
    def plain(items):
        for item in items:
            item.title = plain_title(item.title)
            plain(item.children)
    plain(page.toc or ())
    return context
