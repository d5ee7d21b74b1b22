"""Data-parallel training over MPI equals one process with the same global batch.

The end-to-end checks run `mpirun -n 2` and skip where mpi4py or mpirun is absent.
"""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = ["--fast", "--n-train", "192", "--n-test", "64", "--batch-size", "48", "--epochs", "2",
         "--no-figures", "--no-progress", "--threads", "1"]


def mpirun():
    pytest.importorskip("mpi4py")
    exe = shutil.which("mpirun") or shutil.which("mpiexec")
    if exe is None:
        pytest.skip("no mpirun/mpiexec on PATH")
    return exe


def train(out, *extra, ranks=None):
    cmd = [sys.executable, "-m", "whitebox.train", *SMALL, "--out", str(out), *extra]
    if ranks:
        cmd = [mpirun(), "-n", str(ranks), *cmd, "--distributed"]
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
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
    out = train(tmp_path / "two", ranks=2)
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


def test_shards_cover_the_batch():
    pytest.importorskip("mpi4py")
    from whitebox.training.distributed import DataParallel

    class Comm:                                    # a stand-in rank of a 3-rank world
        def __init__(self, rank):
            self.rank = rank

        def Get_rank(self):
            return self.rank

        def Get_size(self):
            return 3

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
