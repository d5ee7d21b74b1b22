"""Checkpoints: exact resumption, atomic writes, clear errors for bad files."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from whitebox import nn
from whitebox.backend import backend_name, to_device, to_numpy
from whitebox.checkpoint import (atomic_write, clean_stale_temporaries, load_arrays,
                                 load_checkpoint, save_checkpoint)
from whitebox.losses import cross_entropy
from whitebox.optim import SGD, AdamW, StepDecay, WarmupCosine, clip_grad_norm

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
    with pytest.raises(ValueError, match="step must be a non-negative integer, got -1"):
        save_checkpoint(path, model, step=-1)
    with pytest.raises(TypeError, match=r"save_checkpoint: model must be a whitebox Module, got "
                                        r"dict \(a dict of arrays is written by "):
        save_checkpoint(path, model.state_dict())
    with pytest.raises(TypeError, match="rng"):
        save_checkpoint(path, model, rng=np.random.RandomState(0))
    with pytest.raises(FileNotFoundError, match="directory"):
        save_checkpoint(str(tmp_path / "no_such_dir" / "c.npz"), model)
    assert os.listdir(tmp_path) == []
    save_checkpoint(path, model)
    with pytest.raises(TypeError, match="load_checkpoint: model must be a whitebox Module"):
        load_checkpoint(path, model.state_dict())


# ------------------------------------------------------------ refused loads change nothing
def rewrite(path, change):
    """Rewrite a checkpoint file with ``change(arrays, meta)`` applied (a tampered file)."""
    with np.load(path) as archive:
        arrays = {k: archive[k] for k in archive.files}
    meta = json.loads(arrays.pop("__meta__").tobytes().decode("utf-8"))
    change(arrays, meta)
    arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    np.savez(path, **arrays)


def snapshot(model, optimizer, schedule, rngs):
    return ({k: p.copy() for k, p in model.parameters().items()},
            {k: {n: b.copy() for n, b in bufs.items()} for k, bufs in optimizer.state.items()},
            (optimizer.lr, optimizer.step_count, dict(optimizer.hyper)),
            dict(vars(schedule)),
            {n: repr(g.bit_generator.state) for n, g in rngs.items()})


def assert_same_snapshot(a, b):
    assert a[0].keys() == b[0].keys()
    for k in a[0]:
        assert np.array_equal(a[0][k], b[0][k]), k
    assert a[1].keys() == b[1].keys()
    for k in a[1]:
        assert a[1][k].keys() == b[1][k].keys()
        for n in a[1][k]:
            assert np.array_equal(a[1][k][n], b[1][k][n]), (k, n)
    assert a[2:] == b[2:]


def _set_buffer(arrays, meta):
    arrays["optim/0.weight/exp_avg"] = np.zeros((2, 2), np.float32)


def _set_betas(arrays, meta):
    meta["optimizer"]["hyper"]["betas"] = [0.9, 1.5]


def _set_nan(arrays, meta):
    arrays["model/4.bias"] = np.full_like(arrays["model/4.bias"], np.nan)


def _set_inf_moment(arrays, meta):
    arrays["optim/0.weight/exp_avg_sq"][0, 0] = np.inf


def _damage_second_generator(arrays, meta):
    meta["rng"]["states"]["dropout"]["state"] = {"state": "not a number", "inc": 1}


def _damage_step(arrays, meta):
    meta["step"] = "five"


@pytest.mark.parametrize("case,error,match", [
    ("step-decay", ValueError, "WarmupCosine.*StepDecay"),
    ("philox", ValueError, r"rng\['data'\].*Philox.*PCG64"),
    ("unknown-rng", KeyError, "nope"),
    ("buffer-shape", ValueError, r"0\.weight.*exp_avg.*\(2, 2\)"),
    ("bad-betas", ValueError, r"betas\[1\].*1\.5"),
    ("nan-weight", ValueError, "4.bias.*NaN"),
    ("inf-moment", ValueError, r"ckpt\.npz.*'0\.weight'/'exp_avg_sq' contains NaN or infinite"),
    ("damaged-rng", ValueError, r"ckpt\.npz.*rng\['dropout'\] is damaged"),
    ("damaged-step", ValueError, r"ckpt\.npz.*damaged: step is 'five'"),
])
def test_refused_load_changes_nothing(tmp_path, case, error, match):
    data = make_data()
    model, optimizer, schedule, rngs = make_training()
    train(model, optimizer, schedule, rngs, data, 3)
    path = str(tmp_path / "ckpt.npz")
    save_checkpoint(path, model, optimizer, rng=rngs, scheduler=schedule)
    tamper = {"buffer-shape": _set_buffer, "bad-betas": _set_betas, "nan-weight": _set_nan,
              "inf-moment": _set_inf_moment, "damaged-rng": _damage_second_generator,
              "damaged-step": _damage_step}
    if case in tamper:
        rewrite(path, tamper[case])

    # the target has a history of its own that a refused load must not touch
    model2, optimizer2, schedule2, rngs2 = make_training(lr=0.5, model_seed=9, rng_seed=77)
    train(model2, optimizer2, schedule2, rngs2, data, 2)
    if case == "step-decay":
        schedule2 = StepDecay(optimizer2, 3)
    elif case == "philox":
        rngs2["data"] = np.random.Generator(np.random.Philox(1))
    elif case == "unknown-rng":
        rngs2["nope"] = np.random.default_rng(1)
    before = snapshot(model2, optimizer2, schedule2, rngs2)
    with pytest.raises(error, match=match):
        load_checkpoint(path, model2, optimizer2, rng=rngs2, scheduler=schedule2)
    assert_same_snapshot(snapshot(model2, optimizer2, schedule2, rngs2), before)


def test_sgd_momentum_checkpoint_resumes_into_plain_sgd(tmp_path):
    """The saved hyper-parameters (momentum and its buffers) replace the optimizer's own."""
    data = make_data()
    model = make_mlp()
    optimizer = SGD(model, 0.05, momentum=0.9, nesterov=True)
    rngs = {"data": np.random.default_rng(1), "dropout": model[3].rng}
    schedule = StepDecay(optimizer, 4, gamma=0.5)
    train(model, optimizer, schedule, rngs, data, 3)
    path = str(tmp_path / "ckpt.npz")
    save_checkpoint(path, model, optimizer, rng=rngs, scheduler=schedule)
    losses_a = train(model, optimizer, schedule, rngs, data, 4)

    model2 = make_mlp(seed=5, dropout_seed=6)
    optimizer2 = SGD(model2, 0.3)   # no momentum: keeps no buffers of its own
    rngs2 = {"data": np.random.default_rng(2), "dropout": model2[3].rng}
    schedule2 = StepDecay(optimizer2, 2)
    load_checkpoint(path, model2, optimizer2, rng=rngs2, scheduler=schedule2)
    assert optimizer2.hyper == optimizer.hyper
    assert train(model2, optimizer2, schedule2, rngs2, data, 4) == losses_a


# ------------------------------------------------------------ dropout generators
def make_two_dropout_net(seed, dropout_seeds):
    """Two Dropout layers, one nested, so the generator names are dotted ("3.2")."""
    return nn.Sequential(
        nn.Linear(N_IN, 16, seed=seed), nn.ReLU(),
        nn.Dropout(0.3, seed=np.random.default_rng(dropout_seeds[0])),
        nn.Sequential(nn.Linear(16, 16, seed=seed + 1), nn.ReLU(),
                      nn.Dropout(0.3, seed=np.random.default_rng(dropout_seeds[1]))),
        nn.Linear(16, N_CLASSES, seed=seed + 2))


def model_generators(model):
    if hasattr(model, "generators"):
        return model.generators()
    return {name: m.rng for name, m in model.named_modules() if hasattr(m, "rng")}


def test_dropout_generators_resume_exactly(tmp_path):
    data = make_data()
    model = make_two_dropout_net(0, (10, 11))
    optimizer = AdamW(model, 3e-3)
    schedule = WarmupCosine(optimizer, 2, 20)
    data_rng = np.random.default_rng(1)
    assert set(model_generators(model)) == {"2", "3.2"}
    train(model, optimizer, schedule, {"data": data_rng}, data, 3)   # dropout active
    path = str(tmp_path / "ckpt.npz")
    save_checkpoint(path, model, optimizer, scheduler=schedule,
                    rng={"data": data_rng, **model_generators(model)})
    losses_a = train(model, optimizer, schedule, {"data": data_rng}, data, 5)

    def resume(restore_dropout):
        model2 = make_two_dropout_net(7, (20, 21))
        optimizer2 = AdamW(model2, 1.0)
        schedule2 = WarmupCosine(optimizer2, 1, 5)
        data_rng2 = np.random.default_rng(2)
        rng = {"data": data_rng2, **(model_generators(model2) if restore_dropout else {})}
        load_checkpoint(path, model2, optimizer2, rng=rng, scheduler=schedule2)
        return train(model2, optimizer2, schedule2, {"data": data_rng2}, data, 5)

    assert resume(restore_dropout=True) == losses_a
    # the masks matter: fresh dropout generators give another run
    assert resume(restore_dropout=False) != losses_a


# ------------------------------------------------------------ stale temporaries
def test_clean_stale_temporaries_removes_only_killed_writes(tmp_path):
    target = tmp_path / "checkpoint.npz"
    target.write_bytes(b"the previous checkpoint")
    # a process killed in the middle of atomic_write leaves its temporary behind
    code = ("import os, sys; from whitebox.checkpoint import atomic_write; "
            "atomic_write(sys.argv[1], lambda f: (f.write(b'half'), f.flush(), os._exit(9)))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    assert subprocess.run([sys.executable, "-c", code, str(target)], env=env).returncode == 9
    left = sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp"))
    assert len(left) == 1 and left[0].startswith(".checkpoint.npz.")
    keep = [".checkpoint.npz.ABCDEF12.tmp", ".x.abc.tmp", "notes.tmp", ".metrics.jsonl.tmp",
            "checkpoint.npz.0123abcd.tmp", ".a.0123abcd.tmp.bak"]
    for name in keep:
        (tmp_path / name).write_text("not ours")
    (tmp_path / ".dir.0123abcd.tmp").mkdir()
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / ".config.json.0123abcd.tmp").write_text("in a subfolder")
    os.symlink(target, tmp_path / ".link.0123abcd.tmp")
    removed = clean_stale_temporaries(tmp_path)
    assert removed == [str(tmp_path / left[0])]
    for name in keep + [".dir.0123abcd.tmp", "sub/.config.json.0123abcd.tmp",
                        ".link.0123abcd.tmp", "checkpoint.npz"]:
        assert os.path.lexists(tmp_path / name), name
    assert target.read_bytes() == b"the previous checkpoint"
    assert clean_stale_temporaries(tmp_path) == []
    atomic_write(tmp_path / "metrics.json", lambda f: f.write(b"{}"))   # its own names match
    assert clean_stale_temporaries(tmp_path) == []


def test_clean_stale_temporaries_when_another_process_removed_one_first(tmp_path, monkeypatch):
    """Two processes cleaning at once: the file the listing showed is gone when removed."""
    gone, kept = tmp_path / ".checkpoint.npz.0123abcd.tmp", tmp_path / ".metrics.jsonl.89abcdef.tmp"
    gone.write_bytes(b"left by a killed write")
    kept.write_bytes(b"left by a killed write")
    listing = list(os.scandir(tmp_path))
    for entry in listing:
        entry.is_file(follow_symlinks=False)      # what the listing knew, cached
    gone.unlink()                                  # the other process was first
    monkeypatch.setattr(os, "scandir", lambda directory: iter(listing))
    assert clean_stale_temporaries(tmp_path) == [str(kept)]
    assert sorted(os.listdir(tmp_path)) == []


@pytest.mark.parametrize("point", ["created", "written", "synced", "renamed"])
def test_atomic_write_fault_points(tmp_path, monkeypatch, point):
    """The crash tests' hook stops atomic_write at each named step, in this state."""
    import whitebox.checkpoint as checkpoint

    class Killed(BaseException):
        pass

    def hook(at, path):
        if at == point:
            raise Killed(sorted(os.listdir(tmp_path)))

    target = tmp_path / "file.bin"
    target.write_bytes(b"old")
    monkeypatch.setattr(checkpoint, "_fault_hook", hook)
    with pytest.raises(Killed) as stopped:
        atomic_write(target, lambda f: f.write(b"new"))
    listing = stopped.value.args[0]
    if point == "renamed":
        assert listing == ["file.bin"]
    else:
        assert len(listing) == 2 and checkpoint.TEMP_NAME.fullmatch(listing[0]), listing
    # the error path removes the temporary (a SIGKILL would leave it for the next start)
    assert os.listdir(tmp_path) == ["file.bin"]
    assert target.read_bytes() == (b"new" if point == "renamed" else b"old")
