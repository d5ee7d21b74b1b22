"""How many threads the BLAS library (OpenBLAS, MKL, ...) under NumPy may use.

NumPy's matrix products run in a BLAS thread pool that, left alone, starts one
thread per core. On a quiet machine that helps the large products; but BLAS
threads wait for each other, and when another busy process holds a core the
waiting dominates (benchmarks/README.md), while NumPy's own elementwise work
never uses more than one thread anyway. So whitebox sets the pool deliberately:

    from whitebox import threads
    threads.set_threads(1)           # from now on
    with threads.limited(2):         # only inside the block
        ...

Training uses the cores another way: `python -m whitebox.train --threads N`
splits each batch into N shards that N threads run at once, each with a
one-thread BLAS (whitebox/training/threaded.py), so the elementwise work
runs on every core too and no thread waits on another's BLAS call, which
holds up under load. Only a task whose loss couples the rows of a batch
(Task.step_splits: the self-supervised one) gives the N threads to BLAS
instead. Training sets the pool only while it trains;
the process's own setting comes back after it. DEFAULT_THREADS = 1 is the library's
default and the image tasks': two shards made a step of the Quickstart model at
batch 128 1.6x faster on a lightly loaded 2-core machine, but slower than one
thread once one more busy process ran, and a run's result depends on its
thread count (benchmarks/README.md, "The default classification recipe").
The language-model tasks default to 2. ``--processes N`` (training/processes.py)
is the third way: N processes, each with this pool, share no interpreter lock. The pool is
controlled through threadpoolctl, which finds every BLAS and OpenMP library
loaded into the process, whatever NumPy was built with.
Arrays on a GPU (CuPy) do not use these threads; the setting is harmless there.
"""
import contextlib
import os

from threadpoolctl import threadpool_info, threadpool_limits

from .functional._checks import check_threads

DEFAULT_THREADS = 1


def _resolve(n):
    if n is None:
        return os.cpu_count() or 1
    check_threads(n)
    return n


def get_threads():
    """The number of threads the BLAS pool(s) may use now (the largest, if several)."""
    counts = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
    return max(counts) if counts else 1


def set_threads(n=DEFAULT_THREADS):
    """Let BLAS use ``n`` threads from now on (None: one per core). Returns the previous count."""
    n = _resolve(n)
    previous = get_threads()
    threadpool_limits(limits=n, user_api="blas")
    return previous


@contextlib.contextmanager
def limited(n=DEFAULT_THREADS):
    """Let BLAS use ``n`` threads inside a ``with`` block; the previous setting comes back."""
    n = _resolve(n)
    with threadpool_limits(limits=n, user_api="blas"):
        yield n
