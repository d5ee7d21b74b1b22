"""BERT: Hugging Face's names and count, a gradient check, a PyTorch twin, files."""
import numpy as np
import pytest

from whitebox.interop import export_npz, load_official, read_state_dict
from whitebox.models import BERT, bert_base

from common_checks import assert_same_state, assert_token_model_gradients, assert_twin_step


def tiny(**kw):
    """No padding row by default: the [PAD] lookup's missing gradient (tested below) would
    make finite differences and the plain-Embedding twin disagree on purpose."""
    cfg = dict(vocab_size=13, block_size=8, dim=8, depth=2, heads=2, intermediate=12,
               dtype="float64", seed=1, pad_token_id=None)
    cfg.update(kw)
    return BERT(**cfg)


def test_bert_base_has_hugging_faces_count():
    assert bert_base().num_params() == 109_514_298


def test_names_are_hugging_faces():
    names = set(tiny().state_dict())
    layer = "bert.encoder.layer.1."
    for n in ("bert.embeddings.word_embeddings.weight",
              "bert.embeddings.position_embeddings.weight",
              "bert.embeddings.token_type_embeddings.weight", "bert.embeddings.LayerNorm.weight",
              layer + "attention.self.query.weight", layer + "attention.self.key.bias",
              layer + "attention.self.value.weight", layer + "attention.output.dense.weight",
              layer + "attention.output.LayerNorm.bias", layer + "intermediate.dense.weight",
              layer + "output.dense.bias", layer + "output.LayerNorm.weight",
              "cls.predictions.transform.dense.weight", "cls.predictions.transform.LayerNorm.bias",
              "cls.predictions.bias"):
        assert n in names, n
    assert len(names) == 5 + 2 * 16 + 5


def test_whole_model_gradient_check(rng):
    model = tiny()
    idx = rng.integers(0, 13, size=(2, 5))
    tt = np.array([[0, 0, 1, 1, 1], [0, 1, 1, 1, 1]])
    assert_token_model_gradients(model, [idx, tt])


def test_every_position_sees_the_whole_sequence(rng):
    model = tiny()
    idx = rng.integers(0, 13, size=(1, 6))
    a = model(idx)
    idx[0, 5] = (idx[0, 5] + 1) % 13
    assert not np.allclose(model(idx)[:, 0], a[:, 0])


def test_equals_a_torch_twin_in_float64(rng):
    pytest.importorskip("torch")
    from torch_baselines import TorchBERT, load_into
    model = tiny()
    twin = load_into(TorchBERT(13, 8, 8, 2, 2, 12), model.to_official_state(model.state_dict()))
    idx = rng.integers(0, 13, size=(3, 7))
    tt = rng.integers(0, 2, size=(3, 7))
    targets = np.where(rng.random((3, 7)) < 0.4, idx, -1)
    targets[0, 0] = idx[0, 0]
    assert_twin_step(model, twin, (idx, tt), targets)


def test_hugging_face_files_round_trip(tmp_path):
    model, other = tiny(seed=1), tiny(seed=2)
    export_npz(model, tmp_path / "bert.npz")
    raw = read_state_dict(tmp_path / "bert.npz")
    assert "cls.predictions.decoder.weight" in raw and "cls.predictions.decoder.bias" in raw
    raw["bert.embeddings.position_ids"] = np.arange(8)[None]
    raw["bert.pooler.dense.weight"] = np.zeros((8, 8))
    load_official(other, raw)
    assert_same_state(model, other)
    raw["cls.predictions.decoder.bias"] = raw["cls.predictions.decoder.bias"] + 1
    with pytest.raises(ValueError, match="decoder.bias differs"):
        load_official(other, raw)


def test_token_types_count_and_bad_ones_are_refused(rng):
    model = tiny()
    idx = rng.integers(0, 13, size=(1, 5))
    assert not np.allclose(model(idx, np.ones((1, 5), dtype=np.int64)), model(idx))
    with pytest.raises(ValueError, match=r"token_type_ids must lie in \[0, 2\), found 2"):
        model(idx, np.full((1, 5), 2))
    with pytest.raises(ValueError, match=r"token_type_ids have shape \(1, 4\), expected \(1, 5\)"):
        model(idx, np.zeros((1, 4), dtype=np.int64))


def test_the_padding_row_starts_at_zero_and_its_lookup_has_no_gradient(rng):
    model = tiny(pad_token_id=0)
    assert not model.bert.embeddings.word_embeddings.param("weight")[0].any()
    plain = tiny()
    plain.load_state_dict(model.state_dict())
    idx = rng.integers(0, 13, size=(2, 6))
    idx[0, 2] = 0
    dlogits = rng.standard_normal((2, 6, 13))
    grads = []
    for m in (model, plain):
        m.zero_grad()
        m(idx)
        m.backward(dlogits)
        grads.append(m.grads()["bert.embeddings.word_embeddings.weight"])
    # only the [PAD] row differs: by the lookup's share, which the padded model leaves out
    assert np.abs(grads[0][1:] - grads[1][1:]).max() < 1e-12
    assert np.abs(grads[0][0] - grads[1][0]).max() > 1e-6
    with pytest.raises(ValueError, match="pad_token_id must be None or an id in"):
        tiny(pad_token_id=13)
