"""Checks several test files share: a table row of a functional pair (``Op``) and its
float32 check, state dicts equal key by key, the whole-model gradient check of a token
model, one training step against a PyTorch twin, and two runs' metric curves and
checkpoints."""
import json
import os
from dataclasses import dataclass
from typing import Callable, Tuple

import numpy as np

from whitebox.backend import backend_name, to_numpy
from whitebox.functional import token_cross_entropy
from whitebox.gradcheck import check_module


@dataclass(frozen=True)
class Op:
    name: str
    make_inputs: Callable     # rng -> tuple of NumPy float64 (or integer) arrays
    forward: Callable         # *inputs -> (out, cache)
    backward: Callable        # (dout, cache) -> gradients aligned with inputs
    reference: Callable       # *inputs -> out, by formula or loop
    wrt: Tuple[int, ...]      # inputs whose gradient is checked


def cast(a, xp, dtype):
    """Float arrays to ``dtype``; every array to the backend ``xp``."""
    if a.dtype.kind == "f":
        a = a.astype(dtype)
    return xp.asarray(a)


def assert_float32_matches_float64(op, xp, grad_atol=1e-5):
    """``op`` in float32 on the backend ``xp`` against float64 NumPy: float32 output on
    that backend within rtol 1e-4, atol 1e-5; float32 gradients within rtol 1e-4, grad_atol."""
    rng = np.random.default_rng(3)
    inputs64 = op.make_inputs(rng)
    out64, cache64 = op.forward(*inputs64)
    dout = rng.standard_normal(out64.shape)
    grads64 = op.backward(dout, cache64)

    inputs32 = [cast(a, xp, np.float32) for a in inputs64]
    out32, cache32 = op.forward(*inputs32)
    grads32 = op.backward(xp.asarray(dout.astype(np.float32)), cache32)

    assert out32.dtype == np.float32, f"{op.name} upcast its float32 output to {out32.dtype}"
    assert backend_name(out32) == backend_name(inputs32[-1])
    np.testing.assert_allclose(to_numpy(out32), out64, rtol=1e-4, atol=1e-5)
    for i in op.wrt:
        assert grads32[i].dtype == np.float32
        np.testing.assert_allclose(to_numpy(grads32[i]), grads64[i], rtol=1e-4, atol=grad_atol)


def assert_same_state(model, other):
    """Every array of ``model``'s state dict equals ``other``'s under the same key."""
    theirs = other.state_dict()
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(theirs[k], v, err_msg=k)


def assert_token_model_gradients(model, inputs):
    """check_module of every parameter of a token model (ids carry no gradient).

    h = 1e-6: the N(0, 0.02^2) embeddings give LayerNorm a small sigma, so its third
    derivative is large and h = 1e-5 leaves ~1e-7 of truncation error (it falls as h^2).
    """
    errors = check_module(model, inputs, h=1e-6, tol=1e-6, floor=1e-2)
    assert len(errors) == len(model.grads()) and max(errors.values()) < 1e-6


def assert_twin_step(model, twin, inputs, targets):
    """One token cross-entropy step (targets -1 ignored): model(*inputs) and the PyTorch
    twin give the same loss (to 1e-10) and the same parameter gradients."""
    import torch
    from torch_baselines import check_grads
    logits = twin(*(torch.from_numpy(a) for a in inputs))
    tl = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                           torch.from_numpy(targets).reshape(-1),
                                           ignore_index=-1)
    tl.backward()
    loss, dlogits = token_cross_entropy(model(*inputs), targets)
    model.backward(dlogits)
    assert abs(float(loss) - tl.item()) < 1e-10
    check_grads(model, twin)


def read_curve(out):
    """The per-epoch records of the run in ``out`` (its metrics.jsonl)."""
    with open(os.path.join(out, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def without_times(history, *also):
    """A run's records without their timings (loop.TIME_KEYS) and the keys ``also`` (e.g.
    "run", which differs between runs), to compare runs number for number."""
    from whitebox.training.loop import TIME_KEYS
    drop = TIME_KEYS + also
    return [{k: v for k, v in r.items() if k not in drop} for r in history]


def assert_same_checkpoint(a, b):
    """The checkpoint.npz files of the run folders ``a`` and ``b`` hold equal arrays."""
    from whitebox.checkpoint import load_arrays
    a, b = (load_arrays(os.path.join(out, "checkpoint.npz")) for out in (a, b))
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def assert_same_curve(a, b, keys=("train_loss", "test_loss", "train_acc", "test_acc")):
    """Two runs' records agree epoch by epoch in ``keys``, up to float32 rounding."""
    assert [r["epoch"] for r in a] == [r["epoch"] for r in b]
    for ra, rb in zip(a, b):
        for k in keys:
            np.testing.assert_allclose(ra[k], rb[k], rtol=2e-5, atol=1e-6, err_msg=k)
