"""Time one float32 training step of each standard baseline against PyTorch eager.

    python benchmarks/bench_baselines.py                 # 2 threads, every model
    python benchmarks/bench_baselines.py --models vit gpt --threads 4

Training step = forward, loss, backward (no optimizer), for ViT, GPT, MAE and
BERT at small CPU sizes; PyTorch runs the twins of tests/torch_baselines.py
holding the same weights. Runs alternate between the two so both see the
same machine state; the table reports medians and the ratio whitebox /
PyTorch. GPT's key/value cache: bytes per generated token beside
CRATE-GPT's one-tensor cache at the same size.
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from bench_crate import time_runners                                      # noqa: E402
from whitebox import losses, memory, threads                               # noqa: E402
from whitebox.functional import token_cross_entropy                       # noqa: E402
from whitebox.models import BERT, CRATEGPT, GPT, MAE, ViT            # noqa: E402

CONFIGS = {
    "vit": dict(image_size=32, patch_size=4, num_classes=10, dim=192, depth=6, heads=3, batch=32),
    "gpt": dict(vocab_size=104, block_size=128, dim=128, depth=4, heads=4, batch=16),
    "mae": dict(image_size=32, patch_size=4, dim=192, depth=6, heads=3, decoder_dim=128,
                decoder_depth=2, decoder_heads=4, batch=32),
    "bert": dict(vocab_size=1000, block_size=128, dim=128, depth=4, heads=4, batch=16),
}


def _setup(name, cfg, rng):
    """(whitebox step, torch step or None) for one model, same weights and inputs."""
    cfg = dict(cfg)
    B = cfg.pop("batch")
    try:
        import torch
        import torch_baselines as tb
    except ImportError:
        torch = None
    if name == "vit":
        model = ViT(**cfg, seed=0)
        x = rng.standard_normal((B, 3, 32, 32)).astype(np.float32)
        y = rng.integers(0, 10, B)

        def wb():
            _, d = losses.cross_entropy(model(x), y)
            model.backward(d)
        if torch is None:
            return wb, None
        twin = tb.TorchViT(32, 4, 10, cfg["dim"], cfg["depth"], cfg["heads"])
        tx, ty = torch.from_numpy(x), torch.from_numpy(y)

        def tstep():
            torch.nn.functional.cross_entropy(twin(tx), ty).backward()
    elif name == "mae":
        model = MAE(**cfg, seed=0)
        x = rng.standard_normal((B, 3, 32, 32)).astype(np.float32)
        noise = rng.random((B, model.num_patches))

        def wb():
            model(x, noise=noise)
            model.backward()
        if torch is None:
            return wb, None
        twin = tb.TorchMAE(32, 4, cfg["dim"], cfg["depth"], cfg["heads"], cfg["decoder_dim"],
                           cfg["decoder_depth"], cfg["decoder_heads"])
        tx, tn = torch.from_numpy(x), torch.from_numpy(noise)

        def tstep():
            twin(tx, tn, 0.75)[0].backward()
    else:
        model = (GPT if name == "gpt" else BERT)(**cfg, seed=0)
        V, T = cfg["vocab_size"], cfg["block_size"]
        x, y = rng.integers(0, V, (B, T)), rng.integers(0, V, (B, T))

        def wb():
            _, d = token_cross_entropy(model(x), y)
            model.backward(d)
        if torch is None:
            return wb, None
        twin = (tb.TorchGPT(V, T, cfg["dim"], cfg["depth"], cfg["heads"]) if name == "gpt" else
                tb.TorchBERT(V, T, cfg["dim"], cfg["depth"], cfg["heads"], 4 * cfg["dim"]))
        tx, ty = torch.from_numpy(x), torch.from_numpy(y)
        tt = torch.zeros_like(tx)

        def tstep():
            logits = twin(tx) if name == "gpt" else twin(tx, tt)
            torch.nn.functional.cross_entropy(logits.reshape(-1, V), ty.reshape(-1)).backward()
    state = model.state_dict()
    if hasattr(model, "to_official_state"):
        state = model.to_official_state(state)
    twin.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()})

    def torch_step():
        twin.zero_grad(set_to_none=False)
        tstep()

    def wb_step():
        model.zero_grad()
        wb()
    return wb_step, torch_step


def gpt2_cache_bytes():
    """GPT.cache_bytes_per_token at GPT-2's size, without building its 124M parameters."""
    return GPT.cache_bytes_per_token(type("Shape", (), dict(depth=12, dim=768,
                                                             dtype="float32"))())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    args = ap.parse_args(argv)
    memory.keep_freed_memory()                   # as training runs
    threads.set_threads(args.threads)
    try:
        import torch
        torch.set_num_threads(args.threads)
    except ImportError:
        torch = None
    rows = []
    for name in args.models:
        wb, ts = _setup(name, CONFIGS[name], np.random.default_rng(0))
        runners = {"whitebox": wb, **({"torch": ts} if ts is not None else {})}
        wall, _ = time_runners(runners, np.zeros(1), torch, args.repeats, args.warmup)
        rows.append((name, 1e3 * wall["whitebox"], 1e3 * wall.get("torch", np.nan)))
    print(f"one float32 training step (forward + loss + backward), {args.threads} threads, "
          f"median of {args.repeats}")
    print("| model | config | whitebox ms | PyTorch eager ms | whitebox/PyTorch |")
    print("|---|---|---|---|---|")
    for name, w, t in rows:
        cfg = ", ".join(f"{k} {v}" for k, v in CONFIGS[name].items())
        print(f"| {name} | {cfg} | {w:.1f} | {t:.1f} | {w / t:.2f} |")
    cfg = {k: v for k, v in CONFIGS["gpt"].items() if k != "batch"}
    prompt = np.zeros((1, 10), dtype=np.int64)
    measured = {}
    for label, model in (("GPT", GPT(**cfg)), ("CRATE-GPT", CRATEGPT(**cfg))):
        cache = model.new_cache()
        model.forward_cached(prompt, cache)
        arrays = [a for layer in cache["past"] for a in (layer if isinstance(layer, tuple)
                                                          else (layer,))]
        measured[label] = sum(a.nbytes for a in arrays) // prompt.shape[1]
    print(f"\ngeneration cache per token and sequence, float32, measured on the gpt config "
          f"(depth {cfg['depth']}, d {cfg['dim']}): GPT {measured['GPT']} bytes (keys and "
          f"values), CRATE-GPT {measured['CRATE-GPT']} bytes (one projection); at GPT-2 size "
          f"(12 layers, d 768): {gpt2_cache_bytes()} and {gpt2_cache_bytes() // 2} bytes")
    return rows


if __name__ == "__main__":
    main()
