"""Time one float32 CRATE training step (forward, loss, backward): whitebox vs PyTorch.

    python benchmarks/bench_crate.py                      # 2 threads, all configs
    python benchmarks/bench_crate.py --threads 1 --configs mnist-demo
    python benchmarks/bench_crate.py --backend cupy       # on a GPU (PyTorch on CUDA too)
    python benchmarks/bench_crate.py --beside-busy        # and whitebox beside a busy process

One run measures, for each config, alternating step by step so all columns
see the same machine state (medians):
- whitebox, as training runs it: with --threads W > 1 on NumPy, each batch
  split into W shards that W threads run at once, each with a one-thread
  BLAS (whitebox/training/threaded.py); otherwise one step on W BLAS threads;
- PyTorch eager running the official model (ISTA as three products);
- `torch.compile` of the SAME model as whitebox runs it: the ISTA step folded
  into one product with M = I + eta (W - W^T W), so the comparison is about
  execution, not algebra. Its compile time (first forward + backward) is
  reported separately.
"% peak" is the executed-FLOP fraction of BLAS peak: the GEMM FLOPs the step
executes (counted from the shapes; the folded count for whitebox and the
compiled model, the three-product count for eager) divided by the step time,
over the rate of a 2048^3 matrix product measured in the same run with the
same threads (NumPy's; the header also gives PyTorch's: where it is faster,
no arrangement of the step can make up the difference). Peak memory: NumPy
buffers allocated during one step (tracemalloc) and PyTorch's own CPU
allocations during one step (its profiler, silenced); on a GPU the CuPy pool
against torch.cuda's peak.
Where Numba is installed the whitebox column runs the fused loops
(whitebox/functional/fused.py) and a "wb, NumPy only" column the same step
without them, as a user without Numba runs it. Every column runs under
whitebox.memory.keep_freed_memory() (as training does; --malloc-default
leaves malloc alone).
With --cpu-time the run also reports every column's CPU time per step at ONE
thread (time.process_time; taken from the same steps when --threads 1),
which other processes on the machine disturb far less than wall time.
With --beside-busy it then times whitebox's columns alone (no PyTorch step
between them: PyTorch's threads would share the cores too), first on the
machine as it is, then beside one busy process (`python -c "while True:
pass"`), and prints the ratio of the two.
"""
import argparse
import contextlib
import importlib
import os
import statistics
import sys
import time
import tracemalloc

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import machine_state, one_busy_process, warn_if_loaded  # noqa: E402
import whitebox as wb
from whitebox import backend, memory, threads
from whitebox.functional import fused
from whitebox.models import CRATE, CRATEAlpha
from whitebox.training.threaded import ShardThreads

# family -> (whitebox class, module whose torch_model_from builds the PyTorch twin)
FAMILIES = {"CRATE": (CRATE, "whitebox.torch_twins.crate"),
            "CRATE-alpha": (CRATEAlpha, "whitebox.torch_twins.crate_alpha")}
CONFIGS = {
    "mnist-demo": dict(image_size=28, patch_size=4, channels=1, num_classes=10, dim=96,
                       depth=4, heads=4, dim_head=24, batch=128),
    "cifar-crate-t": dict(image_size=32, patch_size=4, channels=3, num_classes=10, dim=384,
                          depth=12, heads=6, dim_head=64, batch=32),
    "crate-t-224": dict(image_size=224, patch_size=16, channels=3, num_classes=1000, dim=384,
                        depth=12, heads=6, dim_head=64, batch=8),
    # not in the default run: gpu_check.py times alpha-tiny for the CRATE-alpha family,
    # bench_alpha.py the other two
    "alpha-tiny": dict(family="CRATE-alpha", image_size=28, patch_size=4, channels=1,
                       num_classes=10, dim=64, depth=4, heads=4, dim_head=16, batch=128),
    "alpha-mnist-demo": dict(family="CRATE-alpha", image_size=28, patch_size=4, channels=1,
                             num_classes=10, dim=96, depth=4, heads=4, batch=128),
    "alpha-cifar-small": dict(family="CRATE-alpha", image_size=32, patch_size=4, channels=3,
                              num_classes=10, dim=192, depth=6, heads=6, batch=32),
}
DEFAULT_CONFIGS = ["mnist-demo", "cifar-crate-t", "crate-t-224"]
TORCH_MISSING = ("PyTorch is not installed: its columns are left empty. CPU build: "
                 "pip install torch --index-url https://download.pytorch.org/whl/cpu")


# ------------------------------------------------------------------ FLOPs

def gemm_flops(cfg, folded=True):
    """GEMM FLOPs of one training step (forward + backward), counted from the shapes.

    Per layer, with T = B N tokens, I = K p: the projections in and out take
    12 T d I (one forward, two backward products each); attention 10 B K N^2 p
    (S, A w; dA, A^T dO, dS w). The folded ISTA: 6 T d^2 (x M, dx, dM) plus
    4 d^3 (W^T W and W (dM + dM^T)); three products instead: 18 T d^2.
    The patch embedding and head add 6 tokens x in x out each. None for
    families other than CRATE (not counted).
    """
    if cfg.get("family", "CRATE") != "CRATE":
        return None
    B, d, K, p = cfg["batch"], cfg["dim"], cfg["heads"], cfg["dim_head"]
    n = (cfg["image_size"] // cfg["patch_size"]) ** 2
    N, T, I = n + 1, B * (n + 1), K * p
    patch_dim = cfg["channels"] * cfg["patch_size"] ** 2
    ista = 6 * T * d * d + 4 * d ** 3 if folded else 18 * T * d * d
    layer = 12 * T * d * I + 10 * B * K * N * N * p + ista
    return cfg["depth"] * layer + 6 * B * n * patch_dim * d + 6 * B * d * cfg["num_classes"]


def median_seconds(f, repeats, clock=time.perf_counter, sync=lambda: None):
    """Median seconds of ``f()`` over ``repeats`` calls on ``clock``, after two warm-up
    calls (a thread pool starts on first use). ``sync`` waits for a device."""
    for _ in range(2):
        f()
    ts = []
    for _ in range(repeats):
        sync()
        t = clock()
        f()
        sync()
        ts.append(clock() - t)
    return statistics.median(ts)


def product_rate(a, b, repeats=5, sync=lambda: None, clock=time.perf_counter):
    """FLOP/s of the square product a @ b (median of ``repeats``)."""
    return 2 * a.shape[0] ** 3 / median_seconds(lambda: a @ b, repeats, clock, sync)


def blas_peak(xp, size=2048, repeats=5, clock=time.perf_counter):
    """FLOP/s of a float32 size^3 matrix product (median of ``repeats``)."""
    a = xp.asarray(np.random.default_rng(0).random((size, size), dtype=np.float32))
    return product_rate(a, a.T.copy(), repeats, lambda: backend.synchronize(a), clock)


def torch_gemm_rate(torch, size=2048, repeats=5):
    """The same for PyTorch's float32 product on the CPU, to set beside blas_peak."""
    a = torch.rand(size, size)
    return product_rate(a, a.T.contiguous(), repeats)


# ------------------------------------------------------------------ steps

def whitebox_step(model, x, y):
    loss, dlogits = wb.losses.cross_entropy(model(x), y)
    model.zero_grad()
    model.backward(dlogits)
    return loss


def shard_step(model, batch):
    """One shard's step, as a task's train_step: (loss, sums with the shard's count)."""
    x, y = batch
    loss, dlogits = wb.losses.cross_entropy(model(x), y)
    model.backward(dlogits)
    return loss, {"count": len(y)}


def sharded_runner(engine, batch, step=shard_step, switch_blas=True):
    """``engine.step`` (a ShardThreads) as training runs it: gradients zeroed, one BLAS
    thread inside each shard's thread. Returns a function running one step (its loss).

    switch_blas: set the BLAS pool to one thread at every step, for benchmarks whose
    other columns use more; False where the caller holds it at one around the whole
    timing, as training holds it for the whole run (each switch rescans the loaded
    libraries, about a millisecond: 3-20% of a small model's step).
    """
    def run():
        engine.model.zero_grad()
        return engine.step(step, batch)[0]

    def run_switching():
        with threads.limited(1):
            return run()
    return run_switching if switch_blas else run


def sharded(workers, backend_name):
    """Whether whitebox's step runs in batch shards (training/threaded.py) at ``workers``."""
    return workers > 1 and backend_name == "numpy"


def whitebox_runner(model, x, y, workers, switch_blas=True):
    """The whitebox step as training runs it with --threads workers (training/threaded.py):
    on NumPy with workers > 1, the batch in `workers` shards at once, BLAS at one thread
    each (switch_blas: as ``sharded_runner``; ``bench`` holds the pool itself)."""
    if not sharded(workers, backend.backend_name(x)):
        return lambda: whitebox_step(model, x, y)
    return sharded_runner(ShardThreads(model, workers), (x, y), switch_blas=switch_blas)


def without_fused_loops(run):
    """The same runner with the fused loops switched off: NumPy calls only."""
    def numpy_only():
        with fused.setting(False):
            return run()
    return numpy_only


def torch_step(torch, model, x, y):
    model.zero_grad(set_to_none=False)
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    return loss


def fold_ista(torch, tmodel):
    """Make every ISTA block of a TorchCRATE compute the folded product, as whitebox does."""
    from torch.nn import functional as F

    def folded_forward(self, x):
        W, eta = self.weight, self.step_size
        eye = torch.eye(W.shape[0], dtype=W.dtype, device=W.device)
        M = eye + eta * (W - W.t() @ W)                  # (d, d)
        return F.relu(x @ M - eta * self.lambd)

    for _, ista in tmodel.transformer.layers:
        ista.fn.forward = folded_forward.__get__(ista.fn)
    return tmodel


@contextlib.contextmanager
def silenced():
    """Send everything written to stdout/stderr (C++ prints included) to /dev/null."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 1)
        os.dup2(null.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


def torch_peak_cpu_mb(torch, model, x, y):
    """Peak bytes PyTorch's CPU allocator hands out during one step (profiler memory)."""
    import warnings

    from torch.profiler import ProfilerActivity, profile
    with silenced(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            torch_step(torch, model, x, y)
        events = sorted((e for e in prof.events() if e.self_cpu_memory_usage),
                        key=lambda e: e.time_range.start)
    live, peak = 0, 0
    for e in events:
        live += e.self_cpu_memory_usage
        peak = max(peak, live)
    return peak / 2**20


# ------------------------------------------------------------------ one config

def load_torch():
    try:
        import torch
        return torch
    except ImportError:
        return None


def model_and_inputs(name):
    """The float32 whitebox model of config ``name`` (seed 0) and its inputs, on the host:
    (model, images (B, C, H, W), labels (B,))."""
    cfg = dict(CONFIGS[name])
    batch = cfg.pop("batch")
    model_cls = FAMILIES[cfg.pop("family", "CRATE")][0]
    rng = np.random.default_rng(0)
    x_np = rng.random((batch, cfg["channels"], cfg["image_size"], cfg["image_size"]),
                      dtype=np.float32)
    y_np = rng.integers(0, cfg["num_classes"], batch)
    return model_cls(**cfg, dtype="float32", seed=0), x_np, y_np


def build(name, backend_name, torch, compile_, workers=1, switch_blas=True):
    """The whitebox model, its inputs, and the PyTorch runners that can be built
    (switch_blas: as ``sharded_runner``)."""
    model, x_np, y_np = model_and_inputs(name)
    family = CONFIGS[name].get("family", "CRATE")
    twin = FAMILIES[family][1]
    if backend_name == "cupy":
        model.to("cupy")
    x, y = backend.to_device(x_np, backend_name), backend.to_device(y_np, backend_name)
    runners = {"whitebox": whitebox_runner(model, x, y, workers, switch_blas)}
    if fused.enabled() and backend_name == "numpy":
        runners["numpy-only"] = without_fused_loops(runners["whitebox"])
    notes, extra = [], {}
    if torch is None:
        return model, x, runners, notes, extra
    device = "cuda" if backend_name == "cupy" else "cpu"
    torch_model_from = importlib.import_module(twin).torch_model_from
    try:
        eager = torch_model_from(model).to(device)
        tx, ty = torch.from_numpy(x_np).to(device), torch.from_numpy(y_np).to(device)
    except (RuntimeError, AssertionError) as e:          # e.g. a CPU-only PyTorch asked for CUDA
        notes.append(f"[{name}] PyTorch columns left out: {e}")
        return model, x, runners, notes, extra
    runners["eager"] = lambda: torch_step(torch, eager, tx, ty)
    extra["torch_inputs"] = (eager, tx, ty)
    if compile_:
        folded = torch_model_from(model).to(device)
        if family == "CRATE":                            # the same algebra as whitebox
            folded = fold_ista(torch, folded)
        try:
            compiled = torch.compile(folded)
            t = time.perf_counter()
            with silenced():
                torch_step(torch, compiled, tx, ty)
                torch_step(torch, compiled, tx, ty)
            if device == "cuda":
                torch.cuda.synchronize()
            extra["compile_s"] = time.perf_counter() - t
            runners["compiled"] = lambda: torch_step(torch, compiled, tx, ty)
        except Exception as e:                            # noqa: BLE001 - report, go on
            notes.append(f"[{name}] torch.compile failed, column left out: "
                         f"{type(e).__name__}: {str(e).splitlines()[0][:200]}")
    return model, x, runners, notes, extra


def time_runners(runners, x, torch, repeats, warmup):
    """Median wall seconds and median CPU seconds per runner, alternating runners step by step."""
    cuda = torch is not None and backend.backend_name(x) == "cupy"

    def once(f):
        backend.synchronize(x)
        if cuda:
            torch.cuda.synchronize()
        t, c = time.perf_counter(), time.process_time()
        f()
        backend.synchronize(x)
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - t, time.process_time() - c

    for _ in range(warmup):
        for f in runners.values():
            once(f)
    times = {k: [] for k in runners}
    for _ in range(repeats):
        for k, f in runners.items():
            times[k].append(once(f))
    wall = {k: statistics.median(w for w, _ in v) for k, v in times.items()}
    cpu = {k: statistics.median(c for _, c in v) for k, v in times.items()}
    return wall, cpu


def peak_memory(runners, backend_name, torch, extra):
    if backend_name == "numpy":
        tracemalloc.start()
        runners["whitebox"]()
        mem_wb = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        mem_torch = (torch_peak_cpu_mb(torch, *extra["torch_inputs"])
                     if "torch_inputs" in extra else None)
        return mem_wb, mem_torch
    pool = backend.xp_of("cupy").get_default_memory_pool()
    mem_torch = (torch.cuda.max_memory_allocated() / 2**20) if "torch_inputs" in extra else None
    return pool.total_bytes() / 2**20, mem_torch


def bench(name, backend_name, torch, nthreads, repeats, warmup, compile_, peak):
    # whitebox's shards each use one BLAS thread, held for the whole timing as training
    # holds it for the whole run; PyTorch's threads are its own (set_num_threads)
    with threads.limited(1 if sharded(nthreads, backend_name) else nthreads):
        if torch is not None:
            torch.set_num_threads(nthreads)
        model, x, runners, notes, extra = build(name, backend_name, torch, compile_, nthreads,
                                                switch_blas=False)
        for line in notes:
            print(line, flush=True)
        med, cpu = time_runners(runners, x, torch, repeats, warmup)
        mem_wb, mem_torch = peak_memory(runners, backend_name, torch, extra)
    cfg = CONFIGS[name]
    flops = {"whitebox": gemm_flops(cfg), "numpy-only": gemm_flops(cfg),
             "compiled": gemm_flops(cfg),
             "eager": gemm_flops(cfg, folded=False)}
    return dict(config=name, batch=cfg["batch"], ms={k: 1e3 * v for k, v in med.items()},
                cpu_ms={k: 1e3 * v for k, v in cpu.items()},
                peak={k: flops[k] and flops[k] / v / peak for k, v in med.items()},
                mem_wb=mem_wb, mem_torch=mem_torch, compile_s=extra.get("compile_s"))


def beside_busy(configs, backend_name, nthreads, repeats, warmup):
    """whitebox's columns alone in the process (no PyTorch step between them, whose threads
    would take turns on the cores too), on the machine as it is and then beside one busy
    process: {config: (ms as it is, ms beside the busy process)}, each a dict by column."""
    def times():
        return {n: bench(n, backend_name, None, nthreads, repeats, warmup, False, 1.0)["ms"]
                for n in configs}
    as_it_is = times()
    with one_busy_process():
        busy = times()
    return {n: (as_it_is[n], busy[n]) for n in configs}


def cpu_time_ratios(name, torch, repeats, compile_):
    """Single-thread CPU milliseconds per step (process_time), alternating."""
    with threads.limited(1):
        torch.set_num_threads(1)
        model, x, runners, notes, _ = build(name, "numpy", torch, compile_)
        return {k: 1e3 * v for k, v in time_runners(runners, x, torch, repeats, 2)[1].items()}


# ------------------------------------------------------------------ table

def fmt(v, spec, missing, suffix=""):
    return missing if v is None else format(v, spec) + suffix


def pct(peak, column, missing):
    """A peak fraction as a percentage; n/a where FLOPs are not counted (not CRATE)."""
    if column not in peak:
        return missing
    return "n/a" if peak[column] is None else f"{100 * peak[column]:.0f}%"


def fused_state(backend_name):
    if backend_name != "numpy":
        return "not used on a GPU"
    if not fused.available():
        return 'Numba not installed (pip install "whitebox-crate[fast]")'
    return f"on (Numba {fused.numba.__version__})" if fused.enabled() else "switched off"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="numpy", choices=backend.BACKENDS)
    ap.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS, choices=list(CONFIGS))
    ap.add_argument("--threads", type=int, default=2, help="BLAS and PyTorch threads")
    ap.add_argument("--repeats", type=int, default=7, help="timed steps per column (median)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--no-compile", action="store_true", help="leave torch.compile out")
    ap.add_argument("--gemm-size", type=int, default=2048, help="size of the peak GEMM")
    ap.add_argument("--cpu-time", action="store_true",
                    help="also time every column at one thread by CPU time")
    ap.add_argument("--malloc-default", action="store_true",
                    help="leave malloc's thresholds alone (no keep_freed_memory)")
    ap.add_argument("--beside-busy", action="store_true",
                    help="then time whitebox alone, as the machine is and beside one busy "
                         "process (the ratio of the two)")
    args = ap.parse_args(argv)
    warn_if_loaded()
    kept = not args.malloc_default and memory.keep_freed_memory()
    torch = load_torch()
    miss = "no torch" if torch is None else "-"
    if torch is None:
        print(TORCH_MISSING)
    xp = backend.xp_of(args.backend)
    with threads.limited(args.threads):
        peak = blas_peak(xp, args.gemm_size)
        torch_rate = None
        if torch is not None and args.backend == "numpy":
            torch.set_num_threads(args.threads)
            torch_rate = torch_gemm_rate(torch, args.gemm_size)
    state = machine_state()                      # before the timings add their own load
    rows = [bench(n, args.backend, torch, args.threads, args.repeats, args.warmup,
                  not args.no_compile, peak) for n in args.configs]

    print(f"\none float32 training step (forward + loss + backward), backend={args.backend}, "
          f"{args.threads} thread(s), median of {args.repeats} alternating steps; "
          f"{args.gemm_size}^3 GEMM: {peak / 1e9:.0f} GFLOP/s"
          + (f" (PyTorch's: {torch_rate / 1e9:.0f})" if torch_rate else "")
          + f"; machine at start: {state}"
          + (" (wall times are noisy)" if state.startswith("LOADED") else ""))
    print(f"fused loops: {fused_state(args.backend)}; malloc: "
          + ("freed memory kept for reuse (whitebox.memory)" if kept else "default thresholds"))
    print("| config | batch | whitebox ms | wb, NumPy only ms | eager ms | compiled (folded) ms | "
          "wb / eager | wb / compiled | % peak wb | % peak eager | % peak compiled | "
          "peak MiB wb | peak MiB torch | compile s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        ms, pk = r["ms"], r["peak"]
        eager, comp = ms.get("eager"), ms.get("compiled")
        print(f"| {r['config']} | {r['batch']} | {ms['whitebox']:.1f} | "
              f"{fmt(ms.get('numpy-only'), '.1f', 'n/a')} | "
              f"{fmt(eager, '.1f', miss)} | {fmt(comp, '.1f', miss)} | "
              f"{fmt(eager and ms['whitebox'] / eager, '.2f', miss)} | "
              f"{fmt(comp and ms['whitebox'] / comp, '.2f', miss)} | "
              f"{pct(pk, 'whitebox', miss)} | {pct(pk, 'eager', miss)} | "
              f"{pct(pk, 'compiled', miss)} | "
              f"{r['mem_wb']:.0f} | {fmt(r['mem_torch'], '.0f', miss)} | "
              f"{fmt(r['compile_s'], '.0f', miss)} |")
    if args.cpu_time and args.backend == "numpy":
        if torch is None:
            print("\nsingle-thread CPU-time ratios: " + TORCH_MISSING)
        else:
            print("\nsingle thread, CPU time (process_time) per step, median of "
                  f"{args.repeats}")
            print("| config | whitebox ms | eager ms | compiled ms | wb / eager | wb / compiled |")
            print("|---|---|---|---|---|---|")
            for n, r in zip(args.configs, rows):
                c = r["cpu_ms"] if args.threads == 1 else \
                    cpu_time_ratios(n, torch, args.repeats, not args.no_compile)
                e, k = c.get("eager"), c.get("compiled")
                print(f"| {n} | {c['whitebox']:.1f} | {fmt(e, '.1f', '-')} | "
                      f"{fmt(k, '.1f', 'failed')} | {fmt(e and c['whitebox'] / e, '.2f', '-')} | "
                      f"{fmt(k and c['whitebox'] / k, '.2f', '-')} |", flush=True)
    if args.beside_busy and args.backend != "numpy":
        print("\n--beside-busy times the CPU (NumPy) steps; left out on a GPU")
    elif args.beside_busy:
        state = machine_state()
        busy = beside_busy(args.configs, args.backend, args.threads, args.repeats, args.warmup)
        print(f"\nwhitebox alone (no PyTorch step between), {args.threads} thread(s), median of "
              f"{args.repeats}: the machine as it is ({state}) and beside one busy process")
        print("| config | whitebox ms | beside one busy process ms | ratio | NumPy only ms | "
              "beside one busy process ms | ratio |")
        print("|---|---|---|---|---|---|---|")
        for n, (quiet, loaded) in busy.items():
            cells = []
            for col in ("whitebox", "numpy-only"):
                q, b = quiet.get(col), loaded.get(col)
                cells += [fmt(q, ".1f", "n/a"), fmt(b, ".1f", "n/a"),
                          fmt(q and b / q, ".2f", "n/a")]
            print(f"| {n} | " + " | ".join(cells) + " |", flush=True)
        rows = [dict(r, beside_busy=busy[r["config"]]) for r in rows]
    return rows


if __name__ == "__main__":
    main()
