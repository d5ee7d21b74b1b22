"""The course site: the student build holds no solutions, renders math, shows every figure.

The fast tests read the build's pieces (docs/hooks.py, docs/check.py) without
building; the slow one builds the site from two tutorials and checks it in a
headless browser when one is installed (docs/check.py).
"""
import importlib.util
import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def load(name):
    spec = importlib.util.spec_from_file_location(f"docs_{name}", ROOT / "docs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_navigation_titles_are_plain_text():
    hooks = load("hooks")
    assert hooks.plain_title("02. From the gradient of $R^c$ to MSSA") == \
        "02. From the gradient of Rc to MSSA"
    assert "$" not in hooks.plain_title("a $\\Delta R = R - R^c$ `code`")


def test_a_pages_table_of_contents_is_plain_text():
    from types import SimpleNamespace
    from mkdocs.structure.toc import AnchorLink
    hooks = load("hooks")
    section = AnchorLink("2. Tie the output to $U$", "tie", 2)
    section.children.append(AnchorLink("the step $\\eta$", "step", 3))
    page = SimpleNamespace(toc=[section])
    assert hooks.on_page_context({}, page, None, None) == {}
    assert section.title == "2. Tie the output to U"
    assert section.children[0].title == "the step eta"


def test_student_notebook_hides_solutions_and_path_echoes(monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    hooks = load("hooks")
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("x = 1\n### BEGIN SOLUTION\ny = secret(x)\n### END SOLUTION\n"),
        nbformat.v4.new_code_cell("save(fig, 'a.png')")])
    nb.cells[1].outputs = [nbformat.v4.new_output("execute_result",
                                                  {"text/plain": "PosixPath('/x/a.png')"},
                                                  execution_count=2),
                           nbformat.v4.new_output("stream", text="kept\n")]
    hooks._drop_path_echoes(nb)
    hooks._strip_cells(nb, "t.py")
    assert "secret" not in nb.cells[0].source and "NotImplementedError" in nb.cells[0].source
    assert [o["output_type"] for o in nb.cells[1].outputs] == ["stream"]
    monkeypatch.setenv("WHITEBOX_SITE", "teacher")
    with pytest.raises(ValueError, match="WHITEBOX_SITE"):
        hooks.site_mode()


def test_check_finds_raw_math_and_leaks(tmp_path):
    check = load("check")
    assert check.RAW_MATH.search(check.text_of("<p>the rate $R^c$ here</p>"))
    assert check.RAW_MATH.search(check.text_of("<p>$$x$$</p>"))
    assert not check.RAW_MATH.search(check.text_of("<p>costs $5 and $6</p><pre>$a^b$</pre>"))
    site = tmp_path / "site"
    (site / "tutorials" / "01_x").mkdir(parents=True)
    (site / "hooks.py").write_text("")
    (site / "index.html").write_text('<title>Home</title><img src="missing.png">')
    (site / "tutorials" / "01_x" / "index.html").write_text(
        "<pre>### BEGIN SOLUTION\nOut: PosixPath('a')</pre>")
    tutorials = tmp_path / "tutorials"
    tutorials.mkdir()
    (tutorials / "01_x.py").write_text("# %%\nsave(fig, 'a.png')\n")
    problems = "\n".join(check.static_problems(site, "student", tutorials))
    for what in ("hooks.py is published", "image missing.png is missing",
                 "solution marker", "PosixPath", "0 figures on the page"):
        assert what in problems, problems


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["student", "instructor"])
def test_site_builds_and_passes_its_check(mode, tmp_path):
    for package in ("mkdocs", "mkdocs_jupyter", "material", "mkdocstrings_handlers.python",
                    "jupytext", "nbclient"):
        pytest.importorskip(package)
    tutorials = tmp_path / "tutorials"
    tutorials.mkdir()
    for name in ("01_coding_rate.py", "02_mssa.py", "README.md"):
        shutil.copy2(ROOT / "tutorials" / name, tutorials / name)
    check = load("check")
    site = check.build(tmp_path / "site", mode, tutorials)
    problems = check.static_problems(site, mode, tutorials)
    browser = check.find_browser()
    if browser:
        problems += check.browser_problems(site, browser, only=("tutorials/02", "index.html"))
    assert not problems, "\n".join(problems)
    page = (site / "tutorials" / "02_mssa" / "index.html").read_text()
    assert ("BEGIN SOLUTION" in page) == (mode == "instructor")
    assert not (site / "hooks.py").exists()
