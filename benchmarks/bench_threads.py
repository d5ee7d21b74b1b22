"""Which thread count is robust? Time short training runs at 1 and 2 threads.

    python benchmarks/bench_threads.py [--repeats 3] [--epochs 2]
    python benchmarks/bench_threads.py --train-args="--dim 256 --depth 8 --batch-size 128 --n-train 1024"

With --threads 2 the training splits each batch into 2 shards run by 2
threads (whitebox/training/threaded.py); --threads 1 runs one thread.

Runs `python -m whitebox.train --epochs E --no-figures` alternating between
thread counts, first on the machine as it is (labelled "idle" only when its
load average is below half a process per core, else "LOADED", with a
warning), then beside one busy
process (`python -c "while True: pass"`), and prints the median wall time and
CPU time (user + system) of each. The thread count is passed as `--threads`
when the training command has that flag, else through the BLAS environment
variables.
"""
import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import machine_state, warn_if_loaded  # noqa: E402


def has_threads_flag():
    out = subprocess.run([sys.executable, "-m", "whitebox.train", "--help"],
                         capture_output=True, text=True).stdout
    return "--threads" in out


def one_run(threads, epochs, flag, out, extra=()):
    cmd = [sys.executable, "-m", "whitebox.train", "--epochs", str(epochs), "--no-figures",
           "--no-progress", "--out", out, *extra]
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
    return wall, cpu, acc[0] if acc else ""


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--train-args", default="", help="more flags for the training command "
                    "(one string, e.g. a larger model: \"--dim 256 --depth 8\")")
    args = ap.parse_args(argv)
    extra = args.train_args.split()
    flag = has_threads_flag()
    print(f"python -m whitebox.train --epochs {args.epochs} --no-figures {args.train_args}, "
          "threads via "
          f"{'--threads' if flag else 'environment variables'}; median of {args.repeats}")
    print("| machine | threads | wall s | CPU s | last line |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for busy_too in (False, True):
            busy = None
            if busy_too:
                busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
                condition = "one busy process"
            else:
                warn_if_loaded("the 'as it is' timings")
                condition = machine_state()
            try:
                results = {n: [] for n in args.threads}
                for _ in range(args.repeats):
                    for n in args.threads:
                        results[n].append(one_run(n, args.epochs, flag, os.path.join(tmp, "r"),
                                                      extra))
            finally:
                if busy is not None:
                    busy.kill()
                    busy.wait()
            for n, rs in results.items():
                print(f"| {condition} | {n} | {statistics.median(r[0] for r in rs):.1f} | "
                      f"{statistics.median(r[1] for r in rs):.1f} | {rs[-1][2]} |", flush=True)


if __name__ == "__main__":
    main()
