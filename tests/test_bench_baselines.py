"""benchmarks/bench_baselines.py: the sharded step it times is the one-thread step, and the
PyTorch twin it times holds the same model."""
import numpy as np
import pytest

from conftest import load_script

TINY = {
    "vit": dict(image_size=32, patch_size=8, num_classes=10, dim=16, depth=1, heads=2, batch=5),
    "gpt": dict(vocab_size=11, block_size=12, dim=16, depth=1, heads=2, batch=5),
    "mae": dict(image_size=32, patch_size=8, dim=16, depth=1, heads=2, decoder_dim=8,
                decoder_depth=1, decoder_heads=2, batch=5),
    "bert": dict(vocab_size=11, block_size=8, dim=16, depth=1, heads=2, batch=5),
}


@pytest.fixture(scope="module")
def bench():
    return load_script("benchmarks/bench_baselines.py")


def _grads(model):
    return {k: g.copy() for k, g in model.grads().items()}


@pytest.mark.parametrize("name", list(TINY))
def test_the_sharded_step_equals_the_one_thread_step(bench, name, monkeypatch):
    models = []
    real = bench.ShardThreads

    def recording(model, workers):
        models.append(model)
        return real(model, workers)
    monkeypatch.setattr(bench, "ShardThreads", recording)
    sharded, one, _ = bench._setup(name, TINY[name], np.random.default_rng(0), 2)
    (model,) = models
    one()
    expected = _grads(model)
    assert any(np.abs(g).max() > 0 for g in expected.values())
    sharded()
    scale = max(float(np.abs(g).max()) for g in expected.values())   # some are round-off
    for k, g in model.grads().items():
        np.testing.assert_allclose(g, expected[k], rtol=0, atol=2e-5 * scale, err_msg=k)
    none, _, _ = bench._setup(name, TINY[name], np.random.default_rng(0), 1)
    assert none is None                                    # one thread: no shards


def test_the_table_names_how_each_column_ran(bench, capsys, monkeypatch):
    monkeypatch.setattr(bench, "CONFIGS", {"gpt": TINY["gpt"]})
    rows = bench.main(["--models", "gpt", "--repeats", "1", "--warmup", "0"])
    out = capsys.readouterr().out
    assert "2 shards in 2 threads, one BLAS thread each" in out and "load average" in out
    assert len(rows) == 1 and rows[0][0] == "gpt" and np.isfinite(rows[0][1:3]).all()
    assert "| whitebox ms | one thread ms | PyTorch eager ms |" in out
