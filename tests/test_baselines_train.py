"""Each baseline learns: a few hundred AdamW steps overfit one small batch (float32)."""
import numpy as np

from whitebox import losses
from whitebox.functional import token_cross_entropy
from whitebox.models import BERT, GPT, MAE, ViT
from whitebox.optim import AdamW


def _train(model, step, n):
    opt = AdamW(model, lr=3e-3, weight_decay=0.0)
    first = None
    for _ in range(n):
        opt.zero_grad()
        loss = float(step())
        first = loss if first is None else first
        opt.step()
    return first, loss


def test_vit_overfits_one_batch(rng):
    model = ViT(8, 4, 4, 16, 2, 2, channels=1, seed=0)
    x = rng.standard_normal((16, 1, 8, 8)).astype(np.float32)
    y = rng.integers(0, 4, 16)

    def step():
        loss, d = losses.cross_entropy(model(x), y)
        model.backward(d)
        return loss
    first, last = _train(model, step, 150)
    assert abs(first - np.log(4)) < 0.3 and last < 0.05


def test_gpt_and_bert_overfit_one_batch(rng):
    for model in (GPT(12, 8, 16, 2, 2, seed=0), BERT(12, 8, 16, 2, 2, seed=0)):
        x = rng.integers(0, 12, (4, 8))
        y = rng.integers(0, 12, (4, 8))

        def step():
            loss, d = token_cross_entropy(model(x), y)
            model.backward(d)
            return loss
        first, last = _train(model, step, 200)
        assert abs(first - np.log(12)) < 0.5 and last < 0.1, type(model).__name__


def test_mae_loss_falls_on_one_batch(rng):
    model = MAE(8, 2, 16, 1, 2, 16, 1, 2, channels=1, seed=0)
    x = rng.standard_normal((4, 1, 8, 8)).astype(np.float32)
    noise = rng.random((4, 16))

    def step():
        loss, _, _ = model(x, noise=noise)
        model.backward()
        return loss
    first, last = _train(model, step, 150)
    assert last < 0.2 * first


def test_gpt_bert_and_mae_capture_the_per_layer_measures(rng):
    """forward(capture=True) and subspaces(l) let whitebox.rate measure the baselines: one
    entry per block, Rc positive, the MLP hidden (GELU) dense, the value bases (K, d, p)."""
    from whitebox.rate import layer_measures, measure_compression
    x = rng.integers(0, 12, (3, 8))
    for model in (GPT(12, 8, 16, 3, 2, dtype="float64", seed=0),
                  BERT(12, 8, 16, 3, 2, dtype="float64", seed=0)):
        rc, nonzero = layer_measures(model, x)
        assert len(rc) == 3 and all(r > 0 for r in rc) and min(nonzero) > 0.9, nonzero
        model.forward(x, capture=True)
        assert model.subspaces(2).shape == (2, 16, 8)
        assert rc[2] == measure_compression(model.captured["mssa_in"][2], model.subspaces(2))
        assert model.captured["code"][0].shape == (3, 8, 64)
    mae = MAE(8, 2, 16, 2, 2, 8, 1, 2, channels=1, dtype="float64", seed=0)
    mae.forward(rng.standard_normal((2, 1, 8, 8)), capture=True)
    enc, dec = mae.captured["encoder"], mae.captured["decoder"]
    assert len(enc["mssa_in"]) == 2 and len(dec["mssa_in"]) == 1
    assert enc["mssa_in"][0].shape == (2, 1 + 4, 16) and dec["mssa_in"][0].shape == (2, 17, 8)
    assert mae.encoder_subspaces(1).shape == (2, 16, 8)
    assert mae.decoder_subspaces(0).shape == (2, 8, 4)
    assert measure_compression(dec["mssa_in"][0], mae.decoder_subspaces(0)) > 0
