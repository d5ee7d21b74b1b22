"""CRATE language models: official numbers and names, gradients, the cache, the masking rule."""
import numpy as np
import pytest

from whitebox.functional import token_cross_entropy, token_cross_entropy_backward, \
    token_cross_entropy_forward
from whitebox.gradcheck import GradientCheckError, check_backward, check_module
from whitebox.data import mask_tokens
from whitebox.models import CRATEBERT, CRATEGPT
from whitebox.nn import LMBlock, OvercompleteISTA

VARIANTS = ["plain", "overcomplete"]
MODELS = [CRATEGPT, CRATEBERT]
TINY = dict(vocab_size=7, block_size=5, dim=6, depth=2, heads=2, expansion=2)


def tiny(cls=CRATEGPT, variant="overcomplete", dtype="float64", **kw):
    return cls(**{**TINY, **kw}, variant=variant, dtype=dtype, seed=1)


def ids(shape, vocab=7, seed=0):
    return np.random.default_rng(seed).integers(0, vocab, shape)


# ------------------------------------------------------------------ structure
@pytest.mark.parametrize("variant, count", [
    pytest.param("plain", 60_699_648, marks=pytest.mark.slow), ("overcomplete", 81_934_848)])
def test_official_parameter_counts(variant, count):
    m = CRATEGPT(50304, 1024, 768, 12, 12, variant=variant)
    assert m.num_params() == count
    assert m.state_dict()["transformer.h.11.ista.weight"].shape == \
        ((3072, 768) if variant == "overcomplete" else (768, 768))


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("cls", MODELS)
def test_official_names_each_parameter_once(cls, variant):
    d, V, T, L, m = 6, 7, 5, 2, {"plain": 6, "overcomplete": 12}[variant]
    per_block = 4 * d + d * d + d * d + d + m * d
    expect_count = V * d + T * d + L * per_block + (2 * d if variant == "overcomplete" else 0)
    assert tiny(cls, variant).num_params() == expect_count
    sd = tiny(cls, variant).state_dict()
    block = {"prenorm_1.weight", "prenorm_1.bias", "attn.c_attn.weight", "attn.c_proj.weight",
             "attn.c_proj.bias", "prenorm_2.weight", "prenorm_2.bias", "ista.weight"}
    expect = {"transformer.wte.weight", "transformer.wpe.weight"}
    expect |= {f"transformer.h.{i}.{k}" for i in range(2) for k in block}
    if variant == "overcomplete":
        expect |= {"transformer.ln_f.weight", "transformer.ln_f.bias"}
    assert set(sd) == expect
    assert "lm_head.weight" not in sd
    assert sd["transformer.h.0.attn.c_attn.weight"].shape == (6, 6)
    assert sd["transformer.wpe.weight"].shape == (5, 6)


def test_init_follows_gpt2_and_kaiming():
    m = CRATEGPT(64, 32, 96, 4, 4, seed=0)
    sd = m.state_dict()
    assert abs(sd["transformer.wte.weight"].std() - 0.02) < 0.002
    assert abs(sd["transformer.h.0.attn.c_attn.weight"].std() - 0.02) < 0.002
    assert abs(sd["transformer.h.0.attn.c_proj.weight"].std() - 0.02 / np.sqrt(8)) < 0.001
    assert (sd["transformer.h.0.attn.c_proj.bias"] == 0).all()
    W = sd["transformer.h.0.ista.weight"]
    bound = np.sqrt(6 / 96)
    assert W.shape == (384, 96) and np.abs(W).max() <= bound and np.abs(W).max() > 0.95 * bound


# ------------------------------------------------------------------ gradients
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("cls", MODELS)
def test_whole_model_gradient_check(cls, variant):
    # h = 1e-6: the N(0, 0.02^2) embeddings put LayerNorm where its curvature is large
    m = tiny(cls, variant)
    x = ids((2, 5))
    errs = check_module(m, [x], h=1e-6, tol=1e-6, floor=1e-4)
    assert set(errs) == set(m.state_dict())


@pytest.mark.parametrize("cls", MODELS)
def test_whole_model_gradient_check_through_the_loss(cls):
    m = tiny(cls, "plain")
    for key in ("transformer.wte.weight", "transformer.wpe.weight"):
        m.state_dict()[key][...] *= 30             # out of LayerNorm's high-curvature corner
    x, y = ids((2, 4)), ids((2, 4), seed=1)
    y[0, 1] = -1                                   # an ignored position (as the masked loss)
    check_module(m, [x], loss=lambda z: token_cross_entropy(z, y), tol=1e-6, floor=1e-4)


def test_tied_embedding_receives_both_gradients():
    m = tiny()
    x = ids((2, 5))
    dlogits = np.random.default_rng(3).standard_normal((2, 5, 7))
    m(x)
    m.zero_grad()
    m.backward(dlogits)
    total = m.grads()["transformer.wte.weight"].copy()
    # the head's share alone: dlogits^T x_final
    m(x)
    x_final = m._cache[0]
    head = dlogits.reshape(-1, 7).T @ x_final.reshape(-1, 6)
    lookup = total - head
    assert np.abs(head).max() > 1e-3 and np.abs(lookup).max() > 1e-3
    # the lookup's share is zero on rows of ids that never occur
    unused = sorted(set(range(7)) - set(x.ravel().tolist()))
    np.testing.assert_allclose(lookup[unused], 0, atol=1e-15)


def test_overcomplete_ista_module_gradient():
    m = OvercompleteISTA(5, 3, 0.5, 0.05, dtype="float64", seed=0)
    x = np.random.default_rng(0).standard_normal((2, 4, 5))
    errs = check_module(m, [x], tol=1e-7)
    assert max(errs.values()) < 1e-7
    assert (m.last_codes == 0).any() and (m.last_codes > 0).any()


def test_tied_overcomplete_ista_is_the_untied_one_with_both_dictionaries_equal():
    """The language model's tied Module and CRATE-alpha's D, D1 are one map: with
    D = D1 = W^T they give the same output and input gradient, and dW = dD^T + dD1^T."""
    rng = np.random.default_rng(3)
    tied = OvercompleteISTA(5, 3, 0.5, 0.05, dtype="float64", seed=0)
    untied = OvercompleteISTA(5, 3, 0.5, 0.05, tied=False, dtype="float64", seed=1)
    W = tied.param("weight")
    assert W.shape == (15, 5) and untied.param("D").shape == untied.param("D1").shape == (5, 15)
    untied.param("D")[...] = W.T
    untied.param("D1")[...] = W.T
    x, dout = rng.standard_normal((2, 4, 5)), rng.standard_normal((2, 4, 5))
    np.testing.assert_allclose(tied(x), untied(x), rtol=1e-13, atol=1e-14)
    tied.zero_grad()
    untied.zero_grad()
    np.testing.assert_allclose(tied.backward(dout), untied.backward(dout), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(tied.grad("weight"), untied.grad("D").T + untied.grad("D1").T,
                               rtol=1e-12, atol=1e-14)
    assert np.abs(untied.grad("D")).max() > 1e-3 and np.abs(untied.grad("D1")).max() > 1e-3


@pytest.mark.parametrize("causal", [True, False])
def test_block_gradient(causal):
    b = LMBlock(6, 2, 2, "overcomplete", 2, 0.5, 0.05, causal, dtype="float64", seed=0)
    x = np.random.default_rng(1).standard_normal((2, 4, 6))
    check_module(b, [x], tol=1e-6, floor=1e-6)


def test_token_cross_entropy_pair_against_finite_differences():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((3, 4, 5))
    y = rng.integers(0, 5, (3, 4))
    y[1, 2] = y[0, 0] = -1

    def fwd(z):
        return token_cross_entropy_forward(z, y)
    errs = check_backward(fwd, lambda d, c: token_cross_entropy_backward(d, c), (logits,))
    assert errs[0] < 1e-7
    loss, cache = fwd(logits)
    keep = y != -1
    z = logits[keep]
    ref = np.mean(np.log(np.exp(z).sum(-1)) - z[np.arange(len(z)), y[keep]])
    assert loss.shape == () and abs(float(loss) - ref) < 1e-12
    assert (token_cross_entropy_backward(np.float64(1.0), cache)[~keep] == 0).all()


def test_a_wrong_loss_gradient_is_caught():
    """Dividing by every position instead of the counted ones must fail: the check can fail."""
    rng = np.random.default_rng(1)
    logits, y = rng.standard_normal((2, 3, 4)), rng.integers(0, 4, (2, 3))
    y[0, 0] = -1

    def wrong(d, cache):
        return token_cross_entropy_backward(d, cache) * 5 / 6
    with pytest.raises(GradientCheckError):
        check_backward(lambda z: token_cross_entropy_forward(z, y), wrong, (logits,))


# ------------------------------------------------------------------ the causal mask and cache
@pytest.mark.parametrize("variant", VARIANTS)
def test_causal_logits_do_not_see_the_future(variant):
    m = tiny(variant=variant)
    x = ids((1, 5))
    a = m(x)
    x2 = x.copy()
    x2[0, 3] = (x2[0, 3] + 1) % 7
    b = m(x2)
    np.testing.assert_array_equal(a[:, :3], b[:, :3])
    assert np.abs(a[:, 3:] - b[:, 3:]).max() > 1e-6
    mb = tiny(CRATEBERT, variant)
    assert np.abs(mb(x)[:, :3] - mb(x2)[:, :3]).max() > 1e-6   # the masked model sees it all


@pytest.mark.parametrize("variant", VARIANTS)
def test_cached_pieces_equal_the_whole_forward(variant):
    m = tiny(variant=variant, block_size=8)
    x = ids((3, 8))
    full = m(x)
    cache = m.new_cache()
    pieces = [m.forward_cached(x[:, :3], cache), m.forward_cached(x[:, 3:4], cache),
              m.forward_cached(x[:, 4:], cache)]
    np.testing.assert_allclose(np.concatenate(pieces, axis=1), full, rtol=1e-12, atol=1e-13)
    # one tensor per layer, (B, K, P, p): the projected tokens, q = k = v
    assert [p.shape for p in cache["past"]] == [(3, 2, 8, 3)] * 2
    with pytest.raises(ValueError, match="exceed block_size"):
        m.forward_cached(x[:, :1], cache)
    # a cache of another batch, another model or none at all is named
    half = m.new_cache()
    m.forward_cached(x[:2, :3], half)
    with pytest.raises(ValueError, match=r"cache holds projections of shape \(2, 2, 3, 3\), "
                                         r"expected \(B, K, P, p\) = \(3, 2, 3, 3\)"):
        m.forward_cached(x[:, 3:4], half)
    wider = tiny(variant=variant, block_size=8, dim=12)           # same depth and heads
    other = wider.new_cache()
    wider.forward_cached(x[:, :3], other)
    with pytest.raises(ValueError, match=r"expected \(B, K, P, p\) = \(3, 2, 3, 3\)"):
        m.forward_cached(x[:, 3:4], other)
    for broken in ({"past": None, "length": 0}, {"past": (None, None), "length": 0}):
        with pytest.raises(ValueError, match="cache must come from this model's new_cache"):
            m.forward_cached(x[:, :1], broken)
    deeper = tiny(variant=variant, block_size=8, depth=3)
    with pytest.raises(ValueError, match=r"cache must come from this model's new_cache\(\) "
                                         r"\(2 layers\), got dict with 3 layers"):
        m.forward_cached(x[:, :1], deeper.new_cache())
    with pytest.raises(ValueError, match=r"got NoneType"):
        m.forward_cached(x[:, :1], None)


@pytest.mark.parametrize("variant", VARIANTS)
def test_generate_with_and_without_cache_agree(variant):
    m = tiny(variant=variant)
    prompt = ids((2, 2))
    a = m.generate(prompt, 9, rng=3, top_k=4)       # slides past block_size 5
    b = m.generate(prompt, 9, rng=3, top_k=4, use_cache=False)
    assert a.shape == (2, 11)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a[:, :2], prompt)
    c = m.generate(prompt, 9, rng=4, temperature=0.7)
    assert ((c >= 0) & (c < 7)).all()


def test_top_k_one_is_greedy():
    m = tiny()
    prompt = ids((1, 3))
    out = m.generate(prompt, 1, top_k=1, rng=0)
    assert out[0, -1] == m(prompt)[0, -1].argmax()


# ------------------------------------------------------------------ official files
@pytest.mark.parametrize("variant", VARIANTS)
def test_official_state_round_trip(variant):
    a, b = tiny(variant=variant), CRATEGPT(**TINY, variant=variant, dtype="float64", seed=2)
    official = a.to_official_state(a.state_dict())
    assert "lm_head.weight" in official
    assert ("transformer.h.1.attn.bias" in official) == (variant == "plain")
    if variant == "plain":
        assert official["transformer.h.1.attn.bias"].shape == (1, 1, 5, 5)
    b.load_state_dict(b.from_official_state(official))
    for k, v in a.state_dict().items():
        np.testing.assert_array_equal(v, b.state_dict()[k], err_msg=k)


def test_official_state_errors():
    m = tiny(variant="plain")
    official = m.to_official_state(m.state_dict())
    untied = dict(official, **{"lm_head.weight": official["lm_head.weight"] + 1})
    with pytest.raises(ValueError, match="lm_head.weight differs"):
        m.from_official_state(untied)
    bad = dict(official, **{"transformer.h.0.attn.bias": np.ones((1, 1, 5, 5))})
    with pytest.raises(ValueError, match="is not the causal mask"):
        m.from_official_state(bad)
    with pytest.raises(KeyError, match="unexpected keys"):
        m.load_state_dict(official)


# ------------------------------------------------------------------ masking rule
def test_mask_tokens_follows_bert():
    rng = np.random.default_rng(0)
    x = ids((400, 100), vocab=19, seed=1)          # the text never holds the mask id 19
    inputs, targets = mask_tokens(x, 19, 20, rng)
    chosen = targets != -1
    assert (chosen.sum(axis=1) == 15).all()
    np.testing.assert_array_equal(targets[chosen], x[chosen])
    np.testing.assert_array_equal(inputs[~chosen], x[~chosen])
    masked = (inputs == 19) & chosen
    kept = (inputs == x) & chosen
    swapped = chosen & ~masked & ~kept
    n = chosen.sum()
    # 6,000 chosen positions: 0.02 is four standard deviations of each fraction
    assert abs(masked.sum() / n - 0.8) < 0.02
    assert abs(kept.sum() / n - 0.1 - 0.1 / 19) < 0.02   # a random draw may hit the original
    assert abs(swapped.sum() / n - 0.1 * 18 / 19) < 0.02
    assert (inputs[swapped] != 19).all()
    again = mask_tokens(x, 19, 20, np.random.default_rng(0))
    np.testing.assert_array_equal(again[0], inputs)   # the generator makes it reproducible


@pytest.mark.parametrize("mask_id,vocab_size,ignore_index,message", [
    (20, 20, -1, r"mask_id must be an integer in \[0, 20\), got 20"),
    (-1, 20, -1, r"mask_id must be an integer in \[0, 20\), got -1"),
    (2.5, 20, -1, r"mask_id must be an integer in \[0, 20\), got 2.5"),
    (0, 1, -1, r"vocab_size must be an integer >= 2 \(the mask and one other token\), got 1"),
    (19, 20, 3, r"ignore_index must be an integer outside \[0, 20\) \(a class id would drop "
                r"that class's targets\), got 3"),
])
def test_mask_tokens_names_its_bad_arguments(mask_id, vocab_size, ignore_index, message):
    x = ids((2, 10), vocab=1, seed=1)
    with pytest.raises(ValueError, match=message):
        mask_tokens(x, mask_id, vocab_size, np.random.default_rng(0), ignore_index=ignore_index)


def test_token_cross_entropy_refuses_a_class_id_as_ignore_index():
    logits, targets = np.zeros((2, 3, 5)), np.zeros((2, 3), np.int64)
    with pytest.raises(ValueError, match=r"ignore_index must be an integer outside \[0, 5\)"):
        token_cross_entropy_forward(logits, targets, ignore_index=0)


def test_mask_token_is_the_last_id_by_default():
    assert tiny(CRATEBERT).mask_id == 6
    with pytest.raises(ValueError, match="mask_id"):
        tiny(CRATEBERT, mask_id=7)


# ------------------------------------------------------------------ errors
@pytest.mark.parametrize("cls", MODELS)
def test_bad_ids_are_named(cls):
    m = tiny(cls)
    with pytest.raises(ValueError, match=r"idx must lie in \[0, 7\), found 7"):
        m(np.array([[1, 7]]))
    with pytest.raises(ValueError, match="found -1"):
        m(np.array([[-1, 2]]))
    with pytest.raises(TypeError, match="integer array"):
        m(np.zeros((1, 3)))
    with pytest.raises(TypeError, match="integer array"):
        m([[1, 2]])
    with pytest.raises(ValueError, match="T = 6 .*block_size = 5"):
        m(ids((1, 6)))
    with pytest.raises(ValueError, match="2-dimensional"):
        m(ids((5,)))


@pytest.mark.parametrize("kw, match", [
    (dict(heads=4), "divisible by heads"), (dict(variant="wide"), "variant must be"),
    (dict(block_size=0), "block_size must be a positive integer"),
    (dict(dropout=1.0), "dropout must be in"), (dict(ista_step=0), "ista_step must be in"),
])
def test_bad_config_errors(kw, match):
    with pytest.raises(ValueError, match=match):
        tiny(**kw)


def test_wrong_upstream_and_backward_before_forward():
    m = tiny()
    with pytest.raises(RuntimeError, match="before forward"):
        m.backward(np.zeros((1, 5, 7)))
    m(ids((1, 5)))
    with pytest.raises(ValueError, match=r"CRATEGPT backward: dout has shape"):
        m.backward(np.zeros((1, 5, 6)))


def test_float32_matches_float64():
    x = ids((2, 5))
    out32 = tiny(dtype="float32")(x)
    assert out32.dtype == np.float32
    np.testing.assert_allclose(out32, tiny()(x), rtol=1e-4, atol=1e-5)


def test_overfits_one_batch():
    from whitebox.optim import AdamW
    m = CRATEGPT(12, 16, 32, 2, 4, seed=0)
    x = ids((8, 16), vocab=12)
    y = np.roll(x, -1, axis=1)
    opt = AdamW(m, lr=3e-3, weight_decay=0.0)
    for _ in range(150):
        loss, d = token_cross_entropy(m(x), y)
        m.zero_grad()
        m.backward(d)
        opt.step()
    assert loss < 0.3


# ------------------------------------------------------------------ the PyTorch twins
def _twin_check(cls, variant, T, torch):
    from whitebox.torch_twins.crate_lm import torch_lm_from
    m = cls(11, 8, 12, 3, 3, variant=variant, expansion=2, dtype="float64", seed=1)
    x, y = ids((3, T), 11), ids((3, T), 11, seed=1)
    tm = torch_lm_from(m)
    logits_t = tm(torch.tensor(x))
    loss_t = torch.nn.functional.cross_entropy(logits_t.reshape(-1, 11),
                                               torch.tensor(y).reshape(-1))
    loss_t.backward()
    logits = m(x)
    loss, d = token_cross_entropy(logits, y)
    m.zero_grad()
    m.backward(d)
    np.testing.assert_allclose(logits, logits_t.detach().numpy(), rtol=1e-12, atol=1e-14)
    assert abs(loss - loss_t.item()) < 1e-13
    grads_t = dict(tm.named_parameters())
    assert set(grads_t) == set(m.grads())          # the tied head is one parameter there too
    for k, g in m.grads().items():
        np.testing.assert_allclose(g, grads_t[k].grad.numpy(), rtol=1e-9, atol=1e-14,
                                   err_msg=k)


@pytest.mark.parametrize("T", [8, 5])
@pytest.mark.parametrize("variant", VARIANTS)
def test_equals_the_official_causal_files(variant, T):
    torch = pytest.importorskip("torch")
    _twin_check(CRATEGPT, variant, T, torch)


@pytest.mark.parametrize("variant", VARIANTS)
def test_masked_model_equals_the_twin_without_the_mask(variant):
    torch = pytest.importorskip("torch")
    _twin_check(CRATEBERT, variant, 6, torch)


@pytest.mark.parametrize("variant", VARIANTS)
def test_official_modules_load_the_export_strictly(variant):
    torch = pytest.importorskip("torch")
    from whitebox.torch_twins.crate_lm import TorchCRATEGPT
    m = tiny(variant=variant)
    tm = TorchCRATEGPT(**TINY, variant=variant).double()
    state = m.to_official_state(m.state_dict())
    tm.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()})
    back = {k: v.detach().numpy() for k, v in tm.state_dict().items()}
    assert set(back) == set(state)
    m2 = CRATEGPT(**TINY, variant=variant, dtype="float64", seed=5)
    m2.load_state_dict(m2.from_official_state(back))
    x = ids((2, 5))
    np.testing.assert_allclose(m2(x), tm(torch.tensor(x)).detach().numpy(), rtol=1e-12,
                               atol=1e-14)


@pytest.mark.gpu
def test_numpy_and_cupy_agree_float32(xp):
    if xp is np:
        pytest.skip("compares NumPy with CuPy")
    from whitebox import backend
    for cls in MODELS:
        m_np, m_gpu = tiny(cls, dtype="float32"), tiny(cls, dtype="float32").to("cupy")
        x = ids((2, 5))
        out = m_np(x)
        out_g = m_gpu(backend.to_device(x, "cupy"))
        np.testing.assert_allclose(backend.to_numpy(out_g), out, rtol=1e-4, atol=1e-5)
        y = ids((2, 5), seed=1)
        _, d = token_cross_entropy(out, y)
        _, dg = token_cross_entropy(out_g, backend.to_device(y, "cupy"))
        m_np.backward(d)
        m_gpu.backward(dg)
        for k, g in m_np.grads().items():
            np.testing.assert_allclose(backend.to_numpy(m_gpu.grads()[k]), g, rtol=1e-3,
                                       atol=1e-5, err_msg=k)
    m = tiny(dtype="float32").to("cupy")
    a = m.generate(backend.to_device(ids((1, 2)), "cupy"), 4, rng=0)
    assert a.shape == (1, 6)


# ------------------------------------------------------------------ through whitebox.interop
@pytest.mark.parametrize("variant", VARIANTS)
def test_interop_npz_round_trip_through_the_hooks(tmp_path, variant):
    from whitebox.interop import export_npz, load_official, read_state_dict
    a = tiny(variant=variant)
    b = CRATEGPT(**TINY, variant=variant, dtype="float64", seed=2)
    path = export_npz(a, tmp_path / "w.npz")
    assert "lm_head.weight" in read_state_dict(path)
    load_official(b, path)
    for k, v in a.state_dict().items():
        np.testing.assert_array_equal(v, b.state_dict()[k], err_msg=k)


@pytest.mark.parametrize("variant", VARIANTS)
def test_interop_pth_loads_strictly_into_the_official_modules(tmp_path, variant):
    torch = pytest.importorskip("torch")
    from whitebox.interop import export_pth, load_official
    from whitebox.torch_twins.crate_lm import TorchCRATEGPT
    m = tiny(variant=variant)
    tm = TorchCRATEGPT(**TINY, variant=variant).double()
    tm.load_state_dict(torch.load(export_pth(m, tmp_path / "w.pth")), strict=True)
    x = ids((2, 5))
    np.testing.assert_allclose(tm(torch.tensor(x)).detach().numpy(), m(x), rtol=1e-12,
                               atol=1e-14)
    torch.save(TorchCRATEGPT(**TINY, variant=variant).state_dict(), tmp_path / "t.pth")
    load_official(m, tmp_path / "t.pth")             # an official file, alias and buffers included


def test_overcomplete_ista_never_forms_the_gram_matrix():
    """(c1 D^T) D, not c1 (D^T D): nothing of shape (m, m) is built (d m^2 work per call)."""
    from whitebox.functional import overcomplete_ista_forward
    x = np.random.default_rng(0).standard_normal((3, 4))
    D = np.random.default_rng(1).standard_normal((4, 16))
    _, cache = overcomplete_ista_forward(x, D, 0.1, 0.1)
    assert all(getattr(a, "shape", None) != (16, 16) for a in cache)


def test_generate_refuses_a_prompt_dtype_too_narrow_for_the_vocabulary():
    m = CRATEGPT(vocab_size=300, block_size=8, dim=8, depth=1, heads=2, seed=0)
    prompt = np.zeros((1, 2), np.uint8)
    with pytest.raises(ValueError, match=r"idx has dtype uint8, which cannot hold the ids up to "
                                         r"vocab_size - 1 = 299"):
        m.generate(prompt, 3)
    assert m.generate(prompt.astype(np.int16), 3).dtype == np.int16     # wide enough: kept


@pytest.mark.parametrize("bad", ["a", -1, 1.5])
def test_seeds_and_generators_are_named(bad):
    with pytest.raises(ValueError, match=rf"seed must be a non-negative integer, a numpy "
                                         rf"Generator or None, got {bad!r}"):
        CRATEGPT(vocab_size=7, block_size=8, dim=8, depth=1, heads=2, seed=bad)
    m = CRATEGPT(vocab_size=7, block_size=8, dim=8, depth=1, heads=2, seed=0)
    with pytest.raises(ValueError, match=r"rng must be a non-negative integer"):
        m.generate(np.zeros((1, 2), np.int64), 1, rng=bad)


def _argmax_path(m, prompt, steps):
    out = prompt
    for _ in range(steps):
        logits = m.forward(out[:, -m.block_size:])[:, -1]
        m._cache = None
        out = np.concatenate([out, logits.argmax(axis=1)[:, None]], axis=1)
    return out


@pytest.mark.parametrize("temperature", [1e-320, 1e-300, 5e-324])
def test_tiny_temperature_is_the_argmax_path(temperature):
    """logits / 1e-320 would overflow to inf and the NaN row fall to id 0: it is the argmax."""
    m = tiny()
    prompt = ids((2, 3))
    want = _argmax_path(m, prompt, 4)
    assert (want[:, 3:] != 0).any()                 # the wrong answer would be all zeros
    np.testing.assert_array_equal(m.generate(prompt, 4, temperature=temperature, rng=0), want)


def test_long_prompt_ids_before_the_window_are_checked():
    m = tiny()
    prompt = ids((1, 8))                             # longer than block_size 5
    prompt[0, 0] = 99                                # outside the window, outside the vocabulary
    with pytest.raises(ValueError, match=r"idx must lie in \[0, 7\), found 99"):
        m.generate(prompt, 2)
    prompt[0, 0] = 3
    assert m.generate(prompt, 2).shape == (1, 10)    # a long valid prompt still works


def test_non_finite_dlogits_are_refused():
    m = tiny()
    logits = m(ids((2, 4)))
    bad = np.zeros_like(logits)
    bad[1, 2, 3] = np.nan
    with pytest.raises(ValueError, match="dlogits contains NaN"):
        m.backward(bad)
