"""The tests a student runs locally: stored expected values, and gradient checks of their own code.

    write_visible_tests("A2", "handout/A2/tests")

writes, for every part, ``test_<key>_part<N>_visible.py`` and its data
``expected_<key>_part<N>.npz`` / ``.json``, plus ``visible_helpers.py``.
They hold no formula and no reference code: the values a part's forward
functions must give were computed now by the reference on the same inputs
the grader's checks use (recorded by running those checks against the
reference), and every backward is checked against central differences of
the student's OWN forward (so the tests say whether the pair agrees; the
grader also checks it against the reference). Module parts build the
student's modules with fixed seeds and compare their output with the stored
one, then check their backward by finite differences of their own forward.
``python -m pytest tests -q`` runs them in the handout.
"""
import importlib
import json
import pathlib

import numpy as np

from . import judge
from . import runner as codec
from .assignments import get_assignment

# functional pairs: (forward, backward, positions of the inputs the backward returns
# gradients for, in its order); the rest are data (labels, masks, sizes)
PAIRS = {
    "whitebox.rate.gram:gram_logdet_forward": ("whitebox.rate.gram:gram_logdet_backward", (0,)),
    "whitebox.rate.coding:coding_rate_forward": ("whitebox.rate.coding:coding_rate_backward",
                                                 (0,)),
    "whitebox.rate.compression:compression_rate_forward": (
        "whitebox.rate.compression:compression_rate_backward", (0, 1)),
    "whitebox.rate.mcr2:class_compression_forward": (
        "whitebox.rate.mcr2:class_compression_backward", (0,)),
    "whitebox.functional.softmax:softmax_forward": (
        "whitebox.functional.softmax:softmax_backward", (0,)),
    "whitebox.functional.layernorm:layernorm_forward": (
        "whitebox.functional.layernorm:layernorm_backward", (0, 1, 2)),
    "whitebox.functional.mssa:mssa_forward": ("whitebox.functional.mssa:mssa_backward",
                                              (0, 1, 2, 3)),
    "whitebox.functional.ista:ista_forward": ("whitebox.functional.ista:ista_backward", (0, 1)),
    "whitebox.functional.masked_mse:masked_mse_forward": (
        "whitebox.functional.masked_mse:masked_mse_backward", (0, 1)),
    "whitebox.functional.masking:mask_tokens_forward": (
        "whitebox.functional.masking:mask_tokens_backward", (0, 2)),
}

# module parts: (class, constructor kwargs, input shape, stand-in-free: the student's whole code)
MODULES = {
    ("A3", 2): [("whitebox.nn.crate_layers:CRATELayer",
                 dict(dim=6, heads=2, dim_head=3, dtype="float64", seed=0), (2, 4, 6))],
    ("A3", 3): [("whitebox.models.crate:Transformer",
                 dict(dim=6, depth=2, heads=2, dim_head=3, dtype="float64", seed=1), (2, 3, 6))],
    ("A4", 2): [("whitebox.nn.decoder_layers:DecoderLayer",
                 dict(dim=6, heads=2, dim_head=3, softmax=s, dtype="float64", seed=3), (2, 4, 6))
                for s in (True, False)],
}


# inputs for pairs whose forward the checks never call (it is given, not asked)
EXTRA = {
    ("A2", 2): [("whitebox.functional.layernorm:layernorm_forward",
                 lambda r: ((r.standard_normal((4, 6)) * 2 + 0.5, r.standard_normal(6),
                             r.standard_normal(6)), {})),
                ("whitebox.functional.layernorm:layernorm_forward",
                 lambda r: ((r.standard_normal((2, 3, 5)), r.standard_normal(5),
                             r.standard_normal(5)), {}))],
}


class _Skip(Exception):
    pass


class _Recorder:
    """A stand-in for ``run`` that calls the grader's own functions and records the
    forward calls (not the backward ones: their inputs are the reference's caches)."""

    def __init__(self):
        self.calls = []

    def call(self, target, *args, **kwargs):
        module, _, qualname = target.partition(":")
        fn = importlib.import_module(module)
        for name in qualname.split("."):
            fn = getattr(fn, name)
        result = fn(*args, **kwargs)
        if not qualname.endswith("_backward"):
            try:
                record = (target, codec.encode((list(args), kwargs))[0],
                          codec.encode(result)[0])
            except codec.ProtocolError:
                return result
            self.calls.append((target, [np.array(a) for a in _arrays((list(args), kwargs))],
                               [np.array(a) for a in _arrays(result)], record))
        return result

    def forward(self, target, *args, **kwargs):
        return self.call(target, *args, **kwargs)

    def new(self, *a, **k):
        raise _Skip

    standin = keep = get = new


def _arrays(value):
    return codec.encode(value)[1]


def _record(key, part):
    rec = _Recorder()
    for c in judge.checks_for(key):
        if c.part != part:
            continue
        try:
            c.fn(rec)
        except _Skip:
            continue
    for i, (target, make) in enumerate(EXTRA.get((key, part), ())):
        args, kwargs = make(np.random.default_rng(100 + i))
        rec.call(target, *args, **kwargs)
    return rec.calls


HEADER = '''"""{key} part {part}: {title}.

Your functions on fixed inputs against values stored in {data}.npz (computed
by the reference on the inputs the grader uses), and your backward against
central differences of your own forward. The grader runs more checks than
these, on its side, and weighs the ones that test every term of a backward
most. Run: python -m pytest tests -q
"""
import pathlib

import pytest

from visible_helpers import check_module, check_pair, check_value, load_cases

HERE = pathlib.Path(__file__).resolve().parent
VALUES, PAIRS, MODULES = load_cases(HERE / "{data}")
'''


# one test function per kind of case a part has (a parametrize over no case is a skip)
TESTS = {
    "values": '''

@pytest.mark.parametrize("case", VALUES, ids=[c["id"] for c in VALUES])
def test_value(case):
    check_value(case)
''',
    "pairs": '''

@pytest.mark.parametrize("case", PAIRS, ids=[c["id"] for c in PAIRS])
def test_backward_against_your_forward(case):
    check_pair(case)
''',
    "modules": '''

@pytest.mark.parametrize("case", MODULES, ids=[c["id"] for c in MODULES])
def test_module(case):
    check_module(case)
'''}


def write_visible_tests(key, dest):
    """Write the visible tests of assignment ``key`` into folder ``dest``; return the paths."""
    assignment = get_assignment(key)
    dest = pathlib.Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    written = [dest / "visible_helpers.py"]
    (dest / "visible_helpers.py").write_text(
        (pathlib.Path(__file__).parent / "visible_helpers.py").read_text())
    for part in assignment.parts:
        data = f"expected_{assignment.key.lower()}_part{part.number}"
        arrays, values, pairs, modules = {}, [], [], []
        seen = set()
        for i, (target, inputs, outputs, (_, tree_in, tree_out)) in enumerate(
                _record(assignment.key, part.number)):
            blob = (target, json.dumps(tree_in, sort_keys=True),
                    tuple(a.tobytes() for a in inputs))
            if blob in seen:
                continue
            seen.add(blob)
            n = len(values)
            for j, a in enumerate(inputs):
                arrays[f"v{n}_in{j}"] = a
            for j, a in enumerate(outputs):
                arrays[f"v{n}_out{j}"] = a
            values.append({"id": f"{target.split(':')[1]}-{n}", "target": target,
                           "inputs": tree_in, "outputs": tree_out, "n": n,
                           "n_in": len(inputs), "n_out": len(outputs)})
            if target in PAIRS:
                backward, wrt = PAIRS[target]
                pairs.append({"id": f"{backward.split(':')[1]}-{n}", "forward": target,
                              "backward": backward, "wrt": list(wrt), "n": n,
                              "inputs": tree_in, "n_in": len(inputs)})
        for m, (cls, kwargs, shape) in enumerate(MODULES.get((assignment.key, part.number), ())):
            module, _, name = cls.partition(":")
            ref = getattr(importlib.import_module(module), name)(**kwargs)
            x = np.random.default_rng(10 + m).standard_normal(shape)
            arrays[f"m{m}_x"] = x
            arrays[f"m{m}_y"] = np.asarray(ref(x))
            modules.append({"id": f"{name}-{m}", "class": cls, "kwargs": kwargs, "m": m})
        np.savez(dest / f"{data}.npz", **arrays)
        (dest / f"{data}.json").write_text(json.dumps(
            {"values": values, "pairs": pairs, "modules": modules}, indent=1))
        test = dest / f"test_{assignment.key.lower()}_part{part.number}_visible.py"
        kinds = {"values": values, "pairs": pairs, "modules": modules}
        test.write_text(HEADER.format(key=assignment.key, part=part.number, title=part.title,
                                      data=data)
                        + "".join(TESTS[k] for k, cases in kinds.items() if cases))
        written += [test, dest / f"{data}.npz", dest / f"{data}.json"]
    return written
