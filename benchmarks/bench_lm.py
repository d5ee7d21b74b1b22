"""Time the CRATE language model: one float32 training step against the PyTorch twin, and generation.

    python benchmarks/bench_lm.py                       # NumPy, PyTorch twin if installed
    python benchmarks/bench_lm.py --backend cupy        # on a GPU (PyTorch on CUDA too)
    python benchmarks/bench_lm.py --configs char        # only the character model

Training step = forward, token cross-entropy, backward (no optimizer), runs
alternating between whitebox and PyTorch so both see the same machine state;
the table reports medians and the ratio whitebox / PyTorch. Generation:
tokens per second of CRATEGPT.generate with the one-tensor-per-layer cache
and without it (every new token re-runs the whole window).
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import warn_if_loaded  # noqa: E402
from bench_crate import time_runners
from whitebox import backend, memory
from whitebox.functional import token_cross_entropy
from whitebox.models import CRATEGPT

CONFIGS = {
    # the character model of `python -m whitebox.train --task lm` size class
    "char": dict(vocab_size=104, block_size=128, dim=128, depth=4, heads=4, batch=32),
    # the official 12-layer GPT-2 shape, at a small batch and context
    "gpt2-12L": dict(vocab_size=50304, block_size=1024, dim=768, depth=12, heads=12, batch=2,
                     T=128),
}


def bench_step(name, cfg, variant, backend_name, repeats, warmup):
    cfg = dict(cfg)
    batch = cfg.pop("batch")
    T = cfg.pop("T", cfg["block_size"])
    rng = np.random.default_rng(0)
    x_np = rng.integers(0, cfg["vocab_size"], (batch, T))
    y_np = rng.integers(0, cfg["vocab_size"], (batch, T))
    model = CRATEGPT(**cfg, variant=variant, dtype="float32", seed=0)
    if backend_name == "cupy":
        model.to("cupy")
    x, y = backend.to_device(x_np, backend_name), backend.to_device(y_np, backend_name)
    device = "cuda" if backend_name == "cupy" else "cpu"
    try:
        import torch
        from whitebox.torch_twins.crate_lm import torch_lm_from
        tmodel = torch_lm_from(model).to(device)
        tx, ty = torch.from_numpy(x_np).to(device), torch.from_numpy(y_np).to(device)
    except ImportError:
        torch = None
    except (RuntimeError, AssertionError) as e:
        print(f"[{name}] PyTorch column left out: {e}")
        torch = None

    def run_wb():
        _, d = token_cross_entropy(model(x), y)
        model.zero_grad()
        model.backward(d)

    def run_torch():
        tmodel.zero_grad(set_to_none=False)
        logits = tmodel(tx)
        torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                          ty.reshape(-1)).backward()

    runners = {"whitebox": run_wb, **({"torch": run_torch} if torch is not None else {})}
    wall, _ = time_runners(runners, x, torch, repeats, warmup)   # alternating, medians
    wb_ms = 1e3 * wall["whitebox"]
    torch_ms = 1e3 * wall["torch"] if "torch" in wall else None
    return dict(config=name, variant=variant, batch=batch, T=T, whitebox_ms=wb_ms,
                torch_ms=torch_ms, ratio=wb_ms / torch_ms if torch_ms else None)


def bench_generate(cfg, variant, backend_name, new_tokens, prompt):
    cfg = {k: v for k, v in cfg.items() if k not in ("batch", "T")}
    model = CRATEGPT(**cfg, variant=variant, dtype="float32", seed=0)
    if backend_name == "cupy":
        model.to("cupy")
    idx = backend.to_device(np.random.default_rng(1).integers(0, cfg["vocab_size"], (1, prompt)),
                            backend_name)
    rates = {}
    for use_cache in (True, False):
        model.generate(idx, 2, rng=0, use_cache=use_cache)      # warm-up
        t = time.perf_counter()
        model.generate(idx, new_tokens, rng=0, use_cache=use_cache)
        rates[use_cache] = new_tokens / (time.perf_counter() - t)
    return rates


def fmt(v, spec):
    return "-" if v is None else format(v, spec)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="numpy", choices=backend.BACKENDS)
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--variant", default="overcomplete", choices=["overcomplete", "plain"])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--new-tokens", type=int, default=32, help="tokens generated per timing")
    ap.add_argument("--threads", type=int, default=0, help="PyTorch threads (0: its default)")
    args = ap.parse_args(argv)
    warn_if_loaded()
    memory.keep_freed_memory()                   # as training runs
    if args.threads:
        try:
            import torch
            torch.set_num_threads(args.threads)
        except ImportError:
            pass
    rows = [bench_step(n, CONFIGS[n], args.variant, args.backend, args.repeats, args.warmup)
            for n in args.configs]
    print(f"one float32 training step (forward + loss + backward), backend={args.backend}, "
          f"variant={args.variant}, median of {args.repeats}")
    print("| config | batch x T | whitebox ms | PyTorch ms | whitebox/PyTorch |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['config']} | {r['batch']} x {r['T']} | {r['whitebox_ms']:.1f} | "
              f"{fmt(r['torch_ms'], '.1f')} | {fmt(r['ratio'], '.2f')} |")
    print(f"\ngeneration, batch 1, {args.new_tokens} new tokens")
    print("| config | prompt | cached tokens/s | uncached tokens/s | speed-up |")
    print("|---|---|---|---|---|")
    for n in args.configs:
        prompt = 16 if n == "char" else 64
        rates = bench_generate(CONFIGS[n], args.variant, args.backend, args.new_tokens, prompt)
        print(f"| {n} | {prompt} | {rates[True]:.1f} | {rates[False]:.1f} | "
              f"{rates[True] / rates[False]:.1f}x |")
    return rows


if __name__ == "__main__":
    main()
