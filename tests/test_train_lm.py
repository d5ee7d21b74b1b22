"""The language-model jobs (--task lm, --task mlm) end to end in their fast mode, and resume."""
import json
import re

import numpy as np
import pytest
from common_checks import assert_same_checkpoint, without_times

from whitebox import train as train_job

from test_no_sync import Counting, device_like, on_device  # noqa: F401  (a fixture)

TEXT = ("Python is a programming language that lets you work quickly and integrate "
        "systems more effectively. ") * 40


def _run(task, out, *flags):
    return train_job.main(["--task", task, "--fast", "--out", str(out), "--no-progress",
                           *flags])


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


def test_lm_fast_run_prints_loss_baseline_and_samples(tmp_path, capsys):
    history = _run("lm", tmp_path / "run")
    out = capsys.readouterr().out.strip().splitlines()
    assert re.fullmatch(r"test loss: \d+\.\d{3} nats/char \(bigram baseline \d+\.\d{3}\)",
                        out[-1])
    assert any(line.startswith("  sample 1: ") for line in out)
    assert history[-1]["test_loss"] < history[0]["test_loss"] - 0.05     # it learns (4.19 -> 4.02)
    assert len(history[-1]["rc"]) == len(history[-1]["nonzero"]) == 2
    for name in ("curves.png", "layers.png", "atoms.png", "checkpoint.npz", "metrics.jsonl"):
        assert (tmp_path / "run" / name).exists(), name


def test_mlm_fast_run_prints_masked_accuracy_and_baseline(tmp_path, capsys):
    history = _run("mlm", tmp_path / "run", "--data", str(_write(tmp_path, TEXT)))
    out = capsys.readouterr().out.strip().splitlines()
    assert re.fullmatch(r"test masked accuracy: \d+\.\d% \(unigram baseline \d+\.\d%\)", out[-1])
    assert 0 <= history[-1]["test_acc"] <= 1 and "train_acc" in history[-1]
    assert (tmp_path / "run" / "atoms.png").exists()


def _write(tmp_path, text, name="t.txt"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("task", ["lm", "mlm"])
def test_resume_continues_exactly(tmp_path, text_file, task):
    flags = ("--data", str(text_file), "--epochs", "3", "--no-figures")
    straight = _run(task, tmp_path / "a", *flags)
    first = _run(task, tmp_path / "b", *flags, "--stop-after", "1")
    assert len(first) == 1
    resumed = train_job.main(["--task", task, "--out", str(tmp_path / "b"), "--resume",
                              "--no-progress"])
    assert without_times(resumed, "run") == without_times(straight, "run")
    assert_same_checkpoint(tmp_path / "a", tmp_path / "b")


def test_checkpoint_of_another_tokenizer_is_refused_and_nothing_changes(tmp_path, text_file):
    out = tmp_path / "run"
    _run("lm", out, "--data", str(text_file), "--epochs", "2", "--stop-after", "1",
         "--no-figures")
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    other = _write(tmp_path, TEXT.replace("P", "Q") + "{}" * 10, "other.txt")
    with pytest.raises(ValueError, match="tokenizer .*Nothing was changed"):
        train_job.main(["--task", "lm", "--out", str(out), "--resume", "--data", str(other),
                        "--no-progress", "--debug"])
    after = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert after == before


def test_tokenizer_travels_in_the_checkpoint(tmp_path, text_file):
    from whitebox.checkpoint import _read
    from whitebox.data.text import CharTokenizer
    _run("lm", tmp_path / "run", "--data", str(text_file), "--no-figures")
    meta = _read(tmp_path / "run" / "checkpoint.npz")[1]
    tok = CharTokenizer.from_dict(json.loads(json.dumps(meta["extra"]["task"]["tokenizer"])))
    assert tok == CharTokenizer.from_text(TEXT)


@pytest.mark.parametrize("text, match", [("", "0 characters"), ("abc", "at least")])
def test_empty_or_short_text_is_refused(tmp_path, text, match):
    with pytest.raises(ValueError, match=match):
        _run("lm", tmp_path / "run", "--data", str(_write(tmp_path, text)), "--debug")


def test_missing_text_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        _run("lm", tmp_path / "run", "--data", str(tmp_path / "nope.txt"), "--debug")


@pytest.mark.parametrize("task_name", ["lm", "mlm"])
def test_one_training_step_reads_nothing_back(device_like, task_name):
    """The language models' step on device-like arrays performs no host read (see test_no_sync)."""
    from whitebox.optim import AdamW, clip_grad_norm
    from whitebox.train import get_task
    from whitebox.training import make_config
    task_cls = get_task(task_name)
    task = task_cls(make_config(task_cls, {}, fast=True))
    task.setup(np.random.default_rng(0))
    model = on_device(task.build_model())
    optimizer = AdamW(model, lr=1e-3, weight_decay=0.1)
    x, y = next(iter(task.batches()))
    Counting.reads = []
    model.zero_grad()
    loss, sums = task.train_step(model, (x.view(Counting), y.view(Counting)))
    clip_grad_norm(model, 1.0)
    optimizer.step()
    assert Counting.reads == [], f"the step read device values back: {Counting.reads}"
    assert loss.shape == ()


@pytest.mark.parametrize("task", ["lm", "mlm"])
def test_evaluation_in_a_second_thread_changes_no_number(tmp_path, capsys, task):
    flags = ("--threads", "1", "--data", str(_write(tmp_path, TEXT)))
    aside = _run(task, tmp_path / "on", *flags, "--eval-thread")
    on = capsys.readouterr().out.strip().splitlines()
    here = _run(task, tmp_path / "off", *flags, "--no-eval-thread")
    off = capsys.readouterr().out.strip().splitlines()
    assert "evaluation in a second thread" in on[0] and "second thread" not in off[0]
    assert without_times(aside, "run") == without_times(here, "run")
    shown = lambda lines: [re.sub(r" \| [\d.]+s$", "", line) for line in lines[1:]
                           if not line.startswith("wall time")]     # no times
    assert shown(on) == shown(off)       # epoch lines, samples (or filled-in masks), last line
    assert_same_checkpoint(tmp_path / "on", tmp_path / "off")
