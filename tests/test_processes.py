"""--processes N: data parallel over processes on one machine, no MPI.

The scheme is --distributed's (test_distributed.py), so the checks are its:
N processes follow one process with the same global batch up to rounding,
only process 0 prints and writes, and resume is exact. Then what processes
add: a process that dies or is interrupted stops the run at once, with a
clear message, and leaves no process or shared memory behind; processes that
fall out of step raise instead of reading each other's data.
"""
import multiprocessing
import os
import signal
import subprocess
import sys
import time

import pytest

from common_checks import assert_same_curve, read_curve, without_times
from whitebox.training import make_config, train as train_run
from whitebox.training.processes import ProcessComm, ProcessesStopped
from whitebox.tasks.classify import Classify

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = ["--fast", "--n-train", "192", "--n-test", "64", "--batch-size", "48", "--epochs", "2",
         "--no-figures", "--no-progress", "--threads", "1"]
ENV = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")


def train(out, *extra, processes=None):
    cmd = [sys.executable, "-m", "whitebox.train", *SMALL, "--out", str(out), *extra]
    if processes:
        cmd += ["--processes", str(processes)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    return r


def shared_segments():
    """The names of the shared-memory segments on this machine (Linux: /dev/shm)."""
    return set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()


def test_two_processes_follow_one_process(tmp_path):
    """With the digits' distortions on: each process distorts only its rows."""
    before = shared_segments()
    distort = ("--rotate", "10", "--zoom", "0.1", "--warp", "1")
    train(tmp_path / "one", *distort)
    r = train(tmp_path / "two", *distort, processes=2)
    assert r.stdout.count("epoch   1 |") == 1                  # only process 0 prints
    assert r.stdout.count("test accuracy:") == 1
    assert "| 2 processes |" in r.stdout.splitlines()[0]
    assert "leaked" not in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert_same_curve(read_curve(tmp_path / "two"), read_curve(tmp_path / "one"))
    assert sorted(os.listdir(tmp_path / "two")) == sorted(os.listdir(tmp_path / "one"))
    assert shared_segments() <= before                         # process 0 removed its memory


def test_three_processes_with_random_masks(tmp_path):
    """CRATE-MAE's masks are drawn for the whole batch before the split (Task.draw)."""
    train(tmp_path / "one", "--task", "mae")
    train(tmp_path / "three", "--task", "mae", processes=3)
    one = read_curve(tmp_path / "one")
    assert len(one) == 2
    assert_same_curve(read_curve(tmp_path / "three"), one, keys=("train_loss", "test_mse"))


TEXT = ["--fast", "--epochs", "1", "--eval-windows", "150", "--no-figures", "--no-progress",
        "--threads", "1"]


@pytest.mark.parametrize("task", ["lm", "mlm", "mae"])
def test_processes_share_the_held_out_batches(tmp_path, task):
    """Each process scores its share of the held-out batches (three batches of 64 windows,
    two of 500 images) and the sums are added: the record written is one process's, every
    measure and the probe included."""
    flags = ["--task", task] + (TEXT if task != "mae" else SMALL + ["--n-test", "600"])
    runs = {}
    for n in (1, 2):
        out = tmp_path / str(n)
        cmd = [sys.executable, "-m", "whitebox.train", *flags, "--out", str(out)]
        r = subprocess.run(cmd + (["--processes", "2"] if n > 1 else []), capture_output=True,
                           text=True, env=ENV, timeout=300)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
        runs[n] = read_curve(out)
    one, two = runs[1], runs[2]
    assert [sorted(r) for r in two] == [sorted(r) for r in one]
    # (the probe's accuracy is left out: one digit of 600 flips with the rounding)
    assert_same_curve(two, one, keys=[k for k in one[0] if k.startswith(("train_", "test_"))])


def test_evaluation_share_is_every_size_th_batch_from_the_rank():
    task = Classify.__new__(Classify)
    assert list(task.evaluation_share(range(7))) == list(range(7))   # one process: all
    task.part = (1, 3)
    assert list(task.evaluation_share(range(7))) == [1, 4]
    assert not task.writes


def test_two_processes_resume_exactly(tmp_path):
    train(tmp_path / "whole", processes=2)
    train(tmp_path / "split", "--stop-after", "1", processes=2)
    train(tmp_path / "split", "--resume", processes=2)
    assert_same_curve(read_curve(tmp_path / "split"), read_curve(tmp_path / "whole"))


def long_run(tmp_path):
    """A run of 2 processes that would take minutes, started in its own process group."""
    cmd = [sys.executable, "-m", "whitebox.train", "--fast", "--epochs", "500", "--no-figures",
           "--no-progress", "--threads", "1", "--processes", "2", "--out", str(tmp_path)]
    run = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env=ENV, start_new_session=True)
    deadline = time.time() + 120
    while not (tmp_path / "checkpoint.npz").exists():        # training has started
        assert run.poll() is None and time.time() < deadline, run.communicate()
        time.sleep(0.2)
    return run


def children(pid):
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(c) for c in f.read().split()]


@pytest.mark.skipif(not os.path.exists(f"/proc/{os.getpid()}/task/{os.getpid()}/children"),
                    reason="finds the started process in /proc/<pid>/task/<pid>/children")
def test_a_killed_process_stops_the_run_with_a_message(tmp_path):
    run = long_run(tmp_path)
    workers = [c for c in children(run.pid)
               if "whitebox" in open(f"/proc/{c}/cmdline").read()
               or "multiprocessing" in open(f"/proc/{c}/cmdline").read()]
    spawned = [c for c in workers if "spawn_main" in open(f"/proc/{c}/cmdline").read()]
    assert len(spawned) == 1, workers
    os.kill(spawned[0], signal.SIGKILL)
    out, err = run.communicate(timeout=60)                     # no hang at the barrier
    assert run.returncode not in (0, None)
    assert "error: process 1 stopped; continue with --resume" in err, err[-2000:]
    assert "Traceback" not in err, err[-2000:]
    assert group_ends(run.pid)


def test_ctrl_c_stops_every_process_and_says_how_to_resume(tmp_path):
    run = long_run(tmp_path)
    os.killpg(run.pid, signal.SIGINT)                          # what a terminal sends
    out, err = run.communicate(timeout=60)
    assert run.returncode == 130, err[-2000:]
    assert "continue with --resume" in err and "Traceback" not in err, err[-2000:]
    assert group_ends(run.pid)                                 # nothing is left running


def group_ends(group, seconds=10):
    """True once no process of ``group`` is left (within ``seconds``)."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def test_processes_refuse_what_they_cannot_run():
    with pytest.raises(ValueError, match="--processes 2 and --distributed"):
        make_config(Classify, dict(processes=2, distributed=True))
    with pytest.raises(ValueError, match="--processes 2 trains copies on the CPU"):
        make_config(Classify, dict(processes=2, backend="cupy"))
    with pytest.raises(ValueError, match="processes"):
        make_config(Classify, dict(processes=0))


def test_bcast_is_from_process_zero_only():
    comm = ProcessComm(0, 1, links=[])
    assert comm.bcast("x") == "x"
    with pytest.raises(ValueError, match="root must be 0"):
        comm.bcast("x", root=1)


def pair():
    """Process 0's and process 1's communicators over one pipe, in this process."""
    zero, one = multiprocessing.Pipe()
    return ProcessComm(0, 2, [zero]), ProcessComm(1, 2, [one])


def test_a_failed_process_is_named_with_its_error():
    zero, one = pair()
    one.links[0].send(("error", "ValueError: bad data"))
    with pytest.raises(ProcessesStopped, match="process 1 stopped: ValueError: bad data"):
        zero.Barrier()


def test_sending_to_a_process_that_ended_says_so():
    zero, one = pair()
    one.links[0].send(("error", "MemoryError: "))
    one.links[0].close()
    with pytest.raises(ProcessesStopped, match="process 1 stopped: MemoryError"):
        zero.bcast("the segment's name")
    zero, one = pair()
    zero.links[0].close()
    with pytest.raises(ProcessesStopped, match="process 0 stopped"):
        one.bcast(None)


def test_processes_out_of_step_raise_instead_of_reading_each_others_data():
    zero, one = pair()
    one.links[0].send(("meet", ("allreduce", 7)))          # process 1 is in an allreduce
    with pytest.raises(ProcessesStopped, match="process 1 is out of step"):
        zero.Barrier()                                      # process 0 at the start barrier
    zero, one = pair()
    zero.links[0].send(("go", "barrier"))
    with pytest.raises(ProcessesStopped, match="process 0 is out of step"):
        one.bcast(None)


def test_an_in_process_run_leaves_no_process_behind(tmp_path):
    """train() from Python: the started process has ended when train() returns."""
    cfg = make_config(Classify, dict(processes=2, epochs=1, n_train=96, n_test=32,
                                     out=str(tmp_path), figures=False, progress=False),
                      fast=True)
    history = train_run(Classify, cfg)
    assert len(history) == 1
    assert multiprocessing.active_children() == []


def test_a_loss_that_couples_the_rows_is_not_split(tmp_path):
    r = subprocess.run([sys.executable, "-m", "whitebox.train", "--task", "ssl", "--fast",
                        "--processes", "2", "--out", str(tmp_path)],
                       capture_output=True, text=True, env=ENV, timeout=120)
    assert r.returncode == 2
    assert "couples the rows of a batch" in r.stderr and "--processes 2" in r.stderr, r.stderr
    assert not os.path.exists(tmp_path / "metrics.jsonl")


def test_an_unguarded_script_is_told_what_to_do(tmp_path):
    """The started processes import the script again: unguarded, it would start a run in
    each; the run stops with the reason instead of hanging."""
    script = tmp_path / "unguarded.py"
    script.write_text("from whitebox.train import run\n"
                      f"run(processes=2, fast=True, out={str(tmp_path / 'run')!r}, "
                      "figures=False, progress=False)\n")
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=ENV,
                       timeout=120)
    assert r.returncode != 0
    assert "process 1 stopped while starting" in r.stderr, r.stderr[-2000:]
    assert "if __name__ == '__main__':" in r.stderr


def test_dropout_draws_as_the_shards_of_threads_do(tmp_path):
    """Process r draws its shard's dropout masks as shard r of --threads does (threaded.py)."""
    train(tmp_path / "threads", "--dropout", "0.2", "--threads", "2")
    train(tmp_path / "processes", "--dropout", "0.2", processes=2)
    assert_same_curve(read_curve(tmp_path / "processes"), read_curve(tmp_path / "threads"))


def test_dropout_on_uneven_shards_resumes_exactly(tmp_path):
    """Batches of 50 on 3 processes split 17/17/16 (and the last, 42, 14/14/14): every process
    resumes from the checkpointed generators, which every process held."""
    flags = ("--dropout", "0.2", "--batch-size", "50")
    train(tmp_path / "whole", *flags, processes=3)
    train(tmp_path / "split", *flags, "--stop-after", "1", processes=3)
    train(tmp_path / "split", *flags, "--resume", processes=3)
    whole, split = read_curve(tmp_path / "whole"), read_curve(tmp_path / "split")
    assert without_times(split, "run") == without_times(whole, "run")
