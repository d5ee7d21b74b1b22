"""Data parallelism over threads (whitebox/training/threaded.py) equals one step on the whole batch."""
import threading

import numpy as np
import pytest

from whitebox.models import CRATE, CRATEMAE, CRATEAlpha, CRATEGPT
from whitebox.optim import AdamW
from whitebox.train import get_task
from whitebox.training import make_config
from whitebox.nn import Linear, Module
from whitebox.training.threaded import (ShardThreads, batch_rows, plan, shard_generator,
                                        split_batch)


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


def test_snapshot_shares_nothing_training_changes():
    """Module.snapshot (the held-out evaluation in a second thread): copies of the parameters,
    a weight shared by two modules still shared, copies of the generators, its own caches."""
    model = CRATE(image_size=28, patch_size=7, num_classes=10, dim=32, depth=1, heads=2,
                  dim_head=16, channels=1, dropout=0.1, seed=0)
    head, shared = model.mlp_head[1], model.transformer.layers[0][0].fn.to_out[0]
    head._params["extra"] = shared.param("bias")       # one array in two modules
    snap = model.snapshot()
    for (name, p), (_, q) in zip(model.parameters().items(), snap.parameters().items()):
        assert p is not q and np.array_equal(p, q), name
    assert snap.mlp_head[1].param("extra") is snap.transformer.layers[0][0].fn.to_out[0].param(
        "bias")
    originals = {id(g) for g in model.generators().values()}
    assert originals and not originals & {id(g) for g in snap.generators().values()}
    images, _ = _images(4)
    model.eval(), snap.eval()
    expected = model(images)
    model.train()
    assert not snap.training
    model(images)                                       # a training forward draws dropout
    for p in model.parameters().values():
        p += 1
    np.testing.assert_array_equal(snap(images), expected)
    assert [g.bit_generator.state for g in snap.generators().values()] != \
        [g.bit_generator.state for g in model.generators().values()]


def test_plan_shards_dropout_but_not_a_coupled_loss():
    def crate(dropout):
        return CRATE(28, 7, 10, 16, 1, 2, 8, channels=1, dropout=dropout)
    task = _task("classify", threads=2)
    assert crate(0.1).draws_in_training() and not crate(0.0).draws_in_training()
    assert plan(task.cfg, task, crate(0.1)) == "shards"           # each shard its own generator
    assert plan(task.cfg, task, crate(0.0)) == "shards"
    one = _task("classify", threads=1)
    assert plan(one.cfg, one, crate(0.0)) == "blas"
    mae = _task("mae", threads=2)
    model = CRATEMAE(28, 7, dim=32, depth=1, heads=2, decoder_depth=1, channels=1)
    assert model.draws_in_training()
    assert plan(mae.cfg, mae, model) == "shards"                # its masks come from draw()
    from whitebox.models import BERT
    bert = BERT(vocab_size=11, block_size=8, dim=16, depth=1, heads=2, dropout=0.1)
    mlm = _task("mlm", threads=2)
    assert bert.draws_in_training() and plan(mlm.cfg, mlm, bert) == "shards"   # HF's dropout
    ssl = get_task("ssl")
    assert ssl.step_splits(None, None) is False                  # its loss couples the batch
    assert plan(task.cfg, ssl.__new__(ssl), crate(0.0)) == "blas"


def test_shard_generator_is_a_function_of_the_state():
    g = np.random.default_rng(5)
    a, b = shard_generator(g, 1), shard_generator(g, 1)
    assert a.random() == b.random()                                # same state, same stream
    assert shard_generator(g, 2).random() != shard_generator(g, 1).random()
    before = g.bit_generator.state
    shard_generator(g, 1)
    assert g.bit_generator.state == before                         # g is not advanced
    g.random()
    assert shard_generator(g, 1).random() != b.random()            # the next step: new masks
    mt = np.random.Generator(np.random.MT19937(3))                # any bit generator
    assert isinstance(shard_generator(mt, 1).bit_generator, np.random.MT19937)


def _dropout_gpt():
    from whitebox.models import GPT
    return GPT(vocab_size=13, block_size=8, dim=16, depth=2, heads=2, dropout=0.3, seed=0)


def _lm_step(model, batch):
    from whitebox.functional import token_cross_entropy
    x, y = batch
    loss, d = token_cross_entropy(model(x), y)
    model.backward(d)
    return loss, {"count": np.asarray(y.size)}


def test_dropout_shards_draw_from_derived_generators():
    """Shard 0 on the model's generators, shard 1 on shard_generator(g, 1) of their states
    before the step: the step equals that computed by hand, and repeats exactly."""
    rng = np.random.default_rng(0)
    batch = (rng.integers(0, 13, (6, 8)), rng.integers(0, 13, (6, 8)))
    model = _dropout_gpt()
    assert model.draws_in_training() and len(model.generators()) >= 1
    engine = ShardThreads(model, 2)
    try:
        model.zero_grad()
        loss, _ = engine.step(_lm_step, batch)
        got = _grads(model)
        after = {k: g.bit_generator.state for k, g in model.generators().items()}
    finally:
        engine.close()
    # by hand: a fresh model (same generator states) on shard 0, a replica on shard 1
    ref = _dropout_gpt()
    twin, derived = ref.replica(), {}               # one derived generator per model generator
    for (_, m), (_, t) in zip(ref.named_modules(), twin.named_modules()):
        if isinstance(m.__dict__.get("rng"), np.random.Generator):
            g = derived.setdefault(id(m.rng), shard_generator(m.rng, 1))
            object.__setattr__(t, "rng", g)
    s0, s1 = split_batch(batch, 2)
    ref.zero_grad()
    twin.zero_grad()
    l0, _ = _lm_step(ref, s0)
    l1, _ = _lm_step(twin, s1)
    np.testing.assert_allclose(float(loss), 0.5 * (float(l0) + float(l1)), rtol=1e-6)
    for k, g in _grads(ref).items():
        np.testing.assert_allclose(got[k], 0.5 * (g + twin.grads()[k]), rtol=0, atol=1e-6,
                                   err_msg=k)
    # only shard 0's draws moved the model's generators (what a checkpoint saves)
    assert after == {k: g.bit_generator.state for k, g in ref.generators().items()}
    # the two shards draw different masks: the same rows in both give different losses
    same = (np.concatenate([s0[0], s0[0]]), np.concatenate([s0[1], s0[1]]))
    losses = []

    def recording(m, b):
        loss, sums = _lm_step(m, b)
        losses.append(float(loss))
        return loss, sums
    again = _dropout_gpt()
    e2 = ShardThreads(again, 2)
    try:
        again.zero_grad()
        e2.step(recording, same)
    finally:
        e2.close()
    assert len(losses) == 2 and losses[0] != losses[1]


def test_training_with_dropout_on_two_threads_resumes_exactly(tmp_path, capsys):
    """--threads 2 with dropout runs sharded; stopped after epoch 1 and resumed, it ends
    where the uninterrupted run ends (the checkpoint holds the model's generators)."""
    from conftest import write_bar_mnist
    from whitebox import threads
    from whitebox import train as train_job
    (tmp_path / "data").mkdir()
    folder = write_bar_mnist(tmp_path / "data")
    common = ["--fast", "--dataset", "mnist", "--data", str(folder), "--no-progress",
              "--no-figures", "--epochs", "2", "--threads", "2", "--dropout", "0.2"]
    before = threads.get_threads()
    try:
        full = train_job.main(common + ["--out", str(tmp_path / "full")])
        train_job.main(common + ["--out", str(tmp_path / "cut"), "--stop-after", "1"])
        resumed = train_job.main(common + ["--out", str(tmp_path / "cut"), "--resume"])
    finally:
        threads.set_threads(before)
    assert capsys.readouterr().out.count("2 threads, each batch split in 2") == 3
    assert resumed[-1]["epoch"] == full[-1]["epoch"] == 2
    for k in ("train_loss", "test_loss", "test_acc"):
        assert resumed[-1][k] == full[-1][k], k


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
