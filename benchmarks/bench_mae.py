"""Time one float32 CRATE-MAE training step (forward, masked loss, backward): whitebox vs PyTorch.

    python benchmarks/bench_mae.py                  # both configs, NumPy, 2 threads, PyTorch
    python benchmarks/bench_mae.py --threads 1      # one thread each
    python benchmarks/bench_mae.py --backend cupy   # on a GPU (PyTorch then runs on CUDA too)

Both libraries get the same images and the same masking noise, so they
remove the same patches. Runs alternate (whitebox, torch, whitebox, ...) so
both see the same machine state; the table reports medians, the ratio
whitebox / PyTorch and the peak memory of one step, measured as
benchmarks/bench_crate.py measures it (its profiler helper, shared).
"""
import argparse
import os
import sys
import tracemalloc

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import warn_if_loaded  # noqa: E402
import bench_crate
from bench_crate import fmt
from whitebox import backend, memory, threads as blas_threads
from whitebox.models import CRATEMAE

CONFIGS = {
    "mnist-mae": dict(image_size=28, patch_size=4, channels=1, dim=96, depth=4, heads=4,
                      decoder_depth=4, batch=128),
    "cifar-mae-t": dict(image_size=32, patch_size=4, channels=3, dim=384, depth=12, heads=6,
                        decoder_depth=12, batch=32),
}


def whitebox_step(model, x, noise):
    loss, _, _ = model(x, noise=noise)
    model.zero_grad()
    model.backward()
    return loss


def torch_step(model, x, noise):
    model.zero_grad(set_to_none=False)
    loss, _, _ = model(x, noise=noise)
    loss.backward()
    return loss


def torch_peak_mb(torch, tmodel, x, noise):
    """bench_crate's profiler measurement of one step, run on the CRATE-MAE step."""
    classifier_step = bench_crate.torch_step
    bench_crate.torch_step = lambda _torch, model, a, b: torch_step(model, a, b)
    try:
        return bench_crate.torch_peak_cpu_mb(torch, tmodel, x, noise)
    finally:
        bench_crate.torch_step = classifier_step


def bench(name, cfg, backend_name, repeats, warmup, threads):
    cfg = dict(cfg)
    batch = cfg.pop("batch")
    rng = np.random.default_rng(0)
    x_np = rng.random((batch, cfg["channels"], cfg["image_size"], cfg["image_size"]),
                      dtype=np.float32)
    model = CRATEMAE(**cfg, dtype="float32", seed=0)
    noise_np = rng.random((batch, model.num_patches)).astype(np.float32)
    if backend_name == "cupy":
        model.to("cupy")
    x, noise = backend.to_device(x_np, backend_name), backend.to_device(noise_np, backend_name)

    device = "cuda" if backend_name == "cupy" else "cpu"
    try:
        import torch
        if threads:
            torch.set_num_threads(threads)
        from whitebox.torch_twins.crate_mae import torch_mae_from
        tmodel = torch_mae_from(model).to(device)
        tx, tnoise = torch.from_numpy(x_np).to(device), torch.from_numpy(noise_np).to(device)
    except ImportError:
        torch = None
    except (RuntimeError, AssertionError) as e:   # e.g. a CPU-only PyTorch asked for CUDA
        print(f"[{name}] PyTorch column left out: {e}")
        torch = None

    runners = {"whitebox": lambda: whitebox_step(model, x, noise)}
    if torch is not None:
        runners["torch"] = lambda: torch_step(tmodel, tx, tnoise)
    wall, _ = bench_crate.time_runners(runners, x, torch, repeats, warmup)   # alternating

    if backend_name == "numpy":
        tracemalloc.start()
        whitebox_step(model, x, noise)
        mem_wb = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        mem_torch = None
        if torch is not None:
            mem_torch = torch_peak_mb(torch, tmodel, tx, tnoise)
    else:
        pool = backend.xp_of("cupy").get_default_memory_pool()
        mem_wb = pool.total_bytes() / 2**20
        mem_torch = (torch.cuda.max_memory_allocated() / 2**20) if torch is not None else None
    row = dict(config=name, batch=batch, whitebox_ms=1e3 * wall["whitebox"],
               torch_ms=1e3 * wall["torch"] if "torch" in wall else None,
               mem_wb=mem_wb, mem_torch=mem_torch)
    row["ratio"] = row["whitebox_ms"] / row["torch_ms"] if row["torch_ms"] else None
    return row


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="numpy", choices=backend.BACKENDS)
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--repeats", type=int, default=5, help="timed steps per library (median)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2,
                    help="threads of NumPy's BLAS and of PyTorch, the same for both")
    args = ap.parse_args(argv)
    warn_if_loaded()
    memory.keep_freed_memory()                   # as training runs
    with blas_threads.limited(args.threads):
        rows = [bench(n, CONFIGS[n], args.backend, args.repeats, args.warmup, args.threads)
                for n in args.configs]
    print(f"one float32 CRATE-MAE training step (forward + masked loss + backward), "
          f"backend={args.backend}, {args.threads} thread(s), median of {args.repeats}")
    print("| config | batch | whitebox ms | PyTorch ms | whitebox/PyTorch | "
          "peak MiB whitebox | peak MiB PyTorch |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['config']} | {r['batch']} | {r['whitebox_ms']:.1f} | "
              f"{fmt(r['torch_ms'], '.1f', '-')} | {fmt(r['ratio'], '.2f', '-')} | "
              f"{r['mem_wb']:.0f} | {fmt(r['mem_torch'], '.0f', '-')} |")
    return rows


if __name__ == "__main__":
    main()
