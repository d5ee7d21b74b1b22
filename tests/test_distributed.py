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


def train(out, *extra, ranks=None, shard_log=None):
    job = ["-c", RECORDING_SHARDS] if shard_log else ["-m", "whitebox.train"]
    cmd = [sys.executable, *job, *SMALL, "--out", str(out), *extra]
    if ranks:
        cmd = [mpirun(), "-n", str(ranks), *cmd, "--distributed"]
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               SHARD_LOG=str(shard_log or ""))
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    return r.stdout


def curve(out):
    with open(os.path.join(out, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def assert_same_curve(a, b):
    assert [r["epoch"] for r in a] == [r["epoch"] for r in b]
    for ra, rb in zip(a, b):
        for k in ("train_loss", "test_loss", "train_acc", "test_acc"):
            np.testing.assert_allclose(ra[k], rb[k], rtol=2e-5, atol=1e-6, err_msg=k)


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
    assert_same_curve(curve(tmp_path / "two"), curve(tmp_path / "one"))
    assert sorted(os.listdir(tmp_path / "two")) == sorted(os.listdir(tmp_path / "one"))


def test_two_ranks_follow_one_process_with_random_masks(tmp_path):
    """CRATE-MAE draws its masks for the whole global batch before the split (Task.draw)."""
    mpirun()
    train(tmp_path / "one", "--task", "mae")
    train(tmp_path / "two", "--task", "mae", ranks=2)
    one, two = curve(tmp_path / "one"), curve(tmp_path / "two")
    assert len(one) == len(two) == 2
    for ra, rb in zip(two, one):
        for k in ("train_loss", "test_mse"):
            np.testing.assert_allclose(ra[k], rb[k], rtol=2e-5, err_msg=k)


@pytest.mark.slow
def test_two_ranks_resume_exactly(tmp_path):
    mpirun()
    train(tmp_path / "whole", ranks=2)
    train(tmp_path / "split", "--stop-after", "1", ranks=2)
    train(tmp_path / "split", "--resume", ranks=2)
    assert_same_curve(curve(tmp_path / "split"), curve(tmp_path / "whole"))


class Comm:
    """A stand-in communicator: rank ``rank`` of ``size``; Allreduce sums over ``peers``
    (one dict shared by ranks running in threads, met at ``barrier``)."""

    def __init__(self, rank, size=3, peers=None, barrier=None):
        self.rank, self.size, self.peers, self.barrier = rank, size, peers, barrier

    def Get_rank(self):
        return self.rank

    def Get_size(self):
        return self.size

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
