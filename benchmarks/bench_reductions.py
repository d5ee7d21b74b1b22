"""Time the candidate reductions of functional/_blas.py at 1 and 2 BLAS threads.

    python benchmarks/bench_reductions.py            # idle
    python benchmarks/bench_reductions.py --busy     # beside one busy process

Prints median, 90th percentile and mean (ms) of many calls per candidate: a
BLAS product with ones, `einsum`, and the plain ufunc reduction. The mean
shows the rare very slow calls that multi-threaded BLAS makes when a core
is busy; a reduction is chosen by its worst column, not its best.
"""
import argparse
import os
import statistics
import subprocess
import sys
import time

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import warn_if_loaded  # noqa: E402

SHAPES = [(2080, 384), (1576, 384), (6400, 96), (12480, 64)]


def timings(f, n):
    f()
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t)
    ts.sort()
    return 1e3 * statistics.median(ts), 1e3 * ts[int(0.9 * n)], 1e3 * statistics.fmean(ts)


def candidates(x):
    rows, k = x.shape
    col = np.full((k, 1), 1.0 / k, dtype=x.dtype)
    row = np.ones(rows, dtype=x.dtype)
    return {
        "last: BLAS x @ ones": lambda: x @ col,
        "last: einsum": lambda: np.einsum("ij->i", x),
        "last: x.sum(-1)": lambda: x.sum(-1),
        "leading: BLAS ones @ x": lambda: row @ x,
        "leading: einsum": lambda: np.einsum("ij->j", x),
        "leading: x.sum(0)": lambda: x.sum(0),
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--busy", action="store_true", help="run one busy process alongside")
    ap.add_argument("--calls", type=int, default=200)
    args = ap.parse_args(argv)
    warn_if_loaded()
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if args.busy else None
    try:
        rng = np.random.default_rng(0)
        print(f"float32, {'one busy process alongside' if busy else 'idle'}; "
              f"ms: median / p90 / mean of {args.calls} calls")
        print("| threads | rows x k | candidate | median | p90 | mean |")
        print("|---|---|---|---|---|---|")
        for threads in (1, 2):
            with threadpool_limits(threads, user_api="blas"):
                for shape in SHAPES:
                    x = rng.random(shape, dtype=np.float32)
                    for name, f in candidates(x).items():
                        med, p90, mean = timings(f, args.calls)
                        print(f"| {threads} | {shape[0]} x {shape[1]} | {name} | "
                              f"{med:.3f} | {p90:.3f} | {mean:.3f} |", flush=True)
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()


if __name__ == "__main__":
    main()
