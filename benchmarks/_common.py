"""What the benchmarks share: the machine's load.

A wall time means little on a machine other programs keep busy (on two
cores at a load of 11, a two-thread step ran 16x slower than a one-thread
one), so every benchmark warns when the load it starts at is high, and the
tables label the machine "idle" only when it was. (No benchmark draws a
progress bar; the training runs they start pass --no-progress.)
"""
import contextlib
import os
import subprocess
import sys
import time

LOADED = 0.5    # load average per core above which a machine does not count as idle


def cores():
    """The number of cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def machine_load():
    """(1-minute load average or None where the system has none, cores)."""
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        load = None
    return load, cores()


def load_averages():
    """The 1, 5 and 15 minute load averages as uptime prints them ('unknown' where the
    system has none)."""
    try:
        return ", ".join(f"{a:.2f}" for a in os.getloadavg())
    except (AttributeError, OSError):
        return "unknown"


def is_loaded(load=None, n=None):
    """True when the load average exceeds LOADED per core (None: not known, False)."""
    if load is None:
        load, n = machine_load()
    return load is not None and load > LOADED * (n or cores())


def machine_state():
    """A label for a table: 'idle (load 0.1, 2 cores)' or 'LOADED (load 4.0, 2 cores)'."""
    load, n = machine_load()
    if load is None:
        return f"load unknown, {n} cores"
    return f"{'LOADED' if is_loaded(load, n) else 'idle'} (load {load:.1f}, {n} cores)"


@contextlib.contextmanager
def one_busy_process():
    """Inside the block another process keeps one core busy (``python -c "while True:
    pass"``), as a laptop running something else would; it is killed after the block."""
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)                          # running before the first timing
        yield busy
    finally:
        busy.kill()
        busy.wait()


def as_it_is_then_busy(what="the 'as it is' timings"):
    """(label, context) for the machine as it is (warning when it is loaded), then for
    one busy process beside the timings: ``for label, beside in ...: with beside: ...``."""
    yield warn_if_loaded(what), contextlib.nullcontext()
    yield "one busy process", one_busy_process()


def warn_if_loaded(what="timings", stream=None):
    """Print one line to stderr when the machine is loaded; returns machine_state()."""
    state = machine_state()
    load, n = machine_load()
    if is_loaded(load, n):
        print(f"warning: the machine is busy (load average {load:.1f} on {n} cores): "
              f"{what} measured now are slower and noisier than on an idle machine",
              file=stream or sys.stderr, flush=True)
    return state

