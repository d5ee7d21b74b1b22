"""Time LayerNorm forward + backward: whitebox's fast path and reference against PyTorch.

    python benchmarks/bench_layernorm.py [--threads 1]

Alternating runs, medians (ms), float32, the token shapes of the benchmark
configs: the readable reference, the fast path in NumPy calls, the fast path
with the fused loops (whitebox/functional/fused.py, where Numba is
installed) and PyTorch; a column says so when its library is missing.
Every column runs under whitebox.memory.keep_freed_memory(), as training does
(--malloc-default leaves malloc alone).
"""
import argparse
import os
import sys
import statistics
import time

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import warn_if_loaded  # noqa: E402
from whitebox import memory
from whitebox.functional import fused
from whitebox.functional.layernorm import (layernorm_backward, layernorm_forward,
                                           layernorm_reference_backward,
                                           layernorm_reference_forward)

SHAPES = {"mnist-demo (128, 50, 96)": (128, 50, 96),
          "cifar-crate-t (32, 65, 384)": (32, 65, 384),
          "CRATE-T 224px (8, 197, 384)": (8, 197, 384)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=41)
    ap.add_argument("--malloc-default", action="store_true",
                    help="leave malloc's thresholds alone (no keep_freed_memory)")
    args = ap.parse_args(argv)
    warn_if_loaded()
    kept = not args.malloc_default and memory.keep_freed_memory()
    try:
        import torch
        torch.set_num_threads(args.threads)
    except ImportError:
        torch = None
    rng = np.random.default_rng(0)
    print(f"LayerNorm forward + backward, float32, {args.threads} thread(s), "
          f"median of {args.repeats} alternating runs (ms); malloc: "
          + ("freed memory kept" if kept else "default thresholds"))
    print("| tokens x d | reference | fast path, NumPy | fast path, fused | PyTorch | "
          "fused / PyTorch | NumPy / PyTorch |")
    print("|---|---|---|---|---|---|---|")
    with threadpool_limits(args.threads):
        for name, shape in SHAPES.items():
            x = rng.standard_normal(shape, dtype=np.float32)
            g = np.ones(shape[-1], np.float32)
            b = np.zeros(shape[-1], np.float32)
            dout = rng.standard_normal(shape, dtype=np.float32)

            def ours(fwd, bwd):
                return lambda: bwd(dout, fwd(x, g, b)[1])

            def fast_path(loops):
                def run():
                    with fused.setting(loops):
                        ours(layernorm_forward, layernorm_backward)()
                return run
            runs = {"reference": ours(layernorm_reference_forward, layernorm_reference_backward),
                    "numpy": fast_path(False)}
            if fused.available():
                runs["fused"] = fast_path(True)
            if torch is not None:
                ln = torch.nn.LayerNorm(shape[-1])
                tx = torch.from_numpy(x).requires_grad_()
                tdout = torch.from_numpy(dout)

                def run_torch():
                    ln.zero_grad()
                    tx.grad = None
                    ln(tx).backward(tdout)
                runs["torch"] = run_torch
            times = {k: [] for k in runs}
            for _ in range(3):
                for f in runs.values():
                    f()
            for _ in range(args.repeats):
                for k, f in runs.items():
                    t = time.perf_counter()
                    f()
                    times[k].append(time.perf_counter() - t)
            med = {k: 1e3 * statistics.median(v) for k, v in times.items()}
            def cell(k, missing):
                return f"{med[k]:.2f}" if k in med else missing

            def ratio(k):
                return f"{med[k] / med['torch']:.2f}" if k in med and "torch" in med else "n/a"
            print(f"| {name} | {med['reference']:.2f} | {med['numpy']:.2f} | "
                  f"{cell('fused', 'Numba not installed')} | "
                  f"{cell('torch', 'PyTorch not installed')} | {ratio('fused')} | "
                  f"{ratio('numpy')} |", flush=True)


if __name__ == "__main__":
    main()
