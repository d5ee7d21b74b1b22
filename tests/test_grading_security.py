"""Marks that cannot be forged: every way a submission tried to get marks for work not done.

Each attack starts from the untouched A2 release (part 1, softmax, not
written) and adds the cheat to ``whitebox/functional/softmax.py``; grading
part 1 must give 0 for it. Where an attack reaches for something of the
grader's (its installed whitebox, a spec file), the test also shows that the
same code does find it when run outside the runner, so the test can fail.
"""
import json
import os
import pathlib
import shutil
import signal
import subprocess
import textwrap
import time

import pytest
from conftest import process_alive

from whitebox.course import grade, release
from whitebox.course.grade import grade_many
from whitebox.course.release import ROOT, fill_in

SOFTMAX = pathlib.Path("whitebox/functional/softmax.py")


@pytest.fixture(scope="module")
def untouched(tmp_path_factory):
    return release("A2", tmp_path_factory.mktemp("release") / "A2")


@pytest.fixture(scope="module")
def solved(tmp_path_factory):
    out = release("A2", tmp_path_factory.mktemp("solved") / "A2")
    fill_in(out, "A2", [1, 2, 3])
    return out


def copy(src, dst):
    shutil.copytree(src, dst, symlinks=True)
    return dst


def with_cheat(untouched, tmp_path, code, name="cheat"):
    """The untouched release with ``code`` appended to softmax.py (it redefines the stubs)."""
    out = copy(untouched, tmp_path / name)
    path = out / SOFTMAX
    path.write_text(path.read_text() + "\n\n" + textwrap.dedent(code))
    return out


def part1(folder, **kw):
    report = grade(folder, "A2", parts=[1], timeout=kw.pop("timeout", 60), **kw)
    (part,) = report.parts
    return report, part


FIND_INSTALLED = '''
def _find_grader():
    """The folder holding the grader's whitebox, from the installed package metadata."""
    import importlib.metadata as md
    import json
    import os
    mine = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for dist in md.distributions():
        if "whitebox" not in (dist.metadata["Name"] or "").lower():
            continue
        roots = []
        try:
            url = json.loads(dist.read_text("direct_url.json") or "{}").get("url", "")
            if url.startswith("file://"):
                roots.append(url[7:])
        except Exception:
            pass
        for f in dist.files or []:
            roots.append(str(dist.locate_file(f)).rsplit("/whitebox/", 1)[0])
        for r in roots:
            pkg = os.path.join(r, "whitebox")
            if os.path.exists(os.path.join(pkg, "functional", "softmax.py")) and \\
                    os.path.realpath(pkg) != os.path.realpath(mine):
                return pkg
    return None
'''

FIND_ON_PATH = '''
def _find_grader():
    """A whitebox on sys.path (or next to an entry) that is not this one."""
    import os
    import sys
    mine = os.path.realpath(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    for entry in sys.path:
        for base in (entry, os.path.dirname(entry), os.path.dirname(os.path.dirname(entry)),
                     os.path.dirname(os.path.dirname(os.path.dirname(entry)))):
            pkg = os.path.join(base, "whitebox")
            if os.path.exists(os.path.join(pkg, "functional", "softmax.py")) and \\
                    os.path.realpath(pkg) != mine:
                return pkg
    return None
'''

DELEGATE = '''
def _grader():
    import importlib
    import importlib.util
    import os
    import sys
    pkg = _find_grader()
    if pkg is None:
        raise NotImplementedError("found no grader to copy from")
    spec = importlib.util.spec_from_file_location(
        "graders", os.path.join(pkg, "__init__.py"), submodule_search_locations=[pkg])
    module = importlib.util.module_from_spec(spec)
    sys.modules["graders"] = module
    spec.loader.exec_module(module)
    return importlib.import_module("graders.functional.softmax")


def softmax_forward(x):
    return _grader().softmax_forward(x)


def softmax_backward(dout, cache):
    return _grader().softmax_backward(dout, cache)
'''


@pytest.mark.parametrize("finder", [FIND_INSTALLED, FIND_ON_PATH], ids=["metadata", "sys.path"])
def test_delegating_to_the_graders_whitebox_scores_0(untouched, tmp_path, finder):
    # outside the runner the finder does reach a whitebox that is not the release's
    space = {"__file__": str(untouched / SOFTMAX)}
    exec(textwrap.dedent(finder), space)
    if finder is FIND_INSTALLED and space["_find_grader"]() is None:
        pytest.skip("no whitebox is installed with metadata here; the attack has nothing to find")
    assert space["_find_grader"]() is not None
    out = with_cheat(untouched, tmp_path, finder + DELEGATE)
    report, part = part1(out)
    assert part.score == 0, report.table()
    assert all("found no grader" in m or "refused" in m or "not run" in m
               for _, m in part.failures), part.failures


def test_graded_files_that_link_out_of_the_folder_are_refused(untouched, tmp_path):
    out = copy(untouched, tmp_path / "link")
    (out / SOFTMAX).unlink()
    (out / SOFTMAX).symlink_to(ROOT / SOFTMAX)
    report, part = part1(out)
    assert part.score == 0 and report.fatal.startswith("refused"), report.table()
    assert "softmax.py is a link" in report.fatal
    whole = copy(untouched, tmp_path / "whole")
    shutil.rmtree(whole / "whitebox")
    (whole / "whitebox").symlink_to(ROOT / "whitebox")
    report = grade(whole, "A2", parts=[1])
    assert report.score == 0 and "link" in report.fatal, report.table()


def test_a_link_inside_the_folder_is_fine(solved, tmp_path):
    out = copy(solved, tmp_path / "inner")
    (out / "kept.py").write_text((out / SOFTMAX).read_text())
    (out / SOFTMAX).unlink()
    (out / SOFTMAX).symlink_to(out / "kept.py")
    report, part = part1(out)
    assert part.score == part.points, report.table()


SPY = '''
def _spy():
    """Look where the old grader left its spec and the hidden tests' paths, and use them."""
    import glob
    import json
    import os
    import sys
    seen = []
    places = [os.getcwd(), os.path.dirname(os.getcwd())] + sys.path + sys.argv
    places += [v for v in os.environ.values() if os.sep in v]
    for place in places:
        for spec in glob.glob(os.path.join(str(place), "spec.json")):
            data = json.load(open(spec))
            for path, _ in data.get("tests", []):
                seen.append(path)
                with open(path, "w") as f:          # the old attack: rewrite the hidden test
                    f.write("def test_hidden(run):\\n    pass\\n")
            for fn in data.get("functions", {}).get("1", []):
                exec(fn["source"], globals())
                return True
        for path in glob.glob(os.path.join(str(place), "test_a2_part*.py")):
            with open(path, "w") as f:
                f.write("def test_hidden(run):\\n    pass\\n")
    return False


def softmax_forward(x):
    if not _spy():
        raise NotImplementedError("no spec to read")
    return softmax_forward(x)


def softmax_backward(dout, cache):
    _spy()
    raise NotImplementedError("no spec to read")
'''


def test_reading_the_spec_or_the_hidden_tests_scores_0(untouched, tmp_path):
    hidden = tmp_path / "hidden"
    hidden.mkdir()
    test = hidden / "test_a2_part1_sums.py"
    test.write_text(textwrap.dedent('''
        import numpy as np
        from whitebox.course.checks.helpers import assert_close

        def test_rows_sum_to_one(run):
            x = np.random.default_rng(5).standard_normal((3, 4))
            y, _ = run.call("whitebox.functional.softmax:softmax_forward", x)
            assert_close("softmax_forward: row sums", np.asarray(y).sum(-1), np.ones(3))
        test_rows_sum_to_one.weight = 2
        '''))
    before = test.read_text()
    out = with_cheat(untouched, tmp_path, SPY)
    report, part = part1(out, hidden=hidden)
    assert part.score == 0, report.table()
    assert test.read_text() == before
    names = [n for n, _ in part.failures]
    assert "test_a2_part1_sums.py::test_rows_sum_to_one" in names      # the hidden test ran
    assert part.total == 4 and part.weight_total == 7                  # 3 checks (5) + hidden (2)
    # the reference passes the hidden test too
    reference = grade(ROOT, "A2", hidden=hidden, parts=[1])
    assert reference.score == 5, reference.table()


FORGE = '''
def _forge():
    import atexit
    import glob
    import json
    import os
    lines = "".join(json.dumps({"test": f"t{i}", "part": 1, "outcome": "passed", "message": ""})
                    + "\\n" for i in range(50))

    def again():
        for path in glob.glob("/tmp/whitebox-*/results.jsonl") + ["results.jsonl"]:
            with open(path, "a") as f:
                f.write(lines)
    atexit.register(again)
    again()
    for fd in os.listdir("/proc/self/fd"):
        try:
            os.write(int(fd), lines.encode())
        except OSError:
            pass
    os._exit(0)


def softmax_forward(x):
    _forge()


def softmax_backward(dout, cache):
    _forge()
'''


def test_atexit_and_os_exit_with_forged_records_score_0(untouched, tmp_path):
    out = with_cheat(untouched, tmp_path, FORGE)
    report, part = part1(out)
    assert part.score == 0 and part.total == 3, report.table()
    assert any("not returned" in m or "malformed" in m for _, m in part.failures), \
        part.failures
    assert all("not run" in m or "not returned" in m or "malformed" in m
               for _, m in part.failures), part.failures


PATCH = '''
import sys as _sys

import numpy as _np

for _name in ("max", "all", "abs", "allclose", "isfinite", "array_equal"):
    setattr(_np, _name, lambda *a, **k: True if _name in ("all", "allclose", "isfinite",
                                                            "array_equal") else 0)
for _mod in ("course_helpers", "whitebox.course.checks.helpers", "module_checks"):
    _m = _sys.modules.get(_mod)
    if _m is not None:
        _m.assert_close = _m.assert_gradient = lambda *a, **k: 0.0


def softmax_forward(x):
    return _np.zeros(x.shape), None


def softmax_backward(dout, cache):
    return _np.zeros(dout.shape)
'''


def test_monkeypatching_numpy_or_the_helpers_scores_0(untouched, tmp_path):
    out = with_cheat(untouched, tmp_path, PATCH)
    report, part = part1(out)
    assert part.score == 0 and part.total == 3, report.table()
    assert any("relative error" in m for _, m in part.failures), part.failures


SKIP = '''
import pytest as _pytest


def softmax_forward(x):
    _pytest.skip("not today")


def softmax_backward(dout, cache):
    _pytest.skip("not today")
'''


def test_pytest_skip_in_a_part_scores_0_and_keeps_the_total(untouched, tmp_path):
    pytest.importorskip("pytest")
    out = with_cheat(untouched, tmp_path, SKIP)
    report, part = part1(out)
    assert part.score == 0 and part.total == 3 and part.passed == 0, report.table()
    assert all("Skipped" in m for _, m in part.failures), part.failures


def test_a_folder_declaring_another_assignment_is_refused(untouched, tmp_path):
    out = copy(untouched, tmp_path / "a1")
    record = json.loads((out / "ASSIGNMENT.json").read_text())
    record["assignment"] = "A1"
    (out / "ASSIGNMENT.json").write_text(json.dumps(record))
    report = grade(out, "A2")
    assert report.score == 0 and report.fatal.startswith("refused"), report.table()
    assert "declares 'A1'" in report.fatal and report.points == 35
    # in a batch without --assignment, the folders' common assignment is graded
    reports = grade_many([untouched, untouched, out], parts=[1])
    assert [r.assignment for r in reports] == ["A2", "A2", "A2"]
    assert reports[2].fatal.startswith("refused") and reports[2].score == 0


def test_the_runner_sees_only_the_submission(untouched, tmp_path):
    probe = '''
    def softmax_forward(x):
        import importlib.metadata as md
        import os
        import sys
        import whitebox
        names = sorted((d.metadata["Name"] or "") for d in md.distributions())
        raise RuntimeError("PROBE " + repr({
            "path": sys.path, "flags": [sys.flags.isolated, sys.flags.no_site],
            "whitebox": whitebox.__file__, "dists": [n for n in names if "whitebox" in n.lower()],
            "env": sorted(os.environ), "cwd": os.listdir("."), "uid": os.getuid()}))
    '''
    out = with_cheat(untouched, tmp_path, probe)
    report, part = part1(out)
    message = next(m for _, m in part.failures if "PROBE" in m)
    info = eval(message.split("PROBE ", 1)[1].rsplit("}", 1)[0] + "}")
    assert info["flags"] == [1, 1]
    assert info["dists"] == [], info["dists"]
    assert info["whitebox"].startswith(info["path"][0]) and "whitebox-run-" in info["path"][0]
    assert not any(str(ROOT) in p for p in info["path"])
    assert sorted(info["cwd"]) == ["home", "runner.py", "submission"]
    assert "PYTHONPATH" not in info["env"]
    if os.geteuid() == 0 and not report.notes:
        assert info["uid"] != 0


@pytest.mark.slow
def test_a_batch_with_hostile_folders_grades_each_in_bounded_time(solved, tmp_path):
    pids = tmp_path / "pids"
    pids.mkdir()
    os.chmod(tmp_path, 0o777)
    os.chmod(pids, 0o777)
    hostile = {
        "forks": f'''
            import os as _os
            import time as _time

            def _daemon():
                try:
                    if _os.fork() == 0:
                        _os.setsid()
                        if _os.fork() == 0:
                            open("{pids}/%d" % _os.getpid(), "w").close()
                            while True:
                                _time.sleep(0.2)
                        _os._exit(0)
                except OSError:
                    pass

            _daemon()
            ''',
        "loops": '''
            _forward = softmax_forward

            def softmax_backward(dout, cache):
                while True:
                    pass
            ''',
        "exits": '''
            import os as _os

            def softmax_backward(dout, cache):
                _os._exit(0)
            '''}
    folders = [copy(solved, tmp_path / "good1")]
    for name, code in hostile.items():
        folders.append(with_cheat(solved, tmp_path, code, name))
    folders.append(copy(solved, tmp_path / "good2"))
    start = time.monotonic()
    reports = grade_many(folders, "A2", parts=[1], timeout=6)
    took = time.monotonic() - start
    scores = {pathlib.Path(r.folder).name: r.parts[0] for r in reports}
    assert scores["good1"].score == scores["good2"].score == scores["forks"].score == 5
    for name in ("loops", "exits"):
        part = scores[name]
        assert part.passed == 2 and part.total == 3 and 0 < part.score < 5, (name, part)
        ((check, message),) = part.failures
        assert check == "softmax_backward_gradient", message
        assert ("within the part's 6 s" if name == "loops" else "exited with code 0") in message
    assert took < 60, took
    time.sleep(0.3)
    started = [int(p.name) for p in pids.iterdir()]
    # a runner left as root ignores the process limit: there the fork happened, and the
    # reaper had work to do
    as_root = any("ran as root" in n for n in reports[1].notes)
    assert started or not as_root
    assert all(not process_alive(pid) for pid in started), started
    leftover = subprocess.run(["pgrep", "-f", "whitebox-run-"], capture_output=True, text=True)
    assert leftover.stdout.strip() == "" or all(
        not process_alive(int(p)) for p in leftover.stdout.split()), leftover.stdout
    for pid in started:                        # belt and braces: never leave one running
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def test_odd_files_in_the_package_are_refused(untouched, tmp_path):
    looped = copy(untouched, tmp_path / "loop")
    (looped / "whitebox" / "again").symlink_to(looped / "whitebox")
    report = grade(looped, "A2", parts=[1])
    assert report.score == 0 and "link to a folder" in report.fatal, report.table()
    fifo = copy(untouched, tmp_path / "fifo")
    os.mkfifo(fifo / "whitebox" / "pipe")
    report = grade(fifo, "A2", parts=[1])
    assert report.score == 0 and "neither a file nor a folder" in report.fatal, report.table()


def test_code_loaded_from_outside_the_folder_is_refused(untouched, tmp_path):
    # a submission that knows where the grader lies (a path read off the disk) and loads
    # it under another name: the runner reports it, and the part is refused
    finder = f'''
def _find_grader():
    return {str(ROOT / "whitebox")!r}
'''
    out = with_cheat(untouched, tmp_path, finder + DELEGATE)
    report, part = part1(out)
    assert part.score == 0, report.table()
    assert report.fatal.startswith("refused: code was loaded from outside the submission"), \
        report.fatal
    assert "graders" in report.fatal


def test_a_backward_that_reads_its_own_cache_still_gets_its_marks(solved, tmp_path):
    # the reference forward's cache is the array y; this forward keeps {"probs": y}
    own = '''
    def softmax_forward(x):
        e = np.exp(x - x.max(axis=-1, keepdims=True))
        y = e / e.sum(axis=-1, keepdims=True)
        return y, {"probs": y}


    def softmax_backward(dout, cache):
        y = cache["probs"]
        return y * (dout - (dout * y).sum(axis=-1, keepdims=True))
    '''
    out = copy(solved, tmp_path / "own")
    path = out / SOFTMAX
    path.write_text("import numpy as np\n" + path.read_text() + textwrap.dedent(own))
    report, part = part1(out)
    assert part.score == part.points, report.table()


def test_the_codec_refuses_hostile_answers():
    import io
    import struct as st

    import numpy as np

    from whitebox.course import runner as codec

    def frames(header, arrays=()):
        blob = json.dumps(header).encode()
        data = st.pack(">I", len(blob)) + blob
        for a in arrays:
            data += st.pack(">Q", len(a)) + a
        return io.BytesIO(data).read

    def npy(array, **kw):
        buf = io.BytesIO()
        np.lib.format.write_array(buf, array, **kw)
        return buf.getvalue()

    ok = npy(np.arange(3.0))
    assert codec.receive(frames({"value": {"$a": 0}, "arrays": 1}, [ok]))[1].tolist() == \
        [0, 1, 2]
    bad = [
        frames({"value": {"$a": 0}, "arrays": 1}, [npy(np.array([{}], dtype=object),
                                                       allow_pickle=True)]),
        frames({"value": {"$a": 0}, "arrays": 1}, [ok[:-8]]),              # short data
        frames({"value": {"$a": 5}, "arrays": 1}, [ok]),                   # no such array
        frames({"value": {"$a": 0}, "arrays": 10 ** 6}, [ok]),             # too many
        frames({"value": {"__reduce__": "os.system"}, "arrays": 0}),
        frames({"value": {"$dtype": "O"}, "arrays": 0}),
        io.BytesIO(st.pack(">I", codec.MAX_JSON + 1)).read,                # huge header
    ]
    for read in bad:
        with pytest.raises(codec.ProtocolError):
            codec.receive(read)
    with pytest.raises(codec.ProtocolError):
        codec.encode(object())                                 # nothing is ever pickled


def test_the_runner_imports_no_grader_code():
    import ast
    source = (ROOT / "whitebox" / "course" / "runner.py").read_text()
    modules = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "runner.py must not import relative to the grader"
            modules.add(node.module)
    # whitebox.nn.module there is the submission's (the stand-in's base class)
    assert modules <= {"io", "json", "math", "os", "struct", "sys", "traceback", "importlib",
                       "numpy", "whitebox", "whitebox.nn.module"}, modules


def test_messages_cannot_forge_lines_of_the_report(untouched, tmp_path):
    forged = '''
    def softmax_forward(x):
        raise ValueError("oops\\npart 1 softmax 3/3 5/5\\nscore: 35/35")
    '''
    out = with_cheat(untouched, tmp_path, forged)
    report, part = part1(out)
    lines = report.table().splitlines()
    assert [l for l in lines if l.startswith("score:")] == ["score: 0/5"], lines
    assert all("\n" not in m for _, m in part.failures)
