"""Which thread and process counts are robust? Time short training runs with each.

    python benchmarks/bench_threads.py [--repeats 3] [--epochs 2]
    python benchmarks/bench_threads.py --train-args="--dim 256 --depth 8 --batch-size 128 --n-train 1024"
    python benchmarks/bench_threads.py --threads 1 --processes 1 2 --epochs 10
    python benchmarks/bench_threads.py --threads 1 --eval-thread on off --epochs 10

With --threads 2 the training splits each batch into 2 shards run by 2
threads (whitebox/training/threaded.py); --threads 1 runs one thread. With
--processes 2 two processes each train a copy on half of every batch
(whitebox/training/processes.py); every thread count is timed with every
process count. --eval-thread on off times the held-out evaluation in a
second thread (--eval-thread) against before the next epoch
(--no-eval-thread); without it the training command picks its default.

Runs `python -m whitebox.train --epochs E --no-figures` alternating between
thread counts, first on the machine as it is (labelled "idle" only when its
load average is below half a process per core, else "LOADED", with a
warning), then beside one busy
process (`python -c "while True: pass"`), and prints the median wall time,
training time (the epochs alone, from the run's last lines: no start-up or
spawning) and CPU time (user + system) of each. The thread count is passed as `--threads`
when the training command has that flag, else through the BLAS environment
variables.
"""
import argparse
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import as_it_is_then_busy  # noqa: E402


def has_threads_flag():
    out = subprocess.run([sys.executable, "-m", "whitebox.train", "--help"],
                         capture_output=True, text=True).stdout
    return "--threads" in out


EVAL_FLAGS = {"default": [], "on": ["--eval-thread"], "off": ["--no-eval-thread"]}


def one_run(threads, epochs, flag, out, extra=(), processes=1, evaluation="default"):
    cmd = [sys.executable, "-m", "whitebox.train", "--epochs", str(epochs), "--no-figures",
           "--no-progress", "--out", out, *extra, *EVAL_FLAGS[evaluation]]
    if processes > 1:
        cmd += ["--processes", str(processes)]
    env = dict(os.environ)
    if flag:
        cmd += ["--threads", str(threads)]
    else:
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env[var] = str(threads)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if res.returncode != 0:
        raise SystemExit(f"training failed:\n{res.stderr[-2000:]}")
    acc = [line for line in res.stdout.splitlines() if "accuracy" in line][-1:]
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, acc[0] if acc else "", training_seconds(res.stdout)


def training_seconds(stdout):
    """The epochs' seconds from the run's 'wall time ...: E epochs T s, ...' line (nan if none)."""
    found = re.search(r"wall time [\d.]+ s: \d+ epochs? ([\d.]+) s", stdout)
    return float(found.group(1)) if found else float("nan")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--processes", type=int, nargs="+", default=[1])
    ap.add_argument("--eval-thread", nargs="+", default=["default"], choices=sorted(EVAL_FLAGS),
                    help="held-out evaluation in a second thread: on, off, or the default")
    ap.add_argument("--train-args", default="", help="more flags for the training command "
                    "(one string, e.g. a larger model: \"--dim 256 --depth 8\")")
    args = ap.parse_args(argv)
    extra = args.train_args.split()
    flag = has_threads_flag()
    print(f"python -m whitebox.train --epochs {args.epochs} --no-figures {args.train_args}, "
          "threads via "
          f"{'--threads' if flag else 'environment variables'}; median of {args.repeats}")
    print("| machine | threads | processes | evaluation thread | wall s | training s | CPU s | "
          "last line |")
    print("|---|---|---|---|---|---|---|---|")
    settings = [(n, p, e) for e in args.eval_thread for p in args.processes for n in args.threads]
    with tempfile.TemporaryDirectory() as tmp:
        for condition, beside in as_it_is_then_busy():
            with beside:
                results = {setting: [] for setting in settings}
                for _ in range(args.repeats):
                    for n, p, e in settings:
                        results[n, p, e].append(one_run(n, args.epochs, flag,
                                                        os.path.join(tmp, "r"), extra, p, e))
            for (n, p, e), rs in results.items():
                wall, cpu, train = (statistics.median(r[i] for r in rs) for i in (0, 1, 3))
                print(f"| {condition} | {n} | {p} | {e} | {wall:.1f} | {train:.1f} | {cpu:.1f} | "
                      f"{rs[-1][2]} |", flush=True)


if __name__ == "__main__":
    main()
