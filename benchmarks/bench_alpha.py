"""Time CRATE-alpha against its PyTorch twin, and the exact-step MSSA against the softmax MSSA.

    python benchmarks/bench_alpha.py                   # NumPy (and PyTorch CPU if installed)
    python benchmarks/bench_alpha.py --backend cupy    # on a GPU (PyTorch then on CUDA)

Table 1: one float32 CRATE-alpha training step (forward, loss, backward),
whitebox against whitebox.torch_twins.crate_alpha (same weights), runs alternating
between the two libraries (bench_crate's builder and timer); medians and the
ratio whitebox / PyTorch. With --threads W > 1 on NumPy, whitebox runs the
step on W batch shards, as training does.

Table 2: one MSSA forward + backward (whitebox.functional.mssa_variant_forward /
mssa_variant_backward) with update="exact" (K N x N Cholesky inverses per item) against
the official softmax step, at sizes from MNIST patches to ImageNet (N = 197);
then one whole CRATE training step with attention=dict(update="exact") against
the official model.
"""
import argparse
import os
import sys

import numpy as np

from _common import warn_if_loaded  # noqa: E402
from whitebox import backend, memory, threads
from whitebox.functional import mssa_variant_backward, mssa_variant_forward
from whitebox.models import CRATE

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_crate  # noqa: E402  (configs, model building, the alternating timer)
from bench_crate import fmt, load_torch, time_runners, whitebox_step  # noqa: E402

ALPHA_CONFIGS = ["alpha-mnist-demo", "alpha-cifar-small"]      # in bench_crate.CONFIGS
# (B, N, d, K): MNIST with 7 x 7 and 4 x 4 patches, CIFAR 4 x 4, ImageNet 16 x 16
MSSA_SIZES = [(64, 17, 96, 4), (64, 50, 96, 4), (32, 65, 384, 6), (8, 197, 768, 12)]


def bench_alpha(name, backend_name, torch, repeats, warmup, workers):
    """One CRATE-alpha training step, whitebox against its PyTorch twin (bench_crate.build;
    with workers > 1 on NumPy the whitebox step runs on batch shards, as training does)."""
    model, x, runners, notes, _ = bench_crate.build(name, backend_name, torch, compile_=False,
                                                    workers=workers)
    for line in notes:
        print(line)
    wall, _ = time_runners(runners, x, torch, repeats, warmup)
    t_torch = wall.get("eager")
    return dict(config=name, batch=bench_crate.CONFIGS[name]["batch"],
                params=model.num_params(), wb_ms=1e3 * wall["whitebox"],
                torch_ms=None if t_torch is None else 1e3 * t_torch,
                ratio=None if t_torch is None else wall["whitebox"] / t_torch)


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
            _, cache = mssa_variant_forward(x, Wq, Wo, bo, K, update=step)
            mssa_variant_backward(dout, cache)
        return once
    wall, _ = time_runners({"softmax": run("softmax"), "exact": run("exact")}, x, None,
                           repeats, warmup)
    return dict(size=f"B {B}, N {N}, d {d}, K {K}", soft_ms=1e3 * wall["softmax"],
                exact_ms=1e3 * wall["exact"], ratio=wall["exact"] / wall["softmax"])


def bench_models(backend_name, repeats, warmup):
    cfg = dict(image_size=28, patch_size=4, channels=1, num_classes=10, dim=96, depth=4,
               heads=4, dim_head=24, dtype="float32", seed=0)
    rng = np.random.default_rng(0)
    x = backend.to_device(rng.random((128, 1, 28, 28), dtype=np.float32), backend_name)
    y = backend.to_device(rng.integers(0, 10, 128), backend_name)
    official, exact = CRATE(**cfg), CRATE(**cfg, attention=dict(update="exact"))
    if backend_name == "cupy":
        official.to("cupy")
        exact.to("cupy")
    wall, _ = time_runners({"softmax": lambda: whitebox_step(official, x, y),
                            "exact": lambda: whitebox_step(exact, x, y)}, x, None,
                           repeats, warmup)
    return dict(size="whole CRATE step, mnist-demo, B 128, N 50", soft_ms=1e3 * wall["softmax"],
                exact_ms=1e3 * wall["exact"], ratio=wall["exact"] / wall["softmax"])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="numpy", choices=backend.BACKENDS)
    ap.add_argument("--repeats", type=int, default=7, help="timed runs per variant (median)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2,
                    help="threads: PyTorch's, and whitebox's batch shards (BLAS for table 2)")
    args = ap.parse_args(argv)
    warn_if_loaded()
    memory.keep_freed_memory()                   # as training runs

    torch = load_torch()
    if torch is None:
        print(bench_crate.TORCH_MISSING)
    else:
        torch.set_num_threads(args.threads)
    with threads.limited(args.threads):
        alpha = [bench_alpha(n, args.backend, torch, args.repeats, args.warmup, args.threads)
                 for n in ALPHA_CONFIGS]
        rows = [bench_mssa(*size, args.backend, args.repeats, args.warmup)
                for size in MSSA_SIZES]
        rows.append(bench_models(args.backend, args.repeats, args.warmup))
    print(f"CRATE-alpha: one float32 training step, backend={args.backend}, "
          f"{args.threads} thread(s), median of {args.repeats}")
    print("| config | batch | parameters | whitebox ms | PyTorch ms | whitebox/PyTorch |")
    print("|---|---|---|---|---|---|")
    for r in alpha:
        print(f"| {r['config']} | {r['batch']} | {r['params']:,} | {r['wb_ms']:.1f} | "
              f"{fmt(r['torch_ms'], '.1f', '-')} | {fmt(r['ratio'], '.2f', '-')} |")

    print(f"\nMSSA forward + backward, float32: exact step vs softmax, backend={args.backend}, "
          f"{args.threads} BLAS thread(s)")
    print("| size | softmax ms | exact ms | exact/softmax |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['size']} | {r['soft_ms']:.1f} | {r['exact_ms']:.1f} | {r['ratio']:.2f} |")
    return alpha, rows


if __name__ == "__main__":
    main()
