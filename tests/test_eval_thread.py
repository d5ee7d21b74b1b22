"""Held-out evaluation in a second thread (--eval-thread): the same numbers, files and stops.

The runs read a tiny MNIST look-alike written as idx files into tmp_path.
Each forces the thread on or off, so the checks hold on a one-core machine
too, where the default leaves it off.
"""
import os
import re
import signal
import threading
import time

import numpy as np
import pytest
from common_checks import assert_same_checkpoint, read_curve, without_times
from conftest import write_bar_mnist

from whitebox import train as train_job
from whitebox.checkpoint import checkpoint_arrays, load_arrays, load_checkpoint, save_checkpoint
from whitebox.models import CRATE
from whitebox.optim import AdamW
from whitebox.tasks.classify import Classify
from whitebox.tasks.ssl import SSL
from whitebox.training import loop, make_config
from whitebox.training.config import validate

ON, OFF = "--eval-thread", "--no-eval-thread"


@pytest.fixture(scope="module")
def mnist_folder(tmp_path_factory):
    return write_bar_mnist(tmp_path_factory.mktemp("mnist"))


def _run(out, folder, *flags):
    return train_job.main(["--fast", "--dataset", "mnist", "--data", str(folder), "--out",
                           str(out), "--no-progress", "--no-figures", *flags])


@pytest.fixture
def evaluation_overlaps_a_step(monkeypatch):
    """Each evaluation in the second thread starts only after the training thread's next
    optimizer step (or 1 s), so a snapshot that shared the parameters would be caught."""
    stepped, step, evaluate = threading.Event(), AdamW.step, Classify.evaluate

    def step_and_tell(self):
        step(self)
        stepped.set()

    def evaluate_after_a_step(self, model):
        if threading.current_thread() is not threading.main_thread():
            stepped.clear()
            stepped.wait(1.0)
        return evaluate(self, model)
    monkeypatch.setattr(AdamW, "step", step_and_tell)
    monkeypatch.setattr(Classify, "evaluate", evaluate_after_a_step)


def test_the_thread_changes_no_number(tmp_path, mnist_folder, capsys,
                                      evaluation_overlaps_a_step):
    aside = _run(tmp_path / "on", mnist_folder, "--epochs", "3", "--dropout", "0.1", ON)
    header = capsys.readouterr().out.splitlines()[0]
    here = _run(tmp_path / "off", mnist_folder, "--epochs", "3", "--dropout", "0.1", OFF)
    assert "evaluation in a second thread" in header
    assert "evaluation in a second thread" not in capsys.readouterr().out.splitlines()[0]
    assert without_times(aside, "run") == without_times(here, "run")
    assert without_times(read_curve(tmp_path / "on"), "run") == without_times(here, "run")
    assert [r["epoch"] for r in aside] == [1, 2, 3]
    assert_same_checkpoint(tmp_path / "on", tmp_path / "off")
    state = load_checkpoint(tmp_path / "on" / "checkpoint.npz", CRATE(
        image_size=28, patch_size=7, num_classes=10, dim=32, depth=2, heads=2, dim_head=16,
        channels=1, dropout=0.1))
    assert state["epoch"] == 3


def test_an_epoch_counts_the_wait_for_its_evaluation(tmp_path, mnist_folder, monkeypatch,
                                                     capsys):
    """An evaluation far longer than the next epoch's steps: each epoch's seconds hold the
    wait for it, and the epochs' seconds add up to the run's time (less the files)."""
    evaluate = Classify.evaluate

    def slow(self, model):
        time.sleep(0.2)
        return evaluate(self, model)
    monkeypatch.setattr(Classify, "evaluate", slow)
    history = _run(tmp_path / "run", mnist_folder, "--epochs", "3", ON)
    training = float(re.search(r"3 epochs ([\d.]+) s", capsys.readouterr().out).group(1))
    seconds = [r["seconds"] for r in history]
    assert all(s >= 0.2 for s in seconds), seconds
    assert 0.6 <= sum(seconds) <= training + 0.05
    np.testing.assert_allclose([r["elapsed"] for r in history], np.cumsum(seconds))
    assert [list(r)[-4:] for r in history] == [["lr", "seconds", "elapsed", "step_seconds"]] * 3


def test_resume_continues_exactly(tmp_path, mnist_folder):
    straight = _run(tmp_path / "a", mnist_folder, "--epochs", "3", OFF)
    first = _run(tmp_path / "b", mnist_folder, "--epochs", "3", "--stop-after", "2", ON)
    assert [r["epoch"] for r in first] == [1, 2]
    assert [r["epoch"] for r in read_curve(tmp_path / "b")] == [1, 2]
    resumed = _run(tmp_path / "b", mnist_folder, "--resume", ON)
    assert without_times(resumed, "run") == without_times(straight, "run")
    assert_same_checkpoint(tmp_path / "a", tmp_path / "b")


@pytest.mark.skipif(os.name != "posix", reason="sends SIGINT to this process")
def test_a_second_ctrl_c_while_the_stop_waits_still_says_where(tmp_path, mnist_folder,
                                                                monkeypatch, capsys):
    """Ctrl-C in epoch 2, and again while the stop waits for epoch 1's evaluation: epoch 1 is
    written and the run still says where it stopped and how to resume."""
    first = threading.Event()
    calls, step, evaluate = [], Classify.train_step, Classify.evaluate

    def ctrl_c_in_epoch_2(self, model, batch):
        calls.append(1)
        if len(calls) == 4:
            first.set()
            raise KeyboardInterrupt
        return step(self, model, batch)

    def evaluate_through_a_second_ctrl_c(self, model):
        if threading.current_thread() is not threading.main_thread():
            first.wait(10)
            time.sleep(0.2)                         # the stop now waits for this evaluation
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.1)
        return evaluate(self, model)
    monkeypatch.setattr(Classify, "train_step", ctrl_c_in_epoch_2)
    monkeypatch.setattr(Classify, "evaluate", evaluate_through_a_second_ctrl_c)
    try:
        _run(tmp_path / "run", mnist_folder, "--epochs", "2", ON)
        stopped = None
    except BaseException as stop:          # a bare KeyboardInterrupt would end the session
        stopped = stop
    assert isinstance(stopped, SystemExit), repr(stopped)
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(
        "(epoch 1); continue with --resume")
    assert [r["epoch"] for r in read_curve(tmp_path / "run")] == [1]


@pytest.mark.skipif(os.name != "posix", reason="sends SIGINT to this process")
def test_ctrl_c_while_an_epoch_waits_for_the_evaluation_before_drops_that_epoch(
        tmp_path, mnist_folder, monkeypatch, capsys):
    """Ctrl-C while epoch 2's end waits for epoch 1's evaluation: epoch 1 is written and no
    evaluation of epoch 2 starts (a run without the thread drops epoch 2 the same way)."""
    evaluate, started = Classify.evaluate, []

    def slow_evaluate(self, model):
        started.append(1)
        if len(started) == 1:
            threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()
            time.sleep(0.6)
        return evaluate(self, model)
    monkeypatch.setattr(Classify, "evaluate", slow_evaluate)
    with pytest.raises(SystemExit):
        _run(tmp_path / "run", mnist_folder, "--epochs", "3", ON)
    assert "interrupted at epoch 2 step 3; checkpoint at" in capsys.readouterr().err
    assert started == [1]
    assert [r["epoch"] for r in read_curve(tmp_path / "run")] == [1]


def test_a_failing_step_still_keeps_the_epoch_evaluated_aside(tmp_path, mnist_folder,
                                                              monkeypatch):
    calls, step = [], Classify.train_step

    def fails_in_epoch_2(self, model, batch):
        calls.append(1)
        if len(calls) == 4:
            raise RuntimeError("a step failed")
        return step(self, model, batch)
    monkeypatch.setattr(Classify, "train_step", fails_in_epoch_2)
    cfg = make_config(Classify, dict(dataset="mnist", data=str(mnist_folder), epochs=2,
                                     out=str(tmp_path / "run"), figures=False, progress=False,
                                     eval_thread=True), fast=True)
    with pytest.raises(RuntimeError, match="a step failed"):
        loop.train(Classify, cfg)
    assert [r["epoch"] for r in read_curve(tmp_path / "run")] == [1]
    assert load_arrays(tmp_path / "run" / "checkpoint.npz")


def test_a_failing_evaluation_stops_the_run_with_its_error(tmp_path, mnist_folder,
                                                           monkeypatch):
    evaluate = Classify.evaluate

    def fails_at_epoch_2(self, model):
        if len(self.seen) == 1:
            raise ValueError("the evaluation failed")
        self.seen.append(1)
        return evaluate(self, model)
    monkeypatch.setattr(Classify, "seen", [], raising=False)
    monkeypatch.setattr(Classify, "evaluate", fails_at_epoch_2)
    with pytest.raises(ValueError, match="the evaluation failed"):
        _run(tmp_path / "run", mnist_folder, "--epochs", "3", "--debug", ON)
    assert [r["epoch"] for r in read_curve(tmp_path / "run")] == [1]


def test_the_default_needs_a_core_free_of_the_training_threads(tmp_path, mnist_folder,
                                                               monkeypatch, capsys):
    monkeypatch.setattr(loop, "available_cores", lambda: 1)
    _run(tmp_path / "one-core", mnist_folder, "--epochs", "1")
    assert "evaluation in a second thread" not in capsys.readouterr().out
    monkeypatch.setattr(loop, "available_cores", lambda: 2)
    _run(tmp_path / "two-cores", mnist_folder, "--epochs", "1")
    assert "evaluation in a second thread" in capsys.readouterr().out
    _run(tmp_path / "shards", mnist_folder, "--epochs", "1", "--threads", "2")
    assert "evaluation in a second thread" not in capsys.readouterr().out
    monkeypatch.setattr(loop, "available_cores", lambda: 3)
    _run(tmp_path / "shards-3-cores", mnist_folder, "--epochs", "1", "--threads", "2")
    assert "evaluation in a second thread" in capsys.readouterr().out


@pytest.mark.parametrize("task,settings,message", [
    (Classify, dict(processes=2), "split over processes"),
    (Classify, dict(distributed=True), "split over processes"),
    (Classify, dict(backend="cupy"), "runs on NumPy, got --backend cupy"),
    (SSL, {}, "--task ssl cannot evaluate in a second thread"),
])
def test_refusals_name_the_reason(task, settings, message):
    with pytest.raises(ValueError, match=message):
        validate(task, make_config(task, dict(settings, eval_thread=True)))


def test_checkpoint_arrays_are_copies_and_what_save_checkpoint_writes(tmp_path):
    model = CRATE(image_size=8, patch_size=4, num_classes=3, dim=8, depth=1, heads=2,
                  dim_head=4, channels=1)
    optimizer = AdamW(model)
    arrays = checkpoint_arrays(model, optimizer, step=2, epoch=1)
    before = {k: v.copy() for k, v in arrays.items()}
    save_checkpoint(tmp_path / "c.npz", model, optimizer, step=2, epoch=1)
    for p in model.parameters().values():
        p += 1
    for name in arrays:
        np.testing.assert_array_equal(arrays[name], before[name], err_msg=name)
    written = dict(np.load(tmp_path / "c.npz"))
    assert written.keys() == arrays.keys()
    for name in arrays:
        np.testing.assert_array_equal(written[name], arrays[name], err_msg=name)
