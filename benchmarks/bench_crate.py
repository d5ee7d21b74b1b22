"""Time one float32 CRATE training step (forward, loss, backward): whitebox vs PyTorch.

    python benchmarks/bench_crate.py                  # both configs, NumPy, PyTorch if installed
    python benchmarks/bench_crate.py --backend cupy   # on a GPU (PyTorch then runs on CUDA too)

Runs alternate between the two libraries (whitebox, torch, whitebox, ...) so
both see the same machine state; the table reports medians, the ratio
whitebox / PyTorch, and memory of one step. On the host: the peak of NumPy
buffers allocated during the step (tracemalloc) against the peak of PyTorch's
allocations during the step (its profiler). On a GPU: the bytes CuPy's memory
pool holds after the steps (the pool keeps what it ever needed at once)
against torch.cuda.max_memory_allocated.
"""
import argparse
import statistics
import time
import tracemalloc

import numpy as np

import whitebox as wb
from whitebox import backend
from whitebox.models import CRATE

CONFIGS = {
    "mnist-demo": dict(image_size=28, patch_size=4, channels=1, num_classes=10, dim=96,
                       depth=4, heads=4, dim_head=24, batch=128),
    "cifar-crate-t": dict(image_size=32, patch_size=4, channels=3, num_classes=10, dim=384,
                          depth=12, heads=6, dim_head=64, batch=32),
}


def whitebox_step(model, x, y):
    loss, dlogits = wb.losses.cross_entropy(model(x), y)
    model.zero_grad()
    model.backward(dlogits)
    return loss


def torch_step(torch, model, x, y):
    model.zero_grad(set_to_none=False)
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    return loss


def median_ms(times):
    return 1e3 * statistics.median(times)


def bench(name, cfg, backend_name, repeats, warmup, threads):
    cfg = dict(cfg)
    batch = cfg.pop("batch")
    rng = np.random.default_rng(0)
    x_np = rng.random((batch, cfg["channels"], cfg["image_size"], cfg["image_size"]),
                      dtype=np.float32)
    y_np = rng.integers(0, cfg["num_classes"], batch)
    model = CRATE(**cfg, dtype="float32", seed=0)
    if backend_name == "cupy":
        model.to("cupy")
    x, y = backend.to_device(x_np, backend_name), backend.to_device(y_np, backend_name)

    device = "cuda" if backend_name == "cupy" else "cpu"
    try:
        import torch
        if threads:
            torch.set_num_threads(threads)
        from whitebox.torch_crate import torch_model_from
        tmodel = torch_model_from(model).to(device)
        tx, ty = torch.from_numpy(x_np).to(device), torch.from_numpy(y_np).to(device)
    except ImportError:
        torch = None
    except (RuntimeError, AssertionError) as e:   # e.g. a CPU-only PyTorch asked for CUDA
        print(f"[{name}] PyTorch column left out: {e}")
        torch = None

    def run_wb():
        backend.synchronize(x)
        t = time.perf_counter()
        whitebox_step(model, x, y)
        backend.synchronize(x)
        return time.perf_counter() - t

    def run_torch():
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        torch_step(torch, tmodel, tx, ty)
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t

    for _ in range(warmup):
        run_wb()
        if torch is not None:
            run_torch()
    t_wb, t_torch = [], []
    for _ in range(repeats):
        t_wb.append(run_wb())
        if torch is not None:
            t_torch.append(run_torch())

    # peak memory of one more step, measured separately so tracing costs no time above
    if backend_name == "numpy":
        tracemalloc.start()
        whitebox_step(model, x, y)
        mem_wb = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        mem_torch = None
        if torch is not None:
            mem_torch = torch_peak_cpu_mb(torch, tmodel, tx, ty)
    else:
        pool = backend.xp_of("cupy").get_default_memory_pool()
        mem_wb = pool.total_bytes() / 2**20
        mem_torch = (torch.cuda.max_memory_allocated() / 2**20) if torch is not None else None
    row = dict(config=name, batch=batch, whitebox_ms=median_ms(t_wb),
               torch_ms=median_ms(t_torch) if t_torch else None,
               mem_wb=mem_wb, mem_torch=mem_torch)
    row["ratio"] = row["whitebox_ms"] / row["torch_ms"] if row["torch_ms"] else None
    return row


def torch_peak_cpu_mb(torch, model, x, y, step=torch_step):
    """Peak bytes PyTorch's CPU allocator hands out during one step (profiler memory);
    ``step(torch, model, x, y)`` runs the step (default: the classifier's)."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step(torch, model, x, y)
    live, peak = 0, 0
    events = sorted((e for e in prof.events() if e.self_cpu_memory_usage),
                    key=lambda e: e.time_range.start)
    for e in events:
        live += e.self_cpu_memory_usage
        peak = max(peak, live)
    return peak / 2**20


def fmt(v, spec):
    return "-" if v is None else format(v, spec)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="numpy", choices=backend.BACKENDS)
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--repeats", type=int, default=7, help="timed steps per library (median)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0,
                    help="PyTorch intra-op threads (0: PyTorch's default)")
    args = ap.parse_args(argv)
    rows = [bench(n, CONFIGS[n], args.backend, args.repeats, args.warmup, args.threads)
            for n in args.configs]
    print(f"one float32 training step (forward + loss + backward), backend={args.backend}, "
          f"median of {args.repeats}")
    print("| config | batch | whitebox ms | PyTorch ms | whitebox/PyTorch | "
          "peak MiB whitebox | peak MiB PyTorch |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['config']} | {r['batch']} | {r['whitebox_ms']:.1f} | "
              f"{fmt(r['torch_ms'], '.1f')} | {fmt(r['ratio'], '.2f')} | "
              f"{r['mem_wb']:.0f} | {fmt(r['mem_torch'], '.0f')} |")
    return rows


if __name__ == "__main__":
    main()
