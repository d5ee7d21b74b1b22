"""Time CRATE-alpha against its PyTorch twin, and the exact-step MSSA against the softmax MSSA.

    python benchmarks/bench_alpha.py                   # NumPy (and PyTorch CPU if installed)
    python benchmarks/bench_alpha.py --backend cupy    # on a GPU (PyTorch then on CUDA)

Table 1: one float32 CRATE-alpha training step (forward, loss, backward),
whitebox against whitebox.torch_crate_alpha (same weights), runs alternating
between the two libraries; medians and the ratio whitebox / PyTorch.

Table 2: one MSSA forward + backward (whitebox.functional.mssa_forward /
mssa_backward) with step="exact" (K N x N Cholesky inverses per item) against
the official softmax step, at sizes from MNIST patches to ImageNet (N = 197);
then one whole CRATE training step with attention=dict(step="exact") against
the official model.
"""
import argparse
import statistics
import time

import numpy as np

import whitebox as wb
from whitebox import backend
from whitebox.functional import mssa_backward, mssa_forward
from whitebox.models import CRATE, CRATEAlpha

ALPHA_CONFIGS = {
    "mnist-demo": dict(image_size=28, patch_size=4, channels=1, num_classes=10, dim=96,
                       depth=4, heads=4, batch=128),
    "cifar-alpha-small": dict(image_size=32, patch_size=4, channels=3, num_classes=10,
                              dim=192, depth=6, heads=6, batch=32),
}
# (B, N, d, K): MNIST with 7 x 7 and 4 x 4 patches, CIFAR 4 x 4, ImageNet 16 x 16
MSSA_SIZES = [(64, 17, 96, 4), (64, 50, 96, 4), (32, 65, 384, 6), (8, 197, 768, 12)]


def timed(fn, sync_on):
    backend.synchronize(sync_on)
    t = time.perf_counter()
    fn()
    backend.synchronize(sync_on)
    return time.perf_counter() - t


def interleaved(fns, repeats, warmup):
    """Median seconds of each function, calls interleaved so all see the same machine state."""
    for _ in range(warmup):
        for f in fns:
            f()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for t, f in zip(times, fns):
            t.append(f())
    return [statistics.median(t) for t in times]


def whitebox_step(model, x, y):
    loss, dlogits = wb.losses.cross_entropy(model(x), y)
    model.zero_grad()
    model.backward(dlogits)


def bench_alpha(name, cfg, backend_name, repeats, warmup):
    cfg = dict(cfg)
    batch = cfg.pop("batch")
    rng = np.random.default_rng(0)
    x_np = rng.random((batch, cfg["channels"], cfg["image_size"], cfg["image_size"]),
                      dtype=np.float32)
    y_np = rng.integers(0, cfg["num_classes"], batch)
    model = CRATEAlpha(**cfg, dtype="float32", seed=0)
    if backend_name == "cupy":
        model.to("cupy")
    x, y = backend.to_device(x_np, backend_name), backend.to_device(y_np, backend_name)
    fns = [lambda: timed(lambda: whitebox_step(model, x, y), x)]
    try:
        import torch
        from whitebox.torch_crate_alpha import torch_model_from
        device = "cuda" if backend_name == "cupy" else "cpu"
        tm = torch_model_from(model).to(device)
        tx, ty = torch.from_numpy(x_np).to(device), torch.from_numpy(y_np).to(device)

        def torch_step():
            if device == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            tm.zero_grad(set_to_none=False)
            torch.nn.functional.cross_entropy(tm(tx), ty).backward()
            if device == "cuda":
                torch.cuda.synchronize()
            return time.perf_counter() - t
        fns.append(torch_step)
    except ImportError:
        pass
    except (RuntimeError, AssertionError) as e:     # e.g. a CPU-only PyTorch asked for CUDA
        print(f"[{name}] PyTorch column left out: {e}")
    times = interleaved(fns, repeats, warmup)
    t_torch = times[1] if len(times) > 1 else None
    return dict(config=name, batch=batch, params=model.num_params(), wb_ms=1e3 * times[0],
                torch_ms=None if t_torch is None else 1e3 * t_torch,
                ratio=None if t_torch is None else times[0] / t_torch)


def bench_mssa(B, N, d, K, backend_name, repeats, warmup):
    xp = backend.xp_of(backend_name)
    rng = np.random.default_rng(0)
    p = d // K
    arrays = [rng.standard_normal((B, N, d)), rng.standard_normal((K * p, d)) / np.sqrt(d),
              rng.standard_normal((d, K * p)) / np.sqrt(K * p), np.zeros(d)]
    x, Wq, Wo, bo = (backend.to_device(a.astype(np.float32), backend_name) for a in arrays)
    dout = xp.ones((B, N, d), dtype=np.float32)

    def run(step):
        def once():
            y, cache = mssa_forward(x, Wq, Wo, bo, K, step=step)
            mssa_backward(dout, cache)
        return lambda: timed(once, x)
    t_soft, t_exact = interleaved([run("softmax"), run("exact")], repeats, warmup)
    return dict(size=f"B {B}, N {N}, d {d}, K {K}", soft_ms=1e3 * t_soft,
                exact_ms=1e3 * t_exact, ratio=t_exact / t_soft)


def bench_models(backend_name, repeats, warmup):
    cfg = dict(image_size=28, patch_size=4, channels=1, num_classes=10, dim=96, depth=4,
               heads=4, dim_head=24, dtype="float32", seed=0)
    rng = np.random.default_rng(0)
    x = backend.to_device(rng.random((128, 1, 28, 28), dtype=np.float32), backend_name)
    y = backend.to_device(rng.integers(0, 10, 128), backend_name)
    official, exact = CRATE(**cfg), CRATE(**cfg, attention=dict(step="exact"))
    if backend_name == "cupy":
        official.to("cupy")
        exact.to("cupy")
    t_off, t_exact = interleaved([lambda: timed(lambda: whitebox_step(official, x, y), x),
                                  lambda: timed(lambda: whitebox_step(exact, x, y), x)],
                                 repeats, warmup)
    return dict(size="whole CRATE step, mnist-demo, B 128, N 50", soft_ms=1e3 * t_off,
                exact_ms=1e3 * t_exact, ratio=t_exact / t_off)


def fmt(v, spec):
    return "-" if v is None else format(v, spec)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="numpy", choices=backend.BACKENDS)
    ap.add_argument("--repeats", type=int, default=7, help="timed runs per variant (median)")
    ap.add_argument("--warmup", type=int, default=2)
    args = ap.parse_args(argv)

    alpha = [bench_alpha(n, c, args.backend, args.repeats, args.warmup)
             for n, c in ALPHA_CONFIGS.items()]
    print(f"CRATE-alpha: one float32 training step, backend={args.backend}, "
          f"median of {args.repeats}")
    print("| config | batch | parameters | whitebox ms | PyTorch ms | whitebox/PyTorch |")
    print("|---|---|---|---|---|---|")
    for r in alpha:
        print(f"| {r['config']} | {r['batch']} | {r['params']:,} | {r['wb_ms']:.1f} | "
              f"{fmt(r['torch_ms'], '.1f')} | {fmt(r['ratio'], '.2f')} |")

    rows = [bench_mssa(*size, args.backend, args.repeats, args.warmup) for size in MSSA_SIZES]
    rows.append(bench_models(args.backend, args.repeats, args.warmup))
    print(f"\nMSSA forward + backward, float32: exact step vs softmax, backend={args.backend}")
    print("| size | softmax ms | exact ms | exact/softmax |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['size']} | {r['soft_ms']:.1f} | {r['exact_ms']:.1f} | {r['ratio']:.2f} |")
    return alpha, rows


if __name__ == "__main__":
    main()
