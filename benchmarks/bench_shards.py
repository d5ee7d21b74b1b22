"""Two cores for one training step: batch shards in threads against BLAS threads, idle and loaded.

    python benchmarks/bench_shards.py [--repeats 7] [--models quickstart mnist-demo]

For each model, the median wall time of one float32 training step
(forward, cross-entropy, backward) three ways, alternating step by step:
- 1 thread: one step, one BLAS thread;
- 2 shards: the batch split in two, each half run by its own thread with a
  one-thread BLAS (whitebox/training/threaded.py; what --threads 2 does);
- 2 BLAS threads: one step, the matrix products on two BLAS threads.
First on the machine as it is (labelled "idle" only when its load average
is below half a process per core, else "LOADED", with a warning), then
beside one busy process (`python -c "while True: pass"`), as a laptop
running something else would be.
Alternating step by step keeps the columns under the same machine state,
but OpenBLAS's threads spin for a while after each call of the "2 BLAS
threads" column and slow the column after it, most of all beside the busy
process (the Quickstart's one-thread step: 16.4 ms alone there, 29 ms in
this rotation). `bench_crate.py --beside-busy` times the shards alone.
"""
import argparse
import os
import sys

import numpy as np

from whitebox import memory, threads
from whitebox.models import CRATE
from whitebox.training.threaded import ShardThreads

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import as_it_is_then_busy  # noqa: E402
from bench_crate import shard_step, sharded_runner, time_runners  # noqa: E402

# short name -> (label, (batch, image side, patch, dim, depth, heads, dim_head))
MODELS = {
    "quickstart": ("Quickstart (d 96, L 4, patch 7)", (64, 28, 7, 96, 4, 4, 24)),
    "mnist-demo": ("mnist-demo (d 96, L 4, patch 4)", (128, 28, 4, 96, 4, 4, 24)),
    "wider": ("wider (d 256, L 8, patch 7)", (128, 28, 7, 256, 8, 4, 64)),
    "cifar-crate-t": ("cifar-crate-t (d 384, L 12, patch 4)", (32, 32, 4, 384, 12, 6, 64)),
}


def model_name(text):
    """--models: a short name (or a table label, as older commands wrote them)."""
    for short, (label, _) in MODELS.items():
        if text.lower() in (short, label.lower()):
            return short
    raise argparse.ArgumentTypeError(f"unknown model {text!r}; choose from "
                                     f"{', '.join(MODELS)}")


def runners(batch, side, patch, dim, depth, heads, dim_head):
    channels = 3 if side == 32 else 1
    rng = np.random.default_rng(0)
    x = rng.random((batch, channels, side, side), dtype=np.float32)
    y = rng.integers(0, 10, batch)
    model = CRATE(side, patch, 10, dim, depth, heads, dim_head, channels=channels, seed=0)
    engine = ShardThreads(model, 2)

    def one():
        with threads.limited(1):
            model.zero_grad()
            shard_step(model, (x, y))

    def blas():
        with threads.limited(2):
            model.zero_grad()
            shard_step(model, (x, y))

    return {"1 thread": one, "2 shards": sharded_runner(engine, (x, y)),
            "2 BLAS threads": blas}, x


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--models", nargs="+", default=list(MODELS), type=model_name,
                    metavar="MODEL", help=f"models to time (default: all): {', '.join(MODELS)}")
    args = ap.parse_args(argv)
    memory.keep_freed_memory()                   # as training runs
    rows = []
    for condition, beside in as_it_is_then_busy():
        with beside:
            for name in args.models:
                label, config = MODELS[name]
                run, x = runners(*config)
                wall, _ = time_runners(run, x, None, args.repeats, 2)
                rows.append((label, condition, wall))
    print(f"\none float32 training step, ms (median of {args.repeats}, alternating), "
          f"{os.cpu_count()} cores")
    print("| model | machine | 1 thread | 2 shards | 2 BLAS threads | 1 thread / 2 shards |")
    print("|---|---|---|---|---|---|")
    for name, condition, wall in rows:
        ms = {k: 1e3 * v for k, v in wall.items()}
        print(f"| {name} | {condition} | {ms['1 thread']:.1f} | {ms['2 shards']:.1f} | "
              f"{ms['2 BLAS threads']:.1f} | {ms['1 thread'] / ms['2 shards']:.2f} |")
    return rows


if __name__ == "__main__":
    main()
