"""Time one float32 training step of each standard baseline against PyTorch eager.

    python benchmarks/bench_baselines.py                 # 2 threads, every model
    python benchmarks/bench_baselines.py --models vit gpt --threads 4

Training step = forward, loss, backward (no optimizer), for ViT, GPT, MAE and
BERT at small CPU sizes; PyTorch runs the twins of tests/torch_baselines.py
holding the same weights, on --threads threads. Whitebox runs as training
runs it (whitebox/training/threaded.py): with --threads W > 1 on NumPy each
batch is split into W shards that W threads run at once, each with a
one-thread BLAS (ShardThreads, the "whitebox" column); the "one thread"
column is the whole batch in one Python thread on a W-thread BLAS, as a
step ran before the shards. Runs alternate between the runners so all see
the same machine state; the table reports medians, the ratio whitebox /
PyTorch, and the load average before and after. GPT's key/value cache:
bytes per generated token beside CRATE-GPT's one-tensor cache at the same
size.
"""
import argparse
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))                     # the PyTorch twins
sys.path.insert(0, HERE)
from _common import load_averages, warn_if_loaded                         # noqa: E402
from bench_crate import sharded_runner, time_runners                      # noqa: E402
from whitebox import losses, memory, threads                               # noqa: E402
from whitebox.training.threaded import ShardThreads                       # noqa: E402
from whitebox.functional import token_cross_entropy                       # noqa: E402
from whitebox.models import BERT, CRATEGPT, GPT, MAE, ViT            # noqa: E402

CONFIGS = {
    "vit": dict(image_size=32, patch_size=4, num_classes=10, dim=192, depth=6, heads=3, batch=32),
    "gpt": dict(vocab_size=104, block_size=128, dim=128, depth=4, heads=4, batch=16),
    "mae": dict(image_size=32, patch_size=4, dim=192, depth=6, heads=3, decoder_dim=128,
                decoder_depth=2, decoder_heads=4, batch=32),
    "bert": dict(vocab_size=1000, block_size=128, dim=128, depth=4, heads=4, batch=16),
}


def _setup(name, cfg, rng, workers):
    """(whitebox step as training runs it, whitebox step in one thread, torch step or None)
    for one model, same weights and inputs; the first is None at workers < 2."""
    cfg = dict(cfg)
    B = cfg.pop("batch")
    if name in ("vit", "mae"):
        model = (ViT if name == "vit" else MAE)(**cfg, seed=0)
        S = cfg["image_size"]
        x = rng.standard_normal((B, 3, S, S)).astype(np.float32)
        batch = (x, rng.integers(0, cfg["num_classes"], B) if name == "vit" else
                 rng.random((B, model.num_patches)))
    else:
        model = (GPT if name == "gpt" else BERT)(**cfg, seed=0)
        V, T = cfg["vocab_size"], cfg["block_size"]
        batch = (rng.integers(0, V, (B, T)), rng.integers(0, V, (B, T)))

    def shard_step(m, shard):
        """One shard's forward, loss and backward, as a task's train_step."""
        a, b = shard
        if name == "mae":
            loss, _, _ = m(a, noise=b)
            m.backward()
            return loss, {"count": len(a)}
        loss, d = (losses.cross_entropy if name == "vit" else token_cross_entropy)(m(a), b)
        m.backward(d)
        return loss, {"count": b.size}

    def one_thread():
        model.zero_grad()
        shard_step(model, batch)

    sharded = sharded_runner(ShardThreads(model, workers), batch, shard_step) \
        if workers > 1 else None
    return sharded, one_thread, _torch_step(name, cfg, model, batch)


def _torch_step(name, cfg, model, batch):
    """The PyTorch twin's step on the same weights and inputs, or None without PyTorch."""
    try:
        import torch
        import torch_baselines as tb
    except ImportError:
        return None
    F = torch.nn.functional
    a, b = (torch.from_numpy(v) for v in batch)
    if name == "vit":
        twin = tb.TorchViT(cfg["image_size"], cfg["patch_size"], cfg["num_classes"], cfg["dim"],
                           cfg["depth"], cfg["heads"])

        def tstep():
            F.cross_entropy(twin(a), b).backward()
    elif name == "mae":
        twin = tb.TorchMAE(cfg["image_size"], cfg["patch_size"], cfg["dim"], cfg["depth"],
                           cfg["heads"], cfg["decoder_dim"], cfg["decoder_depth"],
                           cfg["decoder_heads"])

        def tstep():
            twin(a, b, 0.75)[0].backward()
    else:
        V, T = cfg["vocab_size"], cfg["block_size"]
        twin = (tb.TorchGPT(V, T, cfg["dim"], cfg["depth"], cfg["heads"]) if name == "gpt" else
                tb.TorchBERT(V, T, cfg["dim"], cfg["depth"], cfg["heads"], 4 * cfg["dim"]))
        types = torch.zeros_like(a)

        def tstep():
            logits = twin(a) if name == "gpt" else twin(a, types)
            F.cross_entropy(logits.reshape(-1, V), b.reshape(-1)).backward()
    state = model.state_dict()
    if hasattr(model, "to_official_state"):
        state = model.to_official_state(state)
    twin.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()})

    def torch_step():
        twin.zero_grad(set_to_none=False)
        tstep()
    return torch_step


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
    ap.add_argument("--no-one-thread", action="store_true",
                    help="skip the one-thread column (the whole batch on a multi-thread BLAS)")
    args = ap.parse_args(argv)
    memory.keep_freed_memory()                   # as training runs
    threads.set_threads(args.threads)
    try:
        import torch
        torch.set_num_threads(args.threads)
    except ImportError:
        torch = None
    rows = []
    warn_if_loaded()
    load_before = load_averages()
    for name in args.models:
        sharded, one, ts = _setup(name, CONFIGS[name], np.random.default_rng(0), args.threads)
        runners = {"whitebox": sharded or one}
        if sharded is not None and not args.no_one_thread:
            runners["one"] = one
        if ts is not None:
            runners["torch"] = ts
        wall, _ = time_runners(runners, np.zeros(1), torch, args.repeats, args.warmup)
        rows.append((name, *(1e3 * wall.get(k, np.nan) for k in ("whitebox", "one", "torch"))))
    how = (f"{args.threads} shards in {args.threads} threads, one BLAS thread each (as training "
           f"runs --threads {args.threads})" if args.threads > 1 else "one thread")
    print(f"one float32 training step (forward + loss + backward), {args.threads} thread(s), "
          f"median of {args.repeats} alternating steps after {args.warmup} warm-up; whitebox: "
          f"{how}; one thread: the whole batch in one Python thread on a {args.threads}-thread "
          f"BLAS; PyTorch eager on {args.threads} threads; load average {load_before} before, "
          f"{load_averages()} after")
    print("| model | config | whitebox ms | one thread ms | PyTorch eager ms | whitebox/PyTorch |"
          " one thread/PyTorch |")
    print("|---|---|---|---|---|---|---|")
    for name, w, o, t in rows:
        cfg = ", ".join(f"{k} {v}" for k, v in CONFIGS[name].items())
        print(f"| {name} | {cfg} | {w:.1f} | {o:.1f} | {t:.1f} | {w / t:.2f} | {o / t:.2f} |")
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
