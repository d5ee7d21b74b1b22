"""The judge: runs a part's checks in the grader's process against a runner process.

A check is a function of the grader (``whitebox/course/checks/aN.py``, or a
hidden test) that receives ``run``, a proxy for the runner that holds the
submission:

    y, cache = run.call("whitebox.functional.mssa:mssa_forward", x, W_qkv, W_out, b_out, 2)
    layer = run.new("whitebox.nn.crate_layers:CRATELayer", 6, heads=2, dim_head=3,
                    dtype="float64")
    layer.load_state_dict(reference.state_dict())
    out = layer.forward(x)

It builds the inputs, computes what is expected with the grader's own
whitebox (the reference), and compares. Only inputs go to the runner and
only the submission's outputs come back (checked as hostile data: shapes,
dtypes and sizes are limited by the codec in runner.py); reference code,
expected values, hidden tests and the scores never leave this process.

The runner (runner.py) is started and ended by sandbox.py: an isolated
interpreter that sees only the submission, with resource limits, in its own
session, and nothing it started outlives its part.
"""
import functools

from .sandbox import (CheckFailed, LIMITS, Remote, Run, RunnerGone, Sandbox,  # noqa: F401
                      StudentError, make_view, unprivileged_user, _libc, _prctl,
                      PR_GET_DUMPABLE, PR_SET_CHILD_SUBREAPER, PR_SET_DUMPABLE)


# --------------------------------------------------------------- checks
class Check:
    """One check of one part: ``fn(run)`` raises CheckFailed (or anything) when wrong."""

    def __init__(self, key, part, name, fn, weight=1.0, needs=(), hidden=False):
        self.key, self.part, self.name, self.fn = key.upper(), int(part), name, fn
        self.weight, self.needs, self.hidden = float(weight), tuple(needs), hidden

    def __repr__(self):
        return f"<check {self.key} part {self.part} {self.name} ({self.weight:g})>"


REGISTRY = {}


def check(key, part, weight=1.0, cases=None, needs=()):
    """Register ``fn(run, **case)`` as a check of ``key`` part ``part``.

    weight: its share of the part's points (a part scores points x passed
    weight / all weight). cases: {label: kwargs}, one check per case, named
    ``fn[label]``. needs: names (or name prefixes) of checks this one builds
    on; when one of them failed, this check's failure says to fix that first.
    """
    def register(fn):
        items = [(fn.__name__, fn)] if cases is None else [
            (f"{fn.__name__}[{label}]", functools.partial(fn, **kwargs))
            for label, kwargs in cases.items()]
        for name, f in items:
            REGISTRY.setdefault(key.upper(), []).append(Check(key, part, name, f, weight, needs))
        return fn
    return register


def checks_for(key):
    """The registered checks of assignment ``key``, in definition order."""
    from . import checks                                        # noqa: F401 (registers)
    return list(REGISTRY.get(key.upper(), []))


def student_message(err):
    text = str(err)
    if text.startswith("NotImplementedError"):
        return "not written yet (" + text.split(":", 1)[-1].strip()[:240] + ")"
    return "the submission raised " + text[:600]


def run_part(folder, checks, view, allowed, timeout, limits=None):
    """[(check, passed, message)] for ``checks`` against one fresh runner of ``folder``,
    and the fatal line (import failed, refused), or ""."""
    results, gone, fatal = [], "", ""
    sandbox = Sandbox(folder, view, allowed, timeout, limits)
    try:
        try:
            sandbox.hello()
        except StudentError as err:
            gone = fatal = f"cannot import whitebox from the submission: {str(err)[:600]}"
        except RunnerGone as err:
            gone = f"cannot import whitebox from the submission: {err}"
            fatal = gone if str(err).startswith("refused") else ""
        failed = set()
        for c in checks:
            if gone:
                results.append((c, False, " ".join(f"not run: {gone}".split())[:1200]))
                continue
            try:
                c.fn(Run(sandbox))
                results.append((c, True, ""))
                continue
            except RunnerGone as err:
                gone = str(err)
                if gone.startswith("refused"):
                    fatal = gone
                message = f"not returned: {gone}"
            except StudentError as err:
                message = student_message(err)
            except AssertionError as err:
                message = " ".join(str(err).split())[:900] or "failed"
            except Exception as err:                             # noqa: BLE001
                message = (f"the submission's answer could not be used: "
                           f"{type(err).__name__}: {str(err)[:400]}")
            # one line, whatever the submission put in its messages (no forged table rows)
            message = " ".join(message.split())[:1200]
            blockers = [n for n in c.needs if any(f == n or f.startswith(n + "[")
                                                    for f in failed)]
            if blockers and not message.startswith("not written yet"):
                message += f" (fix {', '.join(blockers)} first: its check failed too)"
            failed.add(c.name)
            results.append((c, False, message))
    finally:
        sandbox.close()
    return results, " ".join(fatal.split())
