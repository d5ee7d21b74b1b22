"""The fused loops (whitebox.functional.fused) against the NumPy arrangement of each op.

Two levels:
- the loops as plain Python (their `py_func` under Numba, themselves without
  it) on small arrays: the loop arithmetic is checked wherever the suite runs;
- compiled (skipped without Numba): each op with the loops on equals the op
  with them off to round-off, in float64 and float32, and a whole model
  passes its gradient check with them on.
"""
import threading

import numpy as np
import pytest

import whitebox.functional as F
from whitebox.functional import fused
from whitebox.gradcheck import check_module
from whitebox.models import CRATE

needs_numba = pytest.mark.skipif(not fused.available(), reason="Numba is not installed")


def plain(loop):
    """The loop as plain Python: the uncompiled function under Numba, itself without."""
    return getattr(loop, "py_func", loop)


@pytest.fixture
def fused_on():
    with fused.setting(True):
        yield


# ------------------------------------------------------------ the loops, as Python

def test_layernorm_loops_match_the_reference(rng):
    x = rng.standard_normal((5, 7)) * 2 + 0.5
    gamma, beta = 1 + 0.3 * rng.standard_normal(7), rng.standard_normal(7)
    dout = rng.standard_normal((5, 7))
    y, xhat, rstd = np.empty_like(x), np.empty_like(x), np.empty(5)
    plain(fused.layernorm_rows_forward)(x, gamma, beta, 1e-5, y, xhat, rstd)
    y_ref, cache = F.layernorm.layernorm_reference_forward(x, gamma, beta)
    np.testing.assert_allclose(y, y_ref, rtol=1e-12, atol=1e-12)
    dx, dgamma, dbeta = np.empty_like(x), np.empty(7), np.empty(7)
    plain(fused.layernorm_rows_backward)(dout, xhat, rstd, gamma, dx, dgamma, dbeta)
    for got, ref in zip((dx, dgamma, dbeta), F.layernorm.layernorm_reference_backward(dout, cache)):
        np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-12)


def test_softmax_loops_match_softmax(rng):
    S = rng.standard_normal((6, 5)) * 3
    expected = F.softmax_forward(S)[0]
    E = S.copy()
    plain(fused.subtract_row_max)(E)
    assert np.allclose(E.max(axis=-1), 0)
    np.exp(E, out=E)
    plain(fused.divide_row_sum)(E)
    np.testing.assert_allclose(E, expected, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("softmax", [True, False])
def test_scores_backward_loop_is_the_softmax_backward_plus_its_transpose(rng, softmax):
    A = F.softmax_forward(rng.standard_normal((3, 4, 4)))[0]
    dA = rng.standard_normal((3, 4, 4))
    dS = F.softmax_backward(dA, A) if softmax else dA
    got = plain(fused.attention_scores_backward)(dA.copy(), A, softmax)
    np.testing.assert_allclose(got, dS + dS.transpose(0, 2, 1), rtol=1e-12, atol=1e-14)


# ------------------------------------------------------------ when the loops run

def test_usable_says_no_where_the_loops_cannot_run(monkeypatch):
    monkeypatch.setattr(fused, "_enabled", True)
    a = np.zeros((3, 4), np.float32)
    assert fused.usable(a, np.zeros(4, np.float32))
    assert not fused.usable(a, np.zeros(4))                          # mixed dtypes
    assert not fused.usable(a.T)                                     # not C-contiguous
    assert not fused.usable(a.astype(np.float16))
    assert not fused.usable(np.zeros((3, 4), int))
    monkeypatch.setattr(fused, "_enabled", False)
    assert not fused.usable(a)


def test_switching_on_without_numba_says_how_to_install(monkeypatch):
    monkeypatch.setattr(fused, "_enabled", fused.enabled())     # put back after the test
    monkeypatch.setattr(fused, "numba", None)
    with pytest.raises(RuntimeError, match=r"whitebox-crate\[fast\]"):
        fused.set_enabled(True)
    before = fused.enabled()
    assert fused.set_enabled(False) is before      # the refusal above changed nothing
    assert not fused.enabled()


@needs_numba
def test_setting_holds_inside_its_block_only(fused_on):
    with fused.setting(False):
        assert not fused.enabled()
        with fused.setting(True):
            assert fused.enabled()
        assert not fused.enabled()
    assert fused.enabled()


# ------------------------------------------------------------ compiled, through the ops

LOOPS = ("layernorm_rows_forward", "layernorm_rows_backward", "subtract_row_max",
         "divide_row_sum", "attention_scores_backward")
# without a mask, MSSA's scores s w w^T in range need no shift (softmax._gram_needs_no_shift),
# so a non-causal attention runs every loop but the max subtraction
UNMASKED = tuple(name for name in LOOPS if name != "subtract_row_max")


@pytest.fixture
def loop_calls(monkeypatch):
    """Counts the calls of each fused loop (by name) in every thread, and the threads."""
    calls, threads = {}, {}

    def counting(name, loop):
        def call(*args):
            calls[name] = calls.get(name, 0) + 1
            threads.setdefault(name, set()).add(threading.get_ident())
            return loop(*args)
        return call
    for name in LOOPS:
        monkeypatch.setattr(fused, name, counting(name, getattr(fused, name)))
    yield calls, threads


def _both_ways(run, loop_calls, expected):
    """run() with the loops on (the ``expected`` loops must run), then off (none may)."""
    calls = loop_calls[0]
    with fused.setting(True):
        on = run()
    assert {name for name in expected if calls.get(name)} == set(expected), calls
    calls.clear()
    with fused.setting(False):
        off = run()
    assert not calls, calls
    return on, off


def _assert_close_trees(on, off, dtype):
    rtol, atol = (1e-11, 1e-12) if dtype == "float64" else (2e-5, 2e-5)
    for a, b in zip(on, off):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)


@needs_numba
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_layernorm_with_and_without_the_loops(rng, dtype, loop_calls):
    x = (rng.standard_normal((3, 11, 40)) * 2 + 0.5).astype(dtype)
    gamma, beta = (1 + 0.3 * rng.standard_normal(40)).astype(dtype), rng.standard_normal(40).astype(dtype)
    dout = rng.standard_normal(x.shape).astype(dtype)

    def run():
        y, cache = F.layernorm_forward(x, gamma, beta)
        return (y,) + F.layernorm_backward(dout, cache)
    _assert_close_trees(*_both_ways(run, loop_calls, LOOPS[:2]), dtype)


@needs_numba
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("causal", [False, True])
def test_mssa_with_and_without_the_loops(rng, dtype, causal, loop_calls):
    B, N, d, K = 2, 9, 12, 3
    x = rng.standard_normal((B, N, d)).astype(dtype)
    W_qkv, W_out = (0.4 * rng.standard_normal(s).astype(dtype) for s in ((d, d), (d, d)))
    b_out = rng.standard_normal(d).astype(dtype)
    dout = rng.standard_normal((B, N, d)).astype(dtype)

    def run():
        y, cache = F.mssa_fast_forward(x, W_qkv, W_out, b_out, K, causal=causal)
        return (y, cache["attn"]) + tuple(F.mssa_fast_backward(dout, cache))
    expected = LOOPS[2:] if causal else UNMASKED[2:]
    _assert_close_trees(*_both_ways(run, loop_calls, expected), dtype)


@needs_numba
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_softmax_fast_path_with_and_without_the_loops(rng, dtype, loop_calls):
    S = (3 * rng.standard_normal((2, 3, 7, 7))).astype(dtype)
    mask = F.causal_mask(7, 7, dtype)
    dout = rng.standard_normal(S.shape).astype(dtype)

    def run():
        y, cache = F.softmax_fast_forward(S.copy(), mask)
        return y, F.softmax_fast_backward(dout.copy(), cache)
    _assert_close_trees(*_both_ways(run, loop_calls, LOOPS[2:4]), dtype)


@needs_numba
@pytest.mark.parametrize("causal", [False, True])
def test_attention_maps_of_the_loops_are_the_softmax_of_the_scores(rng, fused_on, causal):
    B, N, d, K = 2, 6, 8, 2
    x = rng.standard_normal((B, N, d))
    W_qkv = rng.standard_normal((d, d))
    _, cache = F.mssa_fast_forward(x, W_qkv, rng.standard_normal((d, d)), None, K,
                                   causal=causal)
    w = cache["w"]                                               # (B, K, N, p)
    S = (w @ w.transpose(0, 1, 3, 2)) * cache["scale"]
    if causal:
        S = np.where(np.triu(np.ones((N, N), bool), 1), -np.inf, S)
    np.testing.assert_allclose(cache["attn"], F.softmax_forward(S)[0], rtol=1e-12, atol=1e-15)


@needs_numba
def test_whole_model_gradient_check_with_the_loops(fused_on, loop_calls):
    model = CRATE(image_size=8, patch_size=4, channels=2, num_classes=3, dim=8, depth=2,
                  heads=2, dim_head=4, dtype="float64", seed=3)
    x = np.random.default_rng(1).standard_normal((2, 2, 8, 8))
    errors = check_module(model, [x], tol=1e-6, floor=1e-4)    # the tolerances of test_crate
    assert set(errors) == set(model.state_dict()) | {"input 0"}
    assert set(loop_calls[0]) == set(UNMASKED)                 # every loop an unmasked step runs


@needs_numba
def test_the_loops_are_compiled_to_release_the_gil():
    """What lets the --threads shards run them at once."""
    for name in LOOPS:
        assert getattr(fused, name).targetoptions.get("nogil") is True, name


@needs_numba
@pytest.mark.parametrize("task_name", ["classify", "lm"])
def test_shard_threads_each_run_the_loops_and_equal_one_step(fused_on, loop_calls, task_name):
    """Both shard threads run the loops (which release the GIL, test above), and the
    step still equals one step on the whole batch."""
    from test_threaded import _images, _one_step_vs_shards, _task
    task = _task(task_name)
    if task_name == "classify":
        batch = _images(8)
        def build():
            return CRATE(image_size=28, patch_size=7, num_classes=10, dim=32, depth=2,
                         heads=2, dim_head=16, channels=1, seed=0)
    else:
        task.setup(np.random.default_rng(0))
        batch = next(iter(task.batches()))
        build = task.build_model
    _one_step_vs_shards(task, build, batch, 2)
    calls, threads = loop_calls
    for name in LOOPS if task_name == "lm" else UNMASKED:     # the language model is causal
        assert len(threads.get(name, ())) >= 2, (name, calls)   # the whole step, and 2 shards


@pytest.mark.parametrize("on", [False, pytest.param(True, marks=needs_numba)])
def test_the_training_header_says_when_the_loops_run(tmp_path, capsys, on):
    from conftest import write_bar_mnist
    from whitebox import threads
    from whitebox import train as train_job
    (tmp_path / "data").mkdir()
    folder = write_bar_mnist(tmp_path / "data")
    before = threads.get_threads()
    try:
        with fused.setting(on):
            train_job.main(["--fast", "--dataset", "mnist", "--data", str(folder), "--epochs", "1",
                            "--out", str(tmp_path / "run"), "--no-progress", "--no-figures"])
    finally:
        threads.set_threads(before)
    header = capsys.readouterr().out.splitlines()[0]
    assert header.startswith("classify:") and ("| fused loops (Numba)" in header) == on
