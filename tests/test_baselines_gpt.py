"""GPT: nanoGPT's names and count, gradient check, key/value cache, PyTorch twin, files."""
import numpy as np
import pytest

from whitebox.interop import export_npz, load_official, read_state_dict
from whitebox.models import CRATEGPT, GPT, gpt2
from whitebox.models.gpt import CONV1D_WEIGHTS, hf_gpt2_state

from common_checks import assert_same_state, assert_token_model_gradients, assert_twin_step


def tiny(**kw):
    cfg = dict(vocab_size=11, block_size=8, dim=8, depth=2, heads=2, dtype="float64", seed=1)
    cfg.update(kw)
    return GPT(**cfg)


def test_gpt2_has_nanogpts_parameter_count():
    assert gpt2().num_params() == 124_475_904


def test_names_are_nanogpts():
    names = set(tiny().state_dict())
    for n in ("transformer.wte.weight", "transformer.wpe.weight", "transformer.ln_f.bias",
              "transformer.h.1.ln_1.weight", "transformer.h.1.attn.c_attn.weight",
              "transformer.h.1.attn.c_attn.bias", "transformer.h.1.attn.c_proj.weight",
              "transformer.h.1.ln_2.bias", "transformer.h.1.mlp.c_fc.weight",
              "transformer.h.1.mlp.c_proj.bias"):
        assert n in names
    assert len(names) == 2 + 2 + 2 * 12
    assert not any("bias" in n for n in tiny(bias=False).state_dict())


@pytest.mark.parametrize("bias", [True, False])
def test_whole_model_gradient_check(rng, bias):
    model = tiny(bias=bias)
    idx = rng.integers(0, 11, size=(2, 6))
    assert_token_model_gradients(model, [idx])


def test_logits_at_a_position_ignore_later_tokens(rng):
    model = tiny()
    idx = rng.integers(0, 11, size=(1, 7))
    a = model(idx)
    idx[0, 5] = (idx[0, 5] + 1) % 11
    np.testing.assert_array_equal(model(idx)[:, :5], a[:, :5])


def test_cached_forward_equals_the_full_forward(rng):
    model = tiny().eval()
    idx = rng.integers(0, 11, size=(2, 7))
    full = model(idx)
    cache = model.new_cache()
    parts = [model.forward_cached(idx[:, :3], cache), model.forward_cached(idx[:, 3:4], cache),
             model.forward_cached(idx[:, 4:], cache)]
    np.testing.assert_allclose(np.concatenate(parts, axis=1), full, atol=1e-12)
    k, v = cache["past"][1]
    assert k.shape == v.shape == (2, 2, 7, 4) and cache["length"] == 7


def test_generate_with_cache_equals_generate_without(rng):
    model = tiny()
    idx = rng.integers(0, 11, size=(2, 3))
    a = model.generate(idx, 9, temperature=0.8, top_k=5, rng=3)      # slides past block_size
    b = model.generate(idx, 9, temperature=0.8, top_k=5, rng=3, use_cache=False)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (2, 12)


def test_cache_memory_is_twice_crate_gpts():
    gpt = tiny(dtype="float32")
    crate = CRATEGPT(11, 8, 8, 2, 2)
    cache = crate.new_cache()
    crate.forward_cached(np.zeros((1, 5), dtype=np.int64), cache)
    crate_bytes = sum(p.nbytes for p in cache["past"]) / 5
    assert gpt.cache_bytes_per_token() == 2 * crate_bytes == 2 * 2 * 8 * 4


def test_equals_a_torch_twin_in_float64(rng):
    pytest.importorskip("torch")
    from torch_baselines import TorchGPT, load_into
    for bias in (True, False):
        model = tiny(bias=bias)
        twin = load_into(TorchGPT(11, 8, 8, 2, 2, bias), model.to_official_state(
            model.state_dict()))
        idx = rng.integers(0, 11, size=(3, 8))
        targets = rng.integers(0, 11, size=(3, 8))
        assert_twin_step(model, twin, (idx,), targets)


def test_nanogpt_files_round_trip(tmp_path):
    model, other = tiny(seed=1), tiny(seed=2)
    export_npz(model, tmp_path / "gpt.npz")
    assert "lm_head.weight" in read_state_dict(tmp_path / "gpt.npz")
    load_official(other, tmp_path / "gpt.npz")
    assert_same_state(model, other)


@pytest.mark.parametrize("prefix", ["", "transformer."])
def test_reads_a_hugging_face_gpt2_file(tmp_path, prefix):
    """GPT2Model / GPT2LMHeadModel layout: Conv1D weights (in, out), mask buffers."""
    model, other = tiny(seed=1), tiny(seed=2)
    hf = hf_gpt2_state(model.state_dict(), model.depth)
    assert hf["h.0.attn.c_attn.weight"].shape == (8, 24)
    hf = {prefix + k: v for k, v in hf.items()}
    for i in range(model.depth):
        hf[f"{prefix}h.{i}.attn.bias"] = np.tril(np.ones((8, 8)))[None, None]
        hf[f"{prefix}h.{i}.attn.masked_bias"] = np.array(-1e4)
    if prefix:
        hf["lm_head.weight"] = hf["transformer.wte.weight"]
    np.savez(tmp_path / "hf.npz", **hf)
    load_official(other, tmp_path / "hf.npz")
    assert_same_state(model, other)
    assert any(k.endswith(CONV1D_WEIGHTS[3]) for k in hf)


def test_bad_inputs_are_refused(rng):
    model = tiny()
    with pytest.raises(ValueError, match=r"idx has T = 9 tokens .*block_size = 8"):
        model(np.zeros((1, 9), dtype=np.int64))
    with pytest.raises(ValueError, match=r"idx must lie in \[0, 11\), found 11"):
        model(np.full((1, 3), 11))
    cache = model.new_cache()
    model.forward_cached(np.zeros((2, 6), dtype=np.int64), cache)
    with pytest.raises(ValueError, match=r"the cache holds 6 tokens; 3 more exceed"):
        model.forward_cached(np.zeros((2, 3), dtype=np.int64), cache)
    with pytest.raises(ValueError, match=r"cache holds 2 sequences, idx has 1"):
        model.forward_cached(np.zeros((1, 1), dtype=np.int64), cache)
    with pytest.raises(ValueError, match=r"dim \(8\) must be divisible by heads \(3\)"):
        tiny(heads=3)
