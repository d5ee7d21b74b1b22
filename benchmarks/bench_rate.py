"""Time the rate functions on CRATE-T sized token sets (B=64, N=197, d=384, float32).

    python benchmarks/bench_rate.py                   # NumPy (plus PyTorch if installed)
    python benchmarks/bench_rate.py --backend cupy    # on a GPU
    python benchmarks/bench_rate.py --repeats 11 --batch 16
    python benchmarks/bench_rate.py --threads 1       # pin BLAS/LAPACK (and torch) threads

Rows: coding_rate (value), coding_rate_grad (value and gradient: the gradient
needs the same factorisation, so it includes the forward), the same with
float64 accumulation, the same on unit-norm rows (whose Gram matrix float32
holds, so the default stays in float32; the raw N(0, 1) rows at eps=0.5 have a
condition bound of about 3e4, above float32's 8.4e3, so the default redoes
them in float64: see whitebox/rate/gram.py), and compression_rate / its gradients against K = 6
subspaces of dimension p = 64 (CRATE-T's heads). Every number is the median
of --repeats runs after one warm-up. With PyTorch installed, a reference row
times torch.logdet on the same Gram matrices (autograd for the gradient).

On a small shared CPU, many BLAS threads fighting over few cores make the
batched small factorisations erratic; ``--threads 1`` (through threadpoolctl,
which comes with scikit-learn) gives steadier numbers.
"""
import contextlib
import argparse
import os
import sys
import statistics
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import warn_if_loaded  # noqa: E402
from whitebox import backend, rate


def median_ms(fn, repeats, sync):
    fn()
    sync()                                          # warm-up (allocations, BLAS threads)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def blas_threads(threads):
    """A context that limits NumPy's BLAS/LAPACK threads (no-op for 0 or without threadpoolctl)."""
    if not threads:
        return contextlib.nullcontext()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        print("threadpoolctl is not installed: --threads only affects PyTorch")
        return contextlib.nullcontext()
    return threadpool_limits(limits=threads)


def torch_rows(Z_np, U_np, eps, repeats, device, threads):
    """The same two quantities with PyTorch (logdet + autograd), for reference."""
    try:
        import torch
    except ImportError:
        return []
    if threads:
        torch.set_num_threads(threads)
    Z = torch.tensor(Z_np, device=device, requires_grad=True)
    B, N, d = Z.shape
    eye = torch.eye(N, device=device, dtype=Z.dtype)

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    def value():
        return 0.5 * torch.logdet(eye + d / (N * eps ** 2) * Z @ Z.transpose(1, 2))

    def value_and_grad():
        Z.grad = None
        value().sum().backward()

    with torch.no_grad():
        t_value = median_ms(value, repeats, sync)
    return [("torch: coding_rate (logdet)", t_value),
            ("torch: coding_rate + autograd grad", median_ms(value_and_grad, repeats, sync))]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backend", default="numpy", choices=backend.BACKENDS)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--tokens", type=int, default=197)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--heads", type=int, default=6)
    p.add_argument("--dim-head", type=int, default=64)
    p.add_argument("--eps", type=float, default=0.5)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, default=0,
                   help="BLAS/LAPACK and PyTorch threads (0: the libraries' defaults)")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch reference rows")
    args = p.parse_args(argv)
    warn_if_loaded()

    rng = np.random.default_rng(0)
    shape = (args.batch, args.tokens, args.dim)
    Z_np = rng.standard_normal(shape, dtype=np.float32)
    Q, _ = np.linalg.qr(rng.standard_normal((args.dim, args.heads * args.dim_head)))
    U_np = Q.reshape(args.dim, args.heads, args.dim_head).transpose(1, 0, 2)
    U_np = np.ascontiguousarray(U_np, dtype=np.float32)           # (K, d, p)
    Z = backend.to_device(Z_np, args.backend)
    U = backend.to_device(U_np, args.backend)
    eps = args.eps

    def sync():
        backend.synchronize(Z)

    Zu = Z / backend.get_array_module(Z).linalg.norm(Z, axis=-1, keepdims=True)  # unit rows
    rows = [
        ("coding_rate, unit rows", lambda: rate.coding_rate(Zu, eps)),
        ("coding_rate_grad, unit rows", lambda: rate.coding_rate_grad(Zu, eps)),
        ("coding_rate", lambda: rate.coding_rate(Z, eps)),
        ("coding_rate_grad (value + grad)", lambda: rate.coding_rate_grad(Z, eps)),
        ("coding_rate, accumulate=float64", lambda: rate.coding_rate(Z, eps, "float64")),
        ("coding_rate_grad, accumulate=float64",
         lambda: rate.coding_rate_grad(Z, eps, accumulate="float64")),
        (f"compression_rate (K={args.heads}, p={args.dim_head})",
         lambda: rate.compression_rate(Z, U, eps)),
        ("compression_rate_grad wrt Z", lambda: rate.compression_rate_grad(Z, U, eps)),
        ("compression_rate_grad wrt Z and U",
         lambda: rate.compression_rate_grad(Z, U, eps, wrt="both")),
        ("measure_compression (eps2=0.01, float64)", lambda: rate.measure_compression(Z, U)),
    ]
    with blas_threads(args.threads):
        results = [(name, median_ms(fn, args.repeats, sync)) for name, fn in rows]
    if not args.no_torch:
        results += torch_rows(Z_np, U_np, eps, args.repeats,
                              "cuda" if args.backend == "cupy" else "cpu", args.threads)

    B, N, d = shape
    side = "N x N" if N <= d else "d x d"
    print(f"whitebox.rate on {args.backend}: Z (B={B}, N={N}, d={d}) float32, eps={eps}, "
          f"Gram side {side}, median of {args.repeats}, threads {args.threads or 'default'}")
    width = max(len(name) for name, _ in results)
    print(f"| {'function':<{width}} | {'ms':>9} |")
    print(f"|{'-' * (width + 2)}|{'-' * 11}|")
    for name, ms in results:
        print(f"| {name:<{width}} | {ms:9.2f} |")
    return results


if __name__ == "__main__":
    main()
