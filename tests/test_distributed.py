"""Data-parallel training over MPI equals one process with the same global batch.

The end-to-end checks run `mpirun -n 2` and skip where mpi4py or mpirun is absent.
"""
import json
import os
import shutil
import subprocess
import sys
import threading

import numpy as np
import pytest

from common_checks import assert_same_curve, read_curve, without_times
from whitebox.models import CRATE

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = ["--fast", "--n-train", "192", "--n-test", "64", "--batch-size", "48", "--epochs", "2",
         "--no-figures", "--no-progress", "--threads", "1"]


def mpirun():
    pytest.importorskip("mpi4py")
    exe = shutil.which("mpirun") or shutil.which("mpiexec")
    if exe is None:
        pytest.skip("no mpirun/mpiexec on PATH")
    return exe


# python -m whitebox.train, with each rank writing the rows of every batch and of its shard
RECORDING_SHARDS = """
import os, sys
from whitebox.training import distributed
from whitebox.training.threaded import batch_rows
shard = distributed.DataParallel.shard
def recording(self, batch):
    part = shard(self, batch)
    with open(os.path.join(os.environ["SHARD_LOG"], f"rank{self.rank}"), "a") as f:
        f.write(f"{batch_rows(batch)} {batch_rows(part)}\\n")
    return part
distributed.DataParallel.shard = recording
from whitebox import train
train.main(sys.argv[1:])
"""


# python -m whitebox.train, with the writing rank killed (SIGKILL) at step KILL_AT of
# atomic_write (see whitebox.checkpoint._fault_hook) in its KILL_WRITE-th checkpoint write
KILLED_WRITER = """
import os, signal, sys
from whitebox import checkpoint
writes = []
def hook(point, path):
    if os.path.basename(path) != "checkpoint.npz":
        return
    if point == "created":
        writes.append(path)
    if point == os.environ["KILL_AT"] and len(writes) == int(os.environ["KILL_WRITE"]):
        os.kill(os.getpid(), signal.SIGKILL)
checkpoint._fault_hook = hook
from whitebox import train
train.main(sys.argv[1:])
"""

# OpenMPI refuses to start as root without these, and wants leave to put two ranks
# on one core; other MPI libraries ignore them
MPI_ENV = dict(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1")


def train(out, *extra, ranks=None, shard_log=None, kill_at=None, kill_write=2):
    job = (["-c", RECORDING_SHARDS] if shard_log else ["-c", KILLED_WRITER] if kill_at
           else ["-m", "whitebox.train"])
    cmd = [sys.executable, *job, *SMALL, "--out", str(out), *extra]
    if ranks:
        cmd = [mpirun(), "-n", str(ranks), *cmd, "--distributed"]
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               SHARD_LOG=str(shard_log or ""), KILL_AT=str(kill_at), KILL_WRITE=str(kill_write),
               **MPI_ENV)
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    if kill_at:
        assert r.returncode != 0, "the writer was to be killed: " + r.stdout[-2000:]
    else:
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    return r.stdout


def test_two_ranks_follow_one_process(tmp_path):
    mpirun()
    train(tmp_path / "one")
    (tmp_path / "shards").mkdir()
    out = train(tmp_path / "two", ranks=2, shard_log=tmp_path / "shards")
    # each rank trained on its half of every global batch of 48 (192 rows, 2 epochs)
    for rank in (0, 1):
        rows = (tmp_path / "shards" / f"rank{rank}").read_text().split("\n")[:-1]
        assert rows == ["48 24"] * 8, rows
    assert out.count("epoch   1 |") == 1                    # only rank 0 prints the epochs
    assert out.count("test accuracy:") == 1                 # and the last line
    assert_same_curve(read_curve(tmp_path / "two"), read_curve(tmp_path / "one"))
    assert sorted(os.listdir(tmp_path / "two")) == sorted(os.listdir(tmp_path / "one"))


def test_two_ranks_follow_one_process_with_random_masks(tmp_path):
    """CRATE-MAE draws its masks for the whole global batch before the split (Task.draw)."""
    mpirun()
    train(tmp_path / "one", "--task", "mae")
    train(tmp_path / "two", "--task", "mae", ranks=2)
    one = read_curve(tmp_path / "one")
    assert len(one) == 2
    assert_same_curve(read_curve(tmp_path / "two"), one, keys=("train_loss", "test_mse"))


@pytest.mark.slow
def test_two_ranks_resume_exactly(tmp_path):
    mpirun()
    train(tmp_path / "whole", ranks=2)
    train(tmp_path / "split", "--stop-after", "1", ranks=2)
    train(tmp_path / "split", "--resume", ranks=2)
    assert_same_curve(read_curve(tmp_path / "split"), read_curve(tmp_path / "whole"))


def temporaries(out):
    return sorted(name for name in os.listdir(out) if name.endswith(".tmp"))


def checkpoint_contents(path):
    """The checkpoint's arrays and metadata, less what names the run (folder, run id)."""
    with np.load(path) as archive:
        arrays = {k: archive[k] for k in archive.files}
    meta = json.loads(arrays.pop("__meta__").tobytes().decode("utf-8"))
    for key in ("out", "resume"):
        meta["extra"]["config"].pop(key)
    meta["extra"].pop("run_id")
    return arrays, meta


@pytest.fixture(scope="module")
def whole_three_epochs(tmp_path_factory):
    out = tmp_path_factory.mktemp("whole")
    train(out, "--epochs", "3", ranks=2)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("kill_at", ["created", "written", "synced", "renamed"])
def test_two_ranks_resume_after_the_writer_died_mid_checkpoint(tmp_path, whole_three_epochs,
                                                                 kill_at):
    """Rank 0 dies inside atomic_write of epoch 2's checkpoint: before the rename (an
    empty, a partly written or a whole temporary is left beside epoch 1's checkpoint)
    or right after it. Both ranks resume; only rank 0 removes the temporary, and the
    run ends exactly where the uninterrupted 2-rank run ends."""
    mpirun()
    cut = tmp_path / "cut"
    train(cut, "--epochs", "3", ranks=2, kill_at=kill_at, kill_write=2)
    epochs_saved = np.load(cut / "checkpoint.npz")["__meta__"].tobytes().decode()
    if kill_at == "renamed":
        assert temporaries(cut) == [] and '"epoch": 2' in epochs_saved
    else:
        assert len(temporaries(cut)) == 1 and '"epoch": 1' in epochs_saved
    train(cut, "--epochs", "3", "--resume", ranks=2)
    assert temporaries(cut) == []
    assert without_times(read_curve(cut), "run") == \
        without_times(read_curve(whole_three_epochs), "run")                         # bit for bit
    arrays, meta = checkpoint_contents(cut / "checkpoint.npz")
    want_arrays, want_meta = checkpoint_contents(whole_three_epochs / "checkpoint.npz")
    assert meta == want_meta
    assert sorted(arrays) == sorted(want_arrays)
    for k in arrays:
        assert arrays[k].dtype == want_arrays[k].dtype
        np.testing.assert_array_equal(arrays[k], want_arrays[k], err_msg=k)


class Comm:
    """A stand-in communicator: rank ``rank`` of ``size``; Allreduce sums over ``peers``
    (one dict shared by ranks running in threads, met at ``barrier``)."""

    def __init__(self, rank, size=3, peers=None, barrier=None):
        self.rank, self.size, self.peers, self.barrier = rank, size, peers, barrier

    def Get_rank(self):
        return self.rank

    def Get_size(self):
        return self.size

    def bcast(self, obj, root=0):
        """Rank ``root``'s obj to every rank; the others wait for it (as MPI's bcast)."""
        if self.rank == root:
            self.peers["bcast"] = obj
        self.barrier.wait()
        obj = self.peers["bcast"]
        self.barrier.wait()
        return obj

    def Allreduce(self, _, buf, op=None):
        self.peers[self.rank] = buf.copy()
        self.barrier.wait()
        buf[...] = sum(self.peers.values())
        self.barrier.wait()


def test_shards_cover_the_batch():
    pytest.importorskip("mpi4py")
    from whitebox.training.distributed import DataParallel

    images, labels = np.arange(20.0).reshape(10, 2), np.arange(10)
    rows = []
    for rank in range(3):
        dp = DataParallel(Comm(rank))
        x, y = dp.shard((images, labels))
        np.testing.assert_array_equal(x[:, 0] / 2, y)
        rows.extend(y)
    assert rows == list(range(10))
    with pytest.raises(ValueError, match="batch-size"):
        DataParallel(Comm(0)).shard((images[:2], labels[:2]))


def test_allreduce_weights_ranks_by_their_counts():
    """Two stand-in MPI ranks (threads with a barrier): the sum is weighted by sums['count']."""
    pytest.importorskip("mpi4py")
    from whitebox.training.distributed import DataParallel

    barrier, peers = threading.Barrier(2), {}
    models = [CRATE(28, 7, 10, 16, 1, 2, 8, channels=1, seed=0) for _ in range(2)]
    counts, fills, out = [1.0, 3.0], [2.0, 6.0], {}
    for m, v in zip(models, fills):
        for g in m.grads().values():
            g.fill(v)

    def rank(r):
        out[r] = DataParallel(Comm(r, 2, peers, barrier)).allreduce(models[r], {"count": np.asarray(counts[r]),
                                                             "loss": np.asarray(1.0)})
    threads = [threading.Thread(target=rank, args=(r,)) for r in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    expected = (1.0 * 2.0 + 3.0 * 6.0) / 4.0                  # count-weighted, not 4.0 (rows)
    for m in models:
        for g in m.grads().values():
            np.testing.assert_allclose(g, expected)
    assert float(out[0]["count"]) == 4.0 and float(out[1]["loss"]) == 2.0


def two_ranks(work):
    """work(rank, comm) in two threads as stand-in MPI ranks; (results, errors) by rank."""
    barrier, peers, results, errors = threading.Barrier(2, timeout=20), {}, {}, {}

    def rank(r):
        try:
            results[r] = work(r, Comm(r, 2, peers, barrier))
        except BaseException as err:
            errors[r] = err
    threads = [threading.Thread(target=rank, args=(r,)) for r in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, errors


def shared_run(out, rank, comm):
    from whitebox.training.distributed import DataParallel, SharedRun

    return SharedRun(str(out), DataParallel(comm))


def folder_state(out):
    return {name: (out / name).read_bytes() for name in sorted(os.listdir(out))
            if (out / name).is_file()}


def test_only_the_writer_cleans_the_run_folder_on_resume(tmp_path, monkeypatch):
    """Rank 1 waits until rank 0 has removed the stale temporary and takes its config;
    it never removes or writes anything (an os.remove / os.replace of its fails here)."""
    pytest.importorskip("mpi4py")
    (tmp_path / "config.json").write_text('{"task": "classify", "run_id": "abc"}')
    (tmp_path / "checkpoint.npz").write_bytes(b"epoch 1")
    (tmp_path / ".checkpoint.npz.0123abcd.tmp").write_bytes(b"left by the killed writer")
    writer_thread = []
    remove, replace = os.remove, os.replace

    def only_rank0(real):
        def call(*args, **kwargs):
            assert threading.current_thread() is writer_thread[0], "rank 1 changed the folder"
            return real(*args, **kwargs)
        return call
    monkeypatch.setattr(os, "remove", only_rank0(remove))
    monkeypatch.setattr(os, "replace", only_rank0(replace))

    def work(rank, comm):
        if rank == 0:
            writer_thread.append(threading.current_thread())
        run = shared_run(tmp_path, rank, comm)
        saved = run.open_for_resume()
        run.write_metrics([{"epoch": 1}])
        run.write_config({"task": "classify"})
        return saved, run.run_id
    results, errors = two_ranks(work)
    assert errors == {}
    assert results[0] == results[1] == ({"task": "classify", "run_id": "abc"}, "abc")
    assert sorted(os.listdir(tmp_path)) == ["checkpoint.npz", "config.json", "metrics.jsonl"]


def test_other_ranks_take_the_writers_fresh_start_and_its_errors(tmp_path):
    pytest.importorskip("mpi4py")
    (tmp_path / "config.json").write_text('{"task": "classify", "run_id": "earlier"}')
    results, errors = two_ranks(lambda rank, comm: shared_run(tmp_path, rank,
                                                              comm).start_fresh())
    assert errors == {}
    # both ranks learn where rank 0 moved the earlier run (the caller prints it once)
    assert results[0] == results[1] == str(tmp_path / "earlier" / "earlier")
    assert os.listdir(tmp_path / "earlier" / "earlier") == ["config.json"]

    def resume_missing(rank, comm):
        run = shared_run(tmp_path / "nowhere", rank, comm)
        return run.open_for_resume()
    results, errors = two_ranks(resume_missing)
    assert results == {} and sorted(errors) == [0, 1]
    for err in errors.values():
        assert isinstance(err, FileNotFoundError) and "config.json" in str(err)


def test_fresh_ranks_share_one_run_id(tmp_path):
    pytest.importorskip("mpi4py")
    def work(rank, comm):
        run = shared_run(tmp_path, rank, comm)
        run.start_fresh()
        return run.run_id
    results, errors = two_ranks(work)
    assert errors == {} and results[0] == results[1] and len(results[0]) == 16
