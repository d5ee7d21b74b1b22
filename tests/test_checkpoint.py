"""Checkpoints: exact resumption, atomic writes, clear errors for bad files."""
import os

import numpy as np
import pytest

from whitebox import nn
from whitebox.backend import backend_name, to_device, to_numpy
from whitebox.checkpoint import load_arrays, load_checkpoint, save_checkpoint
from whitebox.losses import cross_entropy
from whitebox.optim import SGD, AdamW, WarmupCosine, clip_grad_norm

N_DATA, N_IN, N_CLASSES, BATCH = 48, 6, 3, 8


def make_mlp(hidden=16, seed=0, dropout_seed=0, extra_layer=False):
    layers = [nn.Linear(N_IN, hidden, seed=seed), nn.LayerNorm(hidden), nn.ReLU(),
              nn.Dropout(0.2, seed=np.random.default_rng(dropout_seed)),
              nn.Linear(hidden, N_CLASSES, seed=seed + 1)]
    if extra_layer:
        layers += [nn.ReLU(), nn.Linear(N_CLASSES, N_CLASSES, seed=seed + 2)]
    return nn.Sequential(*layers)


def make_data():
    rng = np.random.default_rng(123)
    X = rng.standard_normal((N_DATA, N_IN)).astype(np.float32)
    y = rng.integers(0, N_CLASSES, size=N_DATA)
    return X, y


def make_training(lr=3e-3, model_seed=0, rng_seed=0):
    model = make_mlp(seed=model_seed, dropout_seed=rng_seed)
    optimizer = AdamW(model, lr=lr, weight_decay=0.05)
    schedule = WarmupCosine(optimizer, warmup_steps=3, total_steps=20, min_lr=1e-4)
    rngs = {"data": np.random.default_rng(rng_seed + 1), "dropout": model[3].rng}
    return model, optimizer, schedule, rngs


def train(model, optimizer, schedule, rngs, data, n_steps):
    """n_steps of minibatch training; returns the losses."""
    X, y = data
    name = model.backend
    losses = []
    for _ in range(n_steps):
        idx = rngs["data"].choice(N_DATA, BATCH, replace=False)
        logits = model(to_device(X[idx], name))
        loss, dlogits = cross_entropy(logits, to_device(y[idx], name))
        model.zero_grad()
        model.backward(dlogits)
        clip_grad_norm(model, 1.0)
        optimizer.step()
        schedule.step()
        losses.append(loss)
    return losses


def test_round_trip_resumes_training_exactly(tmp_path, xp):
    data = make_data()
    model, optimizer, schedule, rngs = make_training()
    train(model, optimizer, schedule, rngs, data, 5)
    path = str(tmp_path / "ckpt.npz")
    save_checkpoint(path, model, optimizer, step=5, epoch=2, rng=rngs, scheduler=schedule,
                    extra={"note": "five steps", "hidden": 16})
    losses_a = train(model, optimizer, schedule, rngs, data, 6)
    params_a = {k: p.copy() for k, p in model.parameters().items()}

    # fresh objects, deliberately different: everything must come from the file
    model2, optimizer2, schedule2, rngs2 = make_training(lr=0.5, model_seed=9, rng_seed=77)
    model2.to("cupy" if xp is not np else "numpy")
    info = load_checkpoint(path, model2, optimizer2, rng=rngs2, scheduler=schedule2)
    assert info == {"step": 5, "epoch": 2, "extra": {"note": "five steps", "hidden": 16}}
    assert optimizer2.step_count == 5 and schedule2.last_step == 5
    assert backend_name(optimizer2.state["0.weight"]["exp_avg"]) == model2.backend
    losses_b = train(model2, optimizer2, schedule2, rngs2, data, 6)
    if xp is np:  # the same arithmetic in the same order: bit for bit
        assert losses_b == losses_a
        for k, p in model2.parameters().items():
            assert np.array_equal(p, params_a[k]), k
    else:  # another backend: same masks and batches, float32 rounding differs
        assert np.allclose(losses_b, losses_a, rtol=1e-4)
        for k, p in model2.parameters().items():
            assert np.allclose(to_numpy(p), params_a[k], rtol=1e-3, atol=1e-5), k
    assert os.listdir(tmp_path) == ["ckpt.npz"]


def test_load_arrays_and_single_generator(tmp_path, xp):
    model = make_mlp()
    model.to("cupy" if xp is not np else "numpy")
    gen = np.random.default_rng(5)
    gen.random(3)
    path = str(tmp_path / "m.npz")
    save_checkpoint(path, model, rng=gen)
    arrays = load_arrays(path)
    assert set(arrays) == set(model.parameters())
    for k, p in model.parameters().items():
        assert isinstance(arrays[k], np.ndarray) and np.array_equal(arrays[k], to_numpy(p))
    expected = gen.random(4)
    other = np.random.default_rng(0)
    info = load_checkpoint(path, make_mlp(seed=3), rng=other)
    assert info["step"] == 0 and info["extra"] is None
    assert np.array_equal(other.random(4), expected)
    with pytest.raises(ValueError, match="one generator state"):
        load_checkpoint(path, make_mlp(), rng={"data": other})


class DiskFull(OSError):
    pass


@pytest.mark.parametrize("error", [DiskFull, KeyboardInterrupt])
def test_crash_mid_write_keeps_previous_checkpoint(tmp_path, monkeypatch, error):
    model = make_mlp()
    optimizer = SGD(model, 0.1, momentum=0.9)
    path = str(tmp_path / "ckpt.npz")
    save_checkpoint(path, model, optimizer, step=1)
    saved = {k: p.copy() for k, p in model.parameters().items()}
    for p in model.parameters().values():
        p += 1.0

    real_savez = np.savez

    def savez_then_crash(file, *args, **kwds):
        real_savez(file, *args, **kwds)       # a full archive's worth of bytes ...
        file.truncate(file.tell() // 2)        # ... half of it reaches the disk
        raise error("simulated crash while writing")

    monkeypatch.setattr(np, "savez", savez_then_crash)
    with pytest.raises(error):
        save_checkpoint(path, model, optimizer, step=2)
    monkeypatch.undo()

    assert os.listdir(tmp_path) == ["ckpt.npz"], "no stray temporary file"
    fresh = make_mlp(seed=4)
    info = load_checkpoint(path, fresh, SGD(fresh, 0.1, momentum=0.9))
    assert info["step"] == 1
    for k, p in fresh.parameters().items():
        assert np.array_equal(p, saved[k]), k


def test_missing_truncated_and_foreign_files(tmp_path):
    model = make_mlp()
    with pytest.raises(FileNotFoundError, match="nowhere.npz"):
        load_checkpoint(str(tmp_path / "nowhere.npz"), model)
    path = tmp_path / "ckpt.npz"
    save_checkpoint(str(path), model, AdamW(model), step=3)
    blob = path.read_bytes()
    for name, content in [("half.npz", blob[:len(blob) // 2]),
                          ("tail_cut.npz", blob[:-10]),
                          ("garbage.npz", np.random.default_rng(0).bytes(500)),
                          ("empty.npz", b"")]:
        bad = tmp_path / name
        bad.write_bytes(content)
        with pytest.raises(ValueError, match=f"{name}.*not a whitebox checkpoint or truncated"):
            load_checkpoint(str(bad), model)
        with pytest.raises(ValueError, match="not a whitebox checkpoint or truncated"):
            load_arrays(str(bad))
    plain = tmp_path / "plain.npz"
    np.savez(str(plain), w=np.zeros(3))
    with pytest.raises(ValueError, match="not a whitebox checkpoint"):
        load_checkpoint(str(plain), model)


def test_wrong_architecture_names_the_key(tmp_path):
    path = str(tmp_path / "ckpt.npz")
    save_checkpoint(path, make_mlp(hidden=16))
    narrow = make_mlp(hidden=8, seed=2)
    before = {k: p.copy() for k, p in narrow.parameters().items()}
    with pytest.raises(ValueError, match=r"0\.weight.*\(16, 6\).*\(8, 6\)"):
        load_checkpoint(path, narrow)
    for k, p in narrow.parameters().items():  # refused before anything changed
        assert np.array_equal(p, before[k]), k
    with pytest.raises(KeyError, match="6.weight"):
        load_checkpoint(path, make_mlp(extra_layer=True))


def test_optimizer_and_schedule_mismatches(tmp_path):
    model = make_mlp()
    path = str(tmp_path / "ckpt.npz")
    save_checkpoint(path, model)
    with pytest.raises(ValueError, match="no optimizer state"):
        load_checkpoint(path, model, AdamW(model))
    with pytest.raises(ValueError, match="no schedule state"):
        load_checkpoint(path, model, scheduler=WarmupCosine(AdamW(model), 1, 5))
    with pytest.raises(ValueError, match="no random-generator state"):
        load_checkpoint(path, model, rng=np.random.default_rng(0))
    save_checkpoint(path, model, AdamW(model))
    with pytest.raises(ValueError, match="'AdamW'.*'SGD'"):
        load_checkpoint(path, model, SGD(model, 0.1))


def test_save_rejects_bad_arguments(tmp_path):
    model = make_mlp()
    path = str(tmp_path / "ckpt.npz")
    with pytest.raises(TypeError, match="extra must be JSON-able"):
        save_checkpoint(path, model, extra={"array": np.zeros(2)})
    with pytest.raises(TypeError, match="step"):
        save_checkpoint(path, model, step=1.5)
    with pytest.raises(TypeError, match="rng"):
        save_checkpoint(path, model, rng=np.random.RandomState(0))
    with pytest.raises(FileNotFoundError, match="directory"):
        save_checkpoint(str(tmp_path / "no_such_dir" / "c.npz"), model)
    assert os.listdir(tmp_path) == []
