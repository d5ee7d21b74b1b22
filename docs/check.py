"""Build the course site (or read a built one) and check what a reader gets.

    python docs/check.py                          # build the student site, check it
    python docs/check.py --site build/site        # check a site built before
    python docs/check.py --mode instructor        # the instructor build
    python docs/check.py --screens shots/         # also screenshots of two pages

Fails (exit 1, one line per problem) when:
- a page shows raw math after the page's scripts ran (``$$``, ``$...$``, ``\\(``):
  read in a real headless browser (Chromium), so MathJax has typeset what it can;
  without a browser the check says so and is skipped (``--need-browser`` fails);
- the student build shows a solution: ``### BEGIN SOLUTION`` or a line of a
  tutorial's solution block on its page, or a line of a graded function's body
  on an API page;
- a tutorial page has fewer figures than the tutorial saves, an image points at
  a missing file, or an output line only echoes a path (``PosixPath(...)``);
- the build's own code (``hooks.py``, ``check.py``) is published, or a
  navigation title holds raw TeX;
- the instructor build lacks its banner on a page.
"""
import argparse
import functools
import html
import http.server
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import threading

ROOT = pathlib.Path(__file__).resolve().parents[1]
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
HIDDEN_TEXT = re.compile(r"<(script|style|pre|code|textarea)\b.*?</\1>", re.S | re.I)
TAG = re.compile(r"<[^>]+>")
RAW_MATH = re.compile(r"\$\$|\\\(|\\\[|(?<![\w$])\$[^\s$][^$\n]{0,200}?[\\^_{}][^$\n]{0,200}?\$")
BANNER = "Instructor build"


def build(site, mode="student", tutorials=None, fast=True):
    """Run ``mkdocs build`` into ``site``; return the folder."""
    env = dict(os.environ, WHITEBOX_SITE=mode)
    if fast:
        env.setdefault("WHITEBOX_FAST", "1")
    if tutorials:
        env["WHITEBOX_TUTORIALS"] = str(pathlib.Path(tutorials).resolve())
    env.pop("MPLBACKEND", None)
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "-d", str(site)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600)
    if proc.returncode:
        raise RuntimeError(f"mkdocs build failed:\n{proc.stderr[-4000:]}")
    return pathlib.Path(site)


def text_of(page_html):
    """What a reader reads: the page without scripts, styles and code, tags removed."""
    return html.unescape(TAG.sub(" ", HIDDEN_TEXT.sub(" ", page_html)))


def pages(site):
    return sorted(pathlib.Path(site).rglob("index.html"))


def _solution_lines(source):
    """The substantial lines inside a tutorial's solution blocks that occur nowhere else."""
    sys.path.insert(0, str(ROOT / "tutorials"))
    from make_exercises import solution_blocks, strip_solutions
    lines = source.splitlines()
    outside = {ln.split("#")[0].strip() for ln in strip_solutions(source).splitlines()}
    out = []
    for begin, end in solution_blocks(source):
        for line in lines[begin:end - 1]:
            code = line.split("#")[0].strip()
            if len(code) >= 24 and code not in outside:
                out.append(code)
    return out


def _graded_lines():
    """{function: its substantial body lines} for every graded function of every assignment."""
    sys.path.insert(0, str(ROOT))
    from whitebox.course.assignments import ASSIGNMENTS
    from whitebox.course.strip import solution_lines
    out = {}
    for a in ASSIGNMENTS.values():
        for part in a.parts:
            for spec in part.functions:
                path, name = spec.split(":")
                file = ROOT / path
                if not file.exists():
                    continue
                body = solution_lines(file.read_text(), [name], path)[name]
                out[name] = [ln.split("#")[0].strip() for ln in body
                             if len(ln.split("#")[0].strip()) >= 30]
    return out


def _code_text(page_html):
    """The text of a page's code blocks, one line per line, as shown."""
    blocks = re.findall(r"<(?:pre|code)\b.*?</(?:pre|code)>", page_html, re.S | re.I)
    return "\n".join(html.unescape(TAG.sub("", b)) for b in blocks)


def _code_lines(code):
    """The lines of shown code, comments and indentation removed, as a set."""
    return {ln.split("#")[0].strip() for ln in code.splitlines()}


def static_problems(site, mode="student", tutorials=None):
    site = pathlib.Path(site)
    tutorials = pathlib.Path(tutorials) if tutorials else ROOT / "tutorials"
    problems = []
    for name in ("hooks.py", "check.py"):
        if (site / name).exists():
            problems.append(f"{name} is published at the site root")
    graded = _graded_lines() if mode == "student" else {}
    for page in pages(site):
        rel = page.relative_to(site)
        raw = page.read_text(errors="replace")
        code = _code_text(raw)
        shown = text_of(raw) + "\n" + code
        notebook = rel.parts[0] == "tutorials" and len(rel.parts) > 2
        if notebook and re.search(r"(Posix|Windows)Path\(", shown):
            problems.append(f"{rel}: an output line echoes a path (PosixPath(...))")
        for m in re.finditer(r'<img[^>]+src="([^"]+)"', raw):
            src = m.group(1)
            if src.startswith(("data:", "http:", "https:")):
                if src.startswith("data:") and len(src) < 100:
                    problems.append(f"{rel}: an empty inline image")
                continue
            if not (page.parent / src.split("#")[0].split("?")[0]).resolve().exists():
                problems.append(f"{rel}: image {src} is missing")
        for title in re.findall(r'class="md-nav__link[^"]*"[^>]*>(.*?)</', raw, re.S) + \
                re.findall(r"<title>(.*?)</title>", raw, re.S):
            if "$" in html.unescape(TAG.sub("", title)):
                problems.append(f"{rel}: a navigation title holds raw TeX: "
                                f"{html.unescape(TAG.sub('', title)).strip()!r}")
                break
        if mode == "instructor":
            if BANNER not in raw:
                problems.append(f"{rel}: the instructor banner is missing")
            continue
        if notebook and re.search(r"#{3} (BEGIN|END) SOLUTION", code):
            problems.append(f"{rel}: shows a solution marker in its code")
        if rel.parts[0] == "api":
            for name, lines in graded.items():
                leaked = [ln for ln in lines if ln in _code_lines(code)]
                if leaked:
                    problems.append(f"{rel}: shows the body of graded {name}: {leaked[0]!r}")
    for path in sorted(tutorials.glob("[0-9][0-9]_*.py")):
        page = site / "tutorials" / path.stem / "index.html"
        if not page.exists():
            problems.append(f"no page for tutorials/{path.name}")
            continue
        raw = page.read_text(errors="replace")
        saves = len(re.findall(r"^\s*save\(", path.read_text(), re.MULTILINE))
        images = raw.count("data:image/png;base64") + len(re.findall(r"<img[^>]+\.png", raw))
        if images < max(1, saves):
            problems.append(f"tutorials/{path.stem}: {images} figures on the page, "
                            f"the tutorial saves {saves}")
        if mode == "student":
            code = _code_text(raw)
            leaked = [ln for ln in _solution_lines(path.read_text()) if ln in _code_lines(code)]
            if leaked:
                problems.append(f"tutorials/{path.stem}: shows solution lines, e.g. "
                                f"{leaked[0]!r}")
    return problems


def find_browser():
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    return None


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def serve(site):
    """Serve ``site`` on a free local port in a thread; return (server, base url)."""
    handler = functools.partial(_Quiet, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


def _browser(browser, *args, timeout=180):
    with tempfile.TemporaryDirectory() as profile:
        cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               "--disable-dev-shm-usage", f"--user-data-dir={profile}",
               "--virtual-time-budget=30000", *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def rendered(browser, url):
    """The page's DOM after its scripts ran (MathJax included)."""
    proc = _browser(browser, "--dump-dom", url)
    if proc.returncode or "<html" not in proc.stdout.lower():
        raise RuntimeError(f"{browser} could not render {url}:\n{proc.stderr[-2000:]}")
    return proc.stdout


def screenshot(browser, url, path, size=(1280, 1700)):
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _browser(browser, f"--screenshot={path}", f"--window-size={size[0]},{size[1]}", url)
    if not path.exists():
        raise RuntimeError(f"no screenshot of {url}")
    return path


def browser_problems(site, browser, only=None, screens=None):
    """Raw math after rendering, per page; screenshots of a tutorial and an API page."""
    site = pathlib.Path(site)
    server, base = serve(site)
    problems, typeset = [], 0
    try:
        for page in pages(site):
            rel = page.relative_to(site)
            if only and not any(str(rel).startswith(o) for o in only):
                continue
            url = base + str(rel.parent).replace(os.sep, "/") + "/"
            dom = rendered(browser, url.replace("/./", "/"))
            typeset += dom.count("MathJax_CHTML")
            raw = RAW_MATH.search(text_of(dom))
            if raw:
                problems.append(f"{rel}: raw math after rendering: {raw.group(0)[:80]!r}")
        if typeset == 0:
            problems.append("MathJax typeset nothing on any page")
        if screens:
            screenshot(browser, base + "tutorials/01_coding_rate/", pathlib.Path(screens)
                       / "tutorial_01_coding_rate.png")
            screenshot(browser, base + "api/rate/", pathlib.Path(screens) / "api_rate.png")
    finally:
        server.shutdown()
    return problems


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--site", help="a built site to check (default: build one)")
    ap.add_argument("--mode", default="student", choices=("student", "instructor"))
    ap.add_argument("--tutorials", help="the tutorials the site was built from")
    ap.add_argument("--screens", help="write two screenshots into this folder")
    ap.add_argument("--need-browser", action="store_true",
                    help="fail when no headless browser is installed")
    args = ap.parse_args(argv)
    tmp = None
    if args.site:
        site = pathlib.Path(args.site)
    else:
        tmp = tempfile.TemporaryDirectory()
        site = build(pathlib.Path(tmp.name) / "site", args.mode, args.tutorials)
    problems = static_problems(site, args.mode, args.tutorials)
    browser = find_browser()
    if browser:
        problems += browser_problems(site, browser, screens=args.screens)
    elif args.need_browser:
        problems.append(f"no headless browser found ({', '.join(BROWSERS)})")
    else:
        print("no headless browser found: the rendered math was not checked")
    for p in problems:
        print(p)
    print(f"{site}: {'FAILED' if problems else 'passed'} ({len(pages(site))} pages, "
          f"{args.mode} build{', checked in ' + browser if browser else ''})")
    if tmp:
        tmp.cleanup()
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
