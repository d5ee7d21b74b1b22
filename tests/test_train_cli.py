"""The command line as a user meets it: refusals in one line, Ctrl-C, what it prints.

Runs go through ``main(argv)`` (or a subprocess where the process itself is
the point: exit status, a real SIGINT) on the tiny MNIST look-alike of
conftest, in --fast mode.
"""
import json
import os
import re
import signal
import subprocess
import sys
import warnings

import numpy as np
import pytest
from common_checks import without_times
from conftest import write_bar_mnist

from whitebox import backend
from whitebox import train as train_job
from whitebox.checkpoint import load_arrays
from whitebox.tasks.classify import Classify
from whitebox.training import loop

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ERROR = re.compile(r"whitebox\.train: error: .+")


@pytest.fixture(scope="module")
def mnist_folder(tmp_path_factory):
    return write_bar_mnist(tmp_path_factory.mktemp("mnist_cli"))


def _argv(out, folder, *flags):
    return ["--fast", "--dataset", "mnist", "--data", str(folder), "--out", str(out),
            "--no-progress", "--no-figures", *flags]


def _refusal(capsys, argv):
    """main(argv) must end with exit status 2 and one error line, no traceback."""
    with pytest.raises(SystemExit) as stop:
        train_job.main(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert ERROR.fullmatch(last), err
    return last


# ------------------------------------------------------------------ refusals
def test_a_patch_that_does_not_divide_the_images_is_one_line(tmp_path, mnist_folder, capsys):
    line = _refusal(capsys, _argv(tmp_path / "run", mnist_folder, "--patch", "5"))
    assert "patch must divide the 28x28 images of mnist, got 5" in line
    with pytest.raises(ValueError, match="patch must divide"):       # --debug: the exception
        train_job.main(_argv(tmp_path / "run", mnist_folder, "--patch", "5", "--debug"))


def test_mnist_without_its_folder_is_one_line(capsys):
    assert "--data PATH" in _refusal(capsys, ["--dataset", "mnist", "--fast"])


def test_cupy_without_a_gpu_is_one_line(tmp_path, capsys):
    if backend.gpu_available():
        pytest.skip("CuPy and a GPU are here")
    line = _refusal(capsys, ["--fast", "--backend", "cupy", "--out", str(tmp_path / "r")])
    assert "--backend cupy needs CuPy" in line
    assert not (tmp_path / "r").exists()


def test_resume_on_a_missing_folder_is_one_line(tmp_path, capsys):
    line = _refusal(capsys, ["--resume", "--out", str(tmp_path / "nothing")])
    assert "config.json' is missing (no folder" in line and "--resume" in line


def test_resume_names_both_tasks(tmp_path, mnist_folder, capsys):
    out = tmp_path / "run"
    train_job.main(_argv(out, mnist_folder, "--epochs", "2", "--stop-after", "1"))
    line = _refusal(capsys, ["--resume", "--task", "mae", "--out", str(out)])
    assert "trained --task classify, not --task mae" in line


def test_resume_reads_the_task_from_the_run_folder(tmp_path, capsys):
    """--resume --out FOLDER, no --task: the folder's task (lm here) continues, exactly."""
    text = tmp_path / "corpus.txt"
    text.write_text("Python is a programming language that lets you work quickly. " * 40)
    flags = ["--task", "lm", "--fast", "--data", str(text), "--no-progress", "--no-figures",
             "--epochs", "2"]
    straight = train_job.main([*flags, "--out", str(tmp_path / "a")])
    train_job.main([*flags, "--out", str(tmp_path / "b"), "--stop-after", "1"])
    resumed = train_job.main(["--resume", "--out", str(tmp_path / "b"), "--no-progress"])
    assert without_times(resumed) == without_times(straight)
    assert "test loss:" in capsys.readouterr().out


def test_a_user_error_in_a_real_process_exits_2_without_a_traceback(tmp_path, mnist_folder):
    done = subprocess.run([sys.executable, "-m", "whitebox.train",
                           *_argv(tmp_path / "run", mnist_folder, "--patch", "5")],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert ERROR.fullmatch(done.stderr.strip().splitlines()[-1]), done.stderr


# ------------------------------------------------------------------ Ctrl-C
@pytest.mark.parametrize("evaluation", ["--eval-thread", "--no-eval-thread"])
def test_ctrl_c_says_where_and_the_checkpoint_resumes_exactly(tmp_path, mnist_folder,
                                                               monkeypatch, capsys, evaluation):
    """With the evaluation in a second thread, epoch 1, evaluated aside when the Ctrl-C comes
    in epoch 2, is still written."""
    straight = train_job.main(_argv(tmp_path / "a", mnist_folder, "--epochs", "2"))
    calls = []
    step = Classify.train_step

    def interrupted_at_the_fifth(self, model, batch):     # 3 steps per epoch: epoch 2, step 2
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return step(self, model, batch)
    monkeypatch.setattr(Classify, "train_step", interrupted_at_the_fifth)
    out = tmp_path / "b"
    with pytest.raises(SystemExit) as stop:
        train_job.main(_argv(out, mnist_folder, "--epochs", "2", evaluation))
    err = capsys.readouterr().err
    assert stop.value.code == 130 and "Traceback" not in err
    checkpoint = os.path.join(str(out), "checkpoint.npz")
    assert err.strip().splitlines()[-1] == (
        f"interrupted at epoch 2 step 1; checkpoint at {checkpoint} (epoch 1); "
        "continue with --resume")
    monkeypatch.setattr(Classify, "train_step", step)
    resumed = train_job.main(_argv(out, mnist_folder, "--resume"))
    assert without_times(resumed) == without_times(straight)


def test_ctrl_c_before_the_first_checkpoint_says_so(tmp_path, mnist_folder, monkeypatch,
                                                    capsys):
    def interrupt(self, model, batch):
        raise KeyboardInterrupt
    monkeypatch.setattr(Classify, "train_step", interrupt)
    with pytest.raises(SystemExit):
        train_job.main(_argv(tmp_path / "run", mnist_folder))
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "interrupted at epoch 1 step 0; no checkpoint yet (the first epoch did not end); "
        "start again without --resume")


def test_a_signal_during_the_save_waits_for_its_end():
    with pytest.raises(KeyboardInterrupt):
        with loop.interrupts_deferred():
            os.kill(os.getpid(), signal.SIGINT)
            written = True                       # still running: the signal was held
    assert written
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


@pytest.mark.skipif(os.name != "posix", reason="sends SIGINT to a child process")
def test_ctrl_c_in_a_real_process(tmp_path, mnist_folder):
    out = tmp_path / "run"
    job = subprocess.Popen([sys.executable, "-m", "whitebox.train",
                            *_argv(out, mnist_folder, "--epochs", "500")],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                           env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        for line in job.stdout:
            if line.startswith("epoch   2 |"):
                break
        job.send_signal(signal.SIGINT)
        _, err = job.communicate(timeout=120)
    finally:
        job.kill()
    assert job.returncode == 130, err
    assert "Traceback" not in err
    assert re.fullmatch(r"interrupted at epoch \d+ step \d+; checkpoint at .*checkpoint\.npz "
                        r"\(epoch \d+\); continue with --resume", err.strip().splitlines()[-1])
    state = load_arrays(out / "checkpoint.npz")            # whole: it loads
    assert "mlp_head.1.weight" in state


# ------------------------------------------------------------------ what it prints
def test_an_earlier_run_moved_aside_is_a_plain_line(tmp_path, mnist_folder, capsys):
    out = tmp_path / "run"
    train_job.main(_argv(out, mnist_folder, "--epochs", "1"))
    capsys.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("error")                      # no warning of any kind
        train_job.main(_argv(out, mnist_folder, "--epochs", "1"))
    printed = capsys.readouterr()
    assert "UserWarning" not in printed.err + printed.out
    assert re.search(r"held an earlier run; its files were moved to .*earlier", printed.out)


def test_each_task_and_model_has_its_own_default_folder():
    outs = {flags: train_job.config_from_args(list(flags)).out for flags in [
        (), ("--model", "crate-alpha"), ("--task", "mae"), ("--dataset", "digits"),
        ("--dataset", "digits", "--model", "crate-alpha"), ("--task", "lm"),
        ("--task", "mlm")]}
    assert outs[()] == "runs/mnist"                        # the Quickstart's folder
    assert outs[("--model", "crate-alpha")] == "runs/mnist-crate-alpha"
    assert len(set(outs.values())) == len(outs), outs


def test_first_line_names_the_configuration_last_lines_the_time(tmp_path, mnist_folder,
                                                                capsys):
    train_job.main(_argv(tmp_path / "run", mnist_folder, "--epochs", "3", "--stop-after", "2",
                         "--attention-out", "tied"))
    lines = capsys.readouterr().out.strip().splitlines()
    first = lines[0]
    for part in ("classify: CRATE --model crate", "MSSA out tied", "parameters",
                 "3 epochs of 3 steps", "1 thread", "no MPI", str(tmp_path / "run")):
        assert part in first, (part, first)
    assert re.fullmatch(r"wall time \d+\.\d s: 2 epochs .*", lines[-3])
    assert lines[-2].startswith("test accuracy: ")
    assert lines[-1] == "stopped after epoch 2 of 3; continue with --resume"
    train_job.main(_argv(tmp_path / "run", mnist_folder, "--resume"))
    lines = capsys.readouterr().out.strip().splitlines()
    assert "official MSSA" not in lines[0] and "resuming after epoch 2" in lines[0]
    assert re.fullmatch(r"wall time .* \(and \d+\.\d s for epochs 1-2 before --resume\)",
                        lines[-2])
    assert lines[-1].startswith("test accuracy: ")


def test_more_threads_than_cores_warns(tmp_path, mnist_folder, capsys):
    cores = loop.available_cores()
    train_job.main(_argv(tmp_path / "run", mnist_folder, "--epochs", "1", "--threads",
                         str(cores + 1)))
    assert f"warning: {cores + 1} threads on the {cores} cores" in capsys.readouterr().out
    train_job.main(_argv(tmp_path / "run", mnist_folder, "--epochs", "1", "--overwrite"))
    assert "warning" not in capsys.readouterr().out


def test_fast_digits_ends_above_chance(tmp_path, capsys):
    pytest.importorskip("sklearn")
    history = train_job.main(["--fast", "--dataset", "digits", "--out", str(tmp_path / "run"),
                              "--no-progress", "--no-figures"])
    assert history[-1]["test_acc"] > 0.25                 # chance: 0.1 (seeds 0-3: 41-55%)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (config["epochs"], config["options"]["max_shift"]) == (5, 0)
    assert np.isfinite(history[-1]["test_loss"])
