"""Train the PyTorch twin of the causal CRATE with the recipe of ``--task lm``, for comparison.

    python benchmarks/twin_lm_recipe.py                  # the default lm recipe
    python benchmarks/twin_lm_recipe.py --steps 200      # a shorter run

Same text, split, tokenizer, model size, initial weights (copied from the
whitebox model of the same seed), batches (the same generator), AdamW
(torch.optim.AdamW with whitebox's decay groups, whitebox.optim.decay_mask)
and warm-up + cosine schedule, gradient clipping at 1.0. Prints the held-out loss in
nats per character and the wall time, to set beside the whitebox run.
"""
import argparse
import math
import time

import numpy as np
import torch

from whitebox.data.text import (CharTokenizer, bigram_cross_entropy, pydoc_corpus,
                                random_windows, sequential_windows, split_text)
from whitebox.models import CRATEGPT
from whitebox.optim.optimizer import decay_mask
from whitebox.tasks.lm import LanguageModel
from whitebox.torch_twins.crate_lm import torch_lm_from


def main(argv=None):
    d = LanguageModel.defaults
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=d["epochs"] * 100)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    o = LanguageModel.Options()
    text = pydoc_corpus()
    tok = CharTokenizer.from_text(text)
    train_text, test_text = split_text(text, o.held_out)
    train_ids, test_ids = tok.encode(train_text), tok.encode(test_text)
    model = CRATEGPT(tok.vocab_size, o.block_size, o.dim, o.depth, o.heads, variant=o.variant,
                     expansion=o.expansion, dtype="float32", seed=0)
    tm = torch_lm_from(model)
    # the decay groups whitebox's AdamW uses, by name
    decays = decay_mask(model)
    no_decay = {name for name in model.state_dict() if not decays[name]}
    params = dict(tm.named_parameters())
    groups = [{"params": [p for n, p in params.items() if n not in no_decay],
               "weight_decay": d["weight_decay"]},
              {"params": [p for n, p in params.items() if n in no_decay], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=d["lr"])
    warmup, total, base, low = int(round(d["warmup_epochs"] * 100)), args.steps, d["lr"], \
        d["min_lr"]

    def lr_at(t):
        if t < warmup:
            return base * (t + 1) / warmup
        s = min(1.0, (t - warmup) / max(1, total - warmup))
        return low + (base - low) * (1 + math.cos(math.pi * s)) / 2

    rng = np.random.default_rng(0)
    x_test, y_test = sequential_windows(test_ids, o.block_size, o.eval_windows)
    t0 = time.perf_counter()
    for step in range(total):
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        x, y = random_windows(train_ids, o.block_size, d["batch_size"], rng)
        logits = tm(torch.from_numpy(x))
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, tok.vocab_size),
                                                 torch.from_numpy(y).reshape(-1))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(tm.parameters(), 1.0)
        opt.step()
    seconds = time.perf_counter() - t0
    tm.eval()
    with torch.no_grad():
        total_loss = 0.0
        for i in range(0, len(x_test), 64):
            lg = tm(torch.from_numpy(x_test[i:i + 64]))
            total_loss += torch.nn.functional.cross_entropy(
                lg.reshape(-1, tok.vocab_size),
                torch.from_numpy(y_test[i:i + 64]).reshape(-1)).item() * len(lg)
    print(f"PyTorch twin, {total} steps in {seconds:.0f} s ({args.threads} thread(s)): "
          f"test loss: {total_loss / len(x_test):.3f} nats/char (bigram baseline "
          f"{bigram_cross_entropy(train_ids, test_ids, tok.vocab_size):.3f})")


if __name__ == "__main__":
    main()
