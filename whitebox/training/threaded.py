"""Data parallelism over threads: one process, each batch split across the cores.

NumPy runs its elementwise work (the softmax, LayerNorm, ISTA's threshold)
on one core whatever the machine has; BLAS threads speed up only the matrix
products, and wait for each other when another process holds a core. So
with ``--threads W`` (W > 1, NumPy) the loop splits every batch into W
shards instead, and W threads each run forward, loss and backward of one
shard, every one of them on one core with a one-thread BLAS:

    shard i  ->  replica i:  forward, loss_i, backward    (in parallel)
    grads    =   sum_i (c_i / c) grads_i                  c_i: shard i's count
    loss     =   sum_i (c_i / c) loss_i

Replica 0 is the model itself; the others come from ``Module.replica()``:
they share the model's parameter arrays (so the optimizer's step moves
them all) and keep their own gradients and caches. The weights c_i / c
make the sum the gradient of the mean loss over the whole batch, because
each task's loss is the mean of its shard over the shard's "count" (rows,
or masked tokens for the masked LM) and the gradient is linear. This is the
argument of MPI data parallelism (distributed.py), with threads for ranks;
without dropout only the order of float additions differs from a one-thread
step.

The threads really run at once because NumPy lets go of Python's global
lock inside its array loops and BLAS calls. Dropout draws its masks inside
``train_step``, so the shards must not share a generator (the order of
their draws would depend on the threads' timing). Shard 0 draws from the
model's own generators; at every step, before the threads start, shard
i > 0 gets for each generator g of the model a fresh one,

    g_i = Generator(SeedSequence(entropy = words of g's state now, spawn_key = (i,)))

so the masks follow from the model's generator states alone: a run is
reproducible at a fixed ``--threads``, and a resumed run (the checkpoint
holds those states) draws what the uninterrupted one drew at that count. The masks are
not those of a one-thread run, whose single stream the shards cannot split.
A step that draws nothing leaves every generator as it was. Random draws
made outside ``train_step`` (CRATE-MAE's patch masks in ``Task.draw``, the
masked LM's token masks when batches are made) cover the whole batch
before the split, as without shards.
``plan`` keeps one thread for the step (and gives the BLAS pool the W
threads) only where the task's loss couples the rows of a batch
(``Task.step_splits``).
"""
import weakref
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..data.loader import shard_bounds


def batch_rows(batch, who="--threads"):
    """The number of samples in a batch tuple (every array holds them along axis 0)."""
    if not isinstance(batch, (tuple, list)) or not batch:
        raise TypeError(f"{who} needs batches that are tuples of arrays with the samples "
                        f"along axis 0, got {type(batch).__name__}")
    n = len(batch[0])
    if any(len(a) != n for a in batch):
        raise ValueError(f"{who}: the arrays of a batch differ in length {[len(a) for a in batch]}")
    return n


def split_batch(batch, parts, who="--threads"):
    """Contiguous shards of the rows of every array of a batch tuple: a list of ``parts`` tuples."""
    n = batch_rows(batch, who)
    if n < parts:
        raise ValueError(f"{who}: a batch of {n} samples cannot be split into {parts} shards "
                         "(the last batch of an epoch holds the remainder of the training "
                         "set); choose --batch-size or the training-set size so that every "
                         "batch has at least that many")
    bounds = shard_bounds(n, parts)
    return [type(batch)(a[lo:hi] for a in batch) for lo, hi in zip(bounds[:-1], bounds[1:])]


def _state_words(value, out):
    """The integers of a bit generator's state (nested dicts, ints, arrays), in a fixed order."""
    if isinstance(value, dict):
        for key in sorted(value):
            _state_words(value[key], out)
    elif isinstance(value, np.ndarray):
        out.extend(int(w) for w in value.ravel())
    elif isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        out.append(int(value))
    return out


def shard_generator(g, i):
    """Shard i's generator for one step: Generator(SeedSequence(g's state words, spawn_key=(i,))).

    A function of g's current state and i only: the same state gives the same
    generator, different shards independent streams. g itself is not advanced.
    """
    words = [w for w in _state_words(g.bit_generator.state, []) if w >= 0]
    seq = np.random.SeedSequence(words or 0, spawn_key=(int(i),))
    return np.random.Generator(type(g.bit_generator)(seq))


def generator_slots(model, twin):
    """(module of twin, the model's generator) for every module holding one as ``rng``
    (the attribute Module.generators reads)."""
    slots = []
    for (_, mod), (_, other) in zip(model.named_modules(), twin.named_modules()):
        g = mod.__dict__.get("rng")
        if isinstance(g, np.random.Generator):
            slots.append((other, g))
    return slots


def draw_as_shard(slots, i):
    """Point each slot's module at ``shard_generator(g, i)`` of its generator g (one derived
    generator per distinct g, as modules may share one); ``slots`` from generator_slots."""
    derived = {}
    for module, g in slots:
        if id(g) not in derived:
            derived[id(g)] = shard_generator(g, i)
        object.__setattr__(module, "rng", derived[id(g)])


def plan(cfg, task, model):
    """How a run uses cfg.threads: 'shards' (this module) or 'blas' (the BLAS pool only)."""
    if cfg.threads < 2 or cfg.backend != "numpy" or not task.step_splits(model):
        return "blas"
    return "shards"


class ShardThreads:
    """Runs each training step on ``workers`` shards of the batch in parallel threads.

    The steps given to ``step`` must compute a mean over the rows of their
    shard (``plan`` checks that for a task). Shard 0 runs on the model and
    draws from its generators; the replicas draw from generators derived
    from those at every step (``shard_generator``).
    """

    def __init__(self, model, workers):
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 2:
            raise ValueError(f"workers must be an integer >= 2, got {workers!r}")
        if model.backend != "numpy":
            raise ValueError(f"ShardThreads runs NumPy models; this one lives on {model.backend!r}, "
                             "where the device runs the whole batch")
        self.model, self.workers = model, workers
        self.replicas = [model] + [model.replica() for _ in range(workers - 1)]
        self._names = sorted(model.grads())
        self._slots = [generator_slots(model, r) for r in self.replicas[1:]]
        self._pool = ThreadPoolExecutor(workers - 1, thread_name_prefix="whitebox-shard")
        # the threads end with the engine, even when a run stops on an error before close()
        self._finalizer = weakref.finalize(self, self._pool.shutdown, wait=False)

    def close(self):
        """End the worker threads (also done when the engine is garbage-collected)."""
        self._finalizer()

    def step(self, train_step, batch):
        """``train_step(model, shard)`` on every shard at once; gradients combined into the model's.

        The model's gradients must be zero on entry (the loop's zero_grad), as
        for one ``train_step``. Returns (loss, sums) like one train_step on the
        whole batch.
        """
        parts = min(self.workers, batch_rows(batch))     # a short last batch: fewer shards
        if parts == 1:
            return train_step(self.model, batch)
        shards = split_batch(batch, parts)
        replicas = self.replicas[:parts]
        self._seed_replicas(parts)
        futures = [self._pool.submit(self._run, train_step, r, s)
                   for r, s in zip(replicas[1:], shards[1:])]
        results = [train_step(self.model, shards[0])] + [f.result() for f in futures]
        counts = [float(sums["count"]) for _, sums in results]
        total = sum(counts)
        weights = [c / total for c in counts] if total else [1.0 / len(counts)] * len(counts)
        self._combine(replicas, weights)
        loss = sum(w * loss for w, (loss, _) in zip(weights, results) if w)
        sums = {k: sum(s[k] for _, s in results) for k in results[0][1]}
        return np.asarray(loss, dtype=results[0][0].dtype), sums

    def _seed_replicas(self, parts):
        """Point replica i's generator attributes at shard_generator(g, i) of the model's g."""
        for i, slots in enumerate(self._slots[:parts - 1], start=1):
            draw_as_shard(slots, i)

    @staticmethod
    def _run(train_step, replica, shard):
        replica.zero_grad()
        return train_step(replica, shard)

    def _combine(self, replicas, weights):
        """grads = sum_i w_i grads_i into the model's, the parameters split among the threads."""
        grads = [r.grads() for r in replicas]
        groups = [self._names[i::self.workers] for i in range(self.workers)]

        def combine(names):
            for k in names:
                g = grads[0][k]
                if weights[0] == 0.0:
                    g.fill(0)
                elif weights[0] != 1.0:
                    g *= weights[0]
                for w, other in zip(weights[1:], grads[1:]):
                    if w:
                        g += other[k] * w

        futures = [self._pool.submit(combine, names) for names in groups[1:]]
        combine(groups[0])
        for f in futures:
            f.result()
