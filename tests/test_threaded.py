"""Data parallelism over threads (whitebox/training/threaded.py) equals one step on the whole batch."""
import threading

import numpy as np
import pytest

from whitebox.models import CRATE, CRATEMAE, CRATEAlpha, CRATEGPT
from whitebox.optim import AdamW
from whitebox.train import get_task
from whitebox.training import make_config
from whitebox.nn import Linear, Module
from whitebox.training.threaded import ShardThreads, batch_rows, plan, split_batch


def _task(name, **given):
    cls = get_task(name)
    return cls(make_config(cls, given, fast=True))


def _grads(model):
    return {k: v.copy() for k, v in model.grads().items()}


def _one_step_vs_shards(task, build, batch, workers):
    """One train_step on the whole batch vs ShardThreads' step: each shard went to its own
    replica, all but one in the pool's threads, the shards add up to the batch, and the
    results agree."""
    whole, split = build(), build()
    whole.zero_grad()
    loss, sums = task.train_step(whole, batch)
    engine = ShardThreads(split, workers)
    seen = []                                       # (replica, thread, rows) of every shard

    def recording_step(model, shard):
        seen.append((id(model), threading.get_ident(), batch_rows(shard)))
        return task.train_step(model, shard)
    try:
        split.zero_grad()
        loss_s, sums_s = engine.step(recording_step, batch)
    finally:
        engine.close()
    rows, parts = batch_rows(batch), min(workers, batch_rows(batch))
    assert len(seen) == parts and sum(r for _, _, r in seen) == rows
    assert len({m for m, _, _ in seen}) == parts                 # one replica per shard
    main = threading.get_ident()                         # shard 0 here, the rest in the pool
    assert [t == main for _, t, _ in seen].count(True) == 1
    np.testing.assert_allclose(float(loss_s), float(loss), rtol=1e-5)
    assert sums_s.keys() == sums.keys()
    for k in sums:
        np.testing.assert_allclose(float(sums_s[k]), float(sums[k]), rtol=1e-5, err_msg=k)
    expected, got = _grads(whole), split.grads()
    assert expected.keys() == got.keys()
    for k, g in expected.items():
        scale = float(np.abs(g).max()) or 1.0
        np.testing.assert_allclose(got[k], g, rtol=0, atol=2e-5 * scale, err_msg=k)
    return engine


def _images(n, size=28, channels=1, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.random((n, channels, size, size), dtype=np.float32),
            rng.integers(0, 10, n))


@pytest.mark.parametrize("rows", [1, 2])
def test_a_batch_shorter_than_the_workers_runs_on_fewer_shards(rows):
    """The last batch of an epoch may hold fewer samples than there are threads."""
    task = _task("classify")
    build = lambda: CRATE(image_size=28, patch_size=7, num_classes=10, dim=16, depth=1,  # noqa: E731
                          heads=2, dim_head=8, channels=1, seed=0)
    _one_step_vs_shards(task, build, _images(rows), 3)


@pytest.mark.parametrize("workers", [2, 3])
def test_classify_crate_shards_equal_the_whole_batch(workers):
    task = _task("classify")
    build = lambda: CRATE(image_size=28, patch_size=7, num_classes=10, dim=32, depth=2,  # noqa: E731
                          heads=2, dim_head=16, channels=1, seed=0)
    _one_step_vs_shards(task, build, _images(11), workers)       # 11 rows: unequal shards


def test_classify_crate_alpha_shards_equal_the_whole_batch():
    task = _task("classify", model="crate-alpha")
    build = lambda: CRATEAlpha(image_size=28, patch_size=7, num_classes=10, dim=32, depth=2,  # noqa: E731
                               heads=2, dim_head=16, channels=1, seed=0)
    _one_step_vs_shards(task, build, _images(8), 2)


def test_language_model_shards_equal_the_whole_batch():
    task = _task("lm")
    task.setup(np.random.default_rng(0))
    batch = next(iter(task.batches()))
    _one_step_vs_shards(task, task.build_model, batch, 2)


def test_masked_lm_weights_shards_by_their_masked_tokens():
    """Shards with different numbers of masked tokens: weighting by rows would be wrong."""
    task = _task("mlm")
    task.setup(np.random.default_rng(0))
    inputs, targets = next(iter(task.batches()))
    targets = targets.copy()
    first = targets[:len(targets) // 2]
    rows, cols = np.nonzero(first != -1)
    first[rows[::2], cols[::2]] = -1                             # half the first shard's targets
    batch = (inputs, targets)
    halves = split_batch(batch, 2)
    counts = [int((targets != -1).sum()) for _, targets in halves]
    assert counts[0] != counts[1], counts                       # else the test proves nothing
    _one_step_vs_shards(task, task.build_model, batch, 2)


def test_mae_masks_are_drawn_for_the_whole_batch():
    task = _task("mae")
    build = lambda: CRATEMAE(28, 7, dim=32, depth=1, heads=2, decoder_depth=1,  # noqa: E731
                             channels=1, seed=0)
    images, labels = _images(6)
    model = build()
    batch = task.draw(model, (images, labels))
    assert batch[2].shape == (6, model.num_patches)
    _one_step_vs_shards(task, build, batch, 2)


def test_replica_shares_parameters_not_gradients_or_caches():
    model = CRATE(image_size=28, patch_size=7, num_classes=10, dim=32, depth=1, heads=2,
                  dim_head=16, channels=1, seed=0)
    twin = model.replica()
    for (name, p), (_, q) in zip(model.parameters().items(), twin.parameters().items()):
        assert p is q, name
    for (name, g), (_, h) in zip(model.grads().items(), twin.grads().items()):
        assert g is not h, name
    images, labels = _images(4)
    twin(images)
    with pytest.raises(RuntimeError, match="before forward"):
        model.backward(np.ones((4, 10), np.float32))           # the twin's forward left no cache here
    opt = AdamW(model, lr=0.1)
    for g in model.grads().values():
        g.fill(1.0)
    before = {k: v.copy() for k, v in twin.parameters().items()}
    opt.step()
    assert any(not np.array_equal(before[k], v) for k, v in twin.parameters().items())


def test_replica_points_tied_references_at_twins():
    """A module that refers to another module of the tree outside its children (a tied
    weight) refers to that module's twin in the replica, never to the original."""
    class Tied(Module):
        def __init__(self):
            super().__init__()
            self.encoder = Linear(3, 4)
            object.__setattr__(self, "decoder_source", self.encoder)   # not a child

    model = Tied()
    assert "decoder_source" not in model._modules
    twin = model.replica()
    assert twin.encoder is not model.encoder
    assert twin.decoder_source is twin.encoder
    assert twin.encoder.param("weight") is model.encoder.param("weight")   # shared arrays
    gpt = CRATEGPT(vocab_size=11, block_size=8, dim=16, depth=1, heads=2)
    originals = {id(m) for _, m in gpt.named_modules()}
    for _, m in gpt.replica().named_modules():
        for name, value in vars(m).items():
            if isinstance(value, Module):
                assert id(value) not in originals, f"{type(m).__name__}.{name}"


def test_stochastic_steps_keep_one_thread():
    def crate(dropout):
        return CRATE(28, 7, 10, 16, 1, 2, 8, channels=1, dropout=dropout)
    task = _task("classify", threads=2)
    assert crate(0.1).draws_in_training() and not crate(0.0).draws_in_training()
    assert plan(task.cfg, task, crate(0.1)) == "blas"
    assert plan(task.cfg, task, crate(0.0)) == "shards"
    one = _task("classify", threads=1)
    assert plan(one.cfg, one, crate(0.0)) == "blas"
    mae = _task("mae", threads=2)
    model = CRATEMAE(28, 7, dim=32, depth=1, heads=2, decoder_depth=1, channels=1)
    assert model.draws_in_training()
    assert plan(mae.cfg, mae, model) == "shards"                # its masks come from draw()


def test_split_batch_names_what_is_wrong():
    x, y = np.zeros((5, 2)), np.arange(5)
    shards = split_batch((x, y), 2)
    assert [len(s[1]) for s in shards] == [2, 3] or [len(s[1]) for s in shards] == [3, 2]
    np.testing.assert_array_equal(np.concatenate([s[1] for s in shards]), y)
    with pytest.raises(ValueError, match="last batch of an epoch"):
        split_batch((x[:1], y[:1]), 2)
    with pytest.raises(ValueError, match="differ in length"):
        split_batch((x, y[:3]), 2)
    with pytest.raises(TypeError, match="tuples of arrays"):
        split_batch(x, 2)
    with pytest.raises(ValueError, match="workers"):
        ShardThreads(CRATE(28, 7, 10, 16, 1, 2, 8, channels=1), 1)


def test_shard_threads_refuse_a_gpu_model(monkeypatch):
    model = CRATE(28, 7, 10, 16, 1, 2, 8, channels=1)
    monkeypatch.setattr(type(model), "backend", property(lambda self: "cupy"))
    with pytest.raises(ValueError, match="NumPy models"):
        ShardThreads(model, 2)


def test_training_with_two_threads_follows_one_thread(tmp_path, capsys):
    """The whole loop: --threads 2 splits each batch, and the run follows --threads 1."""
    from conftest import write_bar_mnist
    from whitebox import threads
    from whitebox import train as train_job
    (tmp_path / "data").mkdir()
    folder = write_bar_mnist(tmp_path / "data")
    runs = {}
    before = threads.get_threads()
    try:
        for n in (1, 2):
            runs[n] = train_job.main(["--fast", "--dataset", "mnist", "--data", str(folder),
                                      "--out", str(tmp_path / f"t{n}"), "--no-progress",
                                      "--no-figures", "--epochs", "2", "--threads", str(n)])
    finally:
        threads.set_threads(before)
    out = capsys.readouterr().out
    assert out.count("2 threads, each batch split in 2") == 1
    for a, b in zip(runs[1], runs[2]):
        for k in ("train_loss", "train_acc", "test_loss", "test_acc"):
            np.testing.assert_allclose(b[k], a[k], rtol=2e-4, atol=1e-5, err_msg=k)


def test_worker_threads_end_with_the_engine():
    import gc

    def workers():
        return [t for t in threading.enumerate() if t.name.startswith("whitebox-shard")]
    before = len(workers())
    engine = ShardThreads(CRATE(28, 7, 10, 16, 1, 2, 8, channels=1), 2)
    task = _task("classify")
    engine.step(task.train_step, _images(4))
    assert len(workers()) == before + 1
    del engine                                     # no close(): e.g. a run stopped by an error
    gc.collect()
    for t in workers()[before:]:
        t.join(timeout=5)
    assert len(workers()) == before
