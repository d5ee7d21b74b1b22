"""Data-parallel training over processes on this machine: ``--processes N``, no MPI needed.

The scheme is distributed.py's, word for word: N processes each hold a full
copy of the model, every one draws the same global batch and trains on its
shard of the rows, one allreduce per step adds their count-weighted
gradients, and every process takes the same optimizer step. Process 0 is the
one you started: it prints and writes the run folder; it starts processes
1..N-1 with multiprocessing's "spawn" (a fresh interpreter, safe on every
platform), and they run the same settings.

Why processes and not threads (``--threads``): a step of a small model is
thousands of short NumPy calls, and threads take turns at Python's lock
between them, so two threads seldom make a step twice as fast. Processes
share no lock.

The collective calls are those of an mpi4py communicator, so
``distributed.DataParallel`` and ``SharedRun`` use them unchanged:

  * ``Allreduce``: each process writes its buffer into its own row of a
    block of shared memory, all meet (``Barrier``), and each adds the rows in
    the same order (so every copy gets the same bits). Two blocks alternate,
    so one meeting per call is enough: nobody can write a block again before
    everyone has passed the next meeting, that is, read it.
  * ``Barrier``: each other process sends process 0 a token down its pipe
    and waits; process 0 takes them all, then answers each.
  * ``bcast``: process 0 sends the object down the pipe to each other one.

Every meeting goes through process 0 over the pipes, so a process that
stops (an error, a kill) closes its pipe and the others raise at once
instead of waiting forever; one that fails sends its error first, and
process 0 names it. The started processes ignore Ctrl-C: process 0 reports
it, and at the end of a run, or when it stops, it closes its pipes, waits
for the others to end and removes the shared memory.
"""
import contextlib
import multiprocessing
import signal
import threading
from multiprocessing import shared_memory

import numpy as np

_COMM = None          # in a started process: its ProcessComm


class ProcessesStopped(RuntimeError):
    """Another process of the run stopped; the message says which and why, where known."""


class ProcessComm:
    """Rank ``rank`` of ``size`` processes: the subset of an mpi4py communicator training uses.

    ``links`` are the pipes: in process 0 one per other process (rank 1
    first), in the others the one to process 0; ``workers``, in process 0,
    the started processes. Every message is a pair (kind, value), and each
    side checks that the kind is the one the call expects, so processes
    that fell out of step raise instead of reading each other's data.
    """

    def __init__(self, rank, size, links, workers=()):
        self.rank, self.size, self.links, self.workers = rank, size, links, list(workers)
        self.blocks, self.memory, self.calls = {}, [], 0
        self.heard = set()              # the ranks a message has come from

    def Get_rank(self):
        return self.rank

    def Get_size(self):
        return self.size

    def Barrier(self, tag="barrier"):
        """Every process arrives here (with the same ``tag``) before any leaves."""
        if self.rank == 0:
            for r, link in enumerate(self.links, start=1):
                self._expect(link, r, "meet", tag)
            for r, link in enumerate(self.links, start=1):
                self._send(link, r, ("go", tag))
        else:
            self._send(self.links[0], 0, ("meet", tag))
            self._expect(self.links[0], 0, "go", tag)

    def bcast(self, obj, root=0):
        """Process 0's ``obj`` in every process (only root 0 is supported)."""
        if root != 0:
            raise ValueError(f"root must be 0, got {root!r}")
        if self.rank == 0:
            for r, link in enumerate(self.links, start=1):
                self._send(link, r, ("bcast", obj))
            return obj
        return self._expect(self.links[0], 0, "bcast")

    def Allreduce(self, sendbuf, recvbuf, op=None):
        """Sum ``recvbuf`` (a float64 vector) over the processes, in place in every one.

        ``sendbuf`` and ``op`` are accepted for mpi4py's signature: the
        buffer is always summed in place.
        """
        n = recvbuf.size
        if n not in self.blocks:
            self.blocks[n] = self._share_blocks(n)
        block = self.blocks[n][self.calls % 2]
        self.calls += 1
        block[self.rank] = recvbuf
        self.Barrier(("allreduce", n))
        np.sum(block, axis=0, out=recvbuf)

    # ------------------------------------------------------------ messages
    def _send(self, link, rank, message):
        try:
            link.send(message)
        except OSError:                 # its end is closed: it stopped (and may have said why)
            raise ProcessesStopped(self._last_words(link, rank)) from None

    def _expect(self, link, rank, kind, tag=None):
        """The value of the next message from ``rank``, which must be (kind, tag) or (kind, x)."""
        try:
            got, value = link.recv()
        except (EOFError, OSError):
            raise ProcessesStopped(self._stopped(rank)) from None
        if got == "error":
            raise ProcessesStopped(self._stopped(rank, value))
        if got != kind or (tag is not None and value != tag):
            raise ProcessesStopped(f"process {rank} is out of step: it sent {got!r} "
                                   f"({value!r}) where {kind!r} ({tag!r}) was due")
        self.heard.add(rank)
        return value

    def _last_words(self, link, rank):
        try:
            if link.poll(0):
                got, value = link.recv()
                if got == "error":
                    return self._stopped(rank, value)
        except (EOFError, OSError, ValueError, TypeError):
            pass
        return self._stopped(rank)

    def _stopped(self, rank, error=None):
        """Why the run cannot go on: ``rank`` stopped (with ``error``, where it sent one)."""
        text = f"process {rank} stopped" + (f": {error}" if error else "")
        if rank and rank not in self.heard and not error:
            text += (" while starting (its error is printed above; a script that starts a "
                     "run with --processes must do so under if __name__ == '__main__':, "
                     "as the processes import it again)")
        return text

    # ------------------------------------------------------------ shared memory
    def _share_blocks(self, n):
        """Two (size, n) float64 blocks in shared memory, for sums of n numbers.

        Process 0 makes the segment and sends its name; the others attach to
        it. (Spawned processes report to process 0's resource tracker, which
        keeps one entry per name, so process 0's unlink leaves none behind.)
        """
        nbytes = 2 * self.size * n * 8
        if self.rank == 0:
            memory = shared_memory.SharedMemory(create=True, size=nbytes)
            self.memory.append(memory)          # before anything can fail: close() frees it
            self.bcast(memory.name)
        else:
            memory = shared_memory.SharedMemory(name=self.bcast(None))
            self.memory.append(memory)
        both = np.ndarray((2, self.size, n), dtype=np.float64, buffer=memory.buf)
        return both[0], both[1]

    def close(self):
        """Free the shared memory; in process 0 also end the others.

        Process 0 removes the segments, closes its pipes (a process still
        waiting for it then stops) and waits up to 10 s for each started
        process to end before it terminates it.
        """
        self.blocks = {}
        for memory in self.memory:
            memory.close()
            if self.rank == 0:
                memory.unlink()
        self.memory = []
        if self.rank == 0:
            for link in self.links:
                link.close()
            for worker in self.workers:
                worker.join(10.0)
                if worker.is_alive():
                    worker.terminate()
                    worker.join()
            self.links, self.workers = [], []


def current():
    """The communicator of this process when it was started by :func:`launch`, else None."""
    return _COMM


def launch(task, cfg):
    """Start processes 1..N-1 of ``cfg.processes`` training ``task`` (the Task subclass) with
    ``cfg``; this one becomes process 0.

    The started processes ignore Ctrl-C (SIGINT): process 0 reports it and
    its close() ends them. Returns process 0's ProcessComm.
    """
    context = multiprocessing.get_context("spawn")
    links, workers = [], []
    with sigint_ignored():              # inherited by the started interpreters
        for rank in range(1, cfg.processes):
            mine, theirs = context.Pipe()
            worker = context.Process(target=_run, args=(task, cfg, rank, theirs),
                                     name=f"whitebox-process-{rank}", daemon=True)
            worker.start()
            theirs.close()
            links.append(mine)
            workers.append(worker)
    return ProcessComm(0, cfg.processes, links, workers)


@contextlib.contextmanager
def sigint_ignored():
    """SIGINT ignored inside the block (outside the main thread: left as it is)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _run(task, cfg, rank, link):
    """Process ``rank``: train ``task`` with ``cfg`` silently, as a copy that writes nothing
    (the spawn target)."""
    global _COMM
    from .loop import Training

    _COMM = ProcessComm(rank, cfg.processes, [link])
    try:
        Training(task, cfg).run()
    except ProcessesStopped:
        pass               # process 0 stopped, and says why
    except BaseException as err:
        try:
            link.send(("error", f"{type(err).__name__}: {err}"))
        except OSError:
            pass
    finally:
        _COMM.close()
