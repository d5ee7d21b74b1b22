"""Learn features with the MCR^2 objective, every gradient written by hand.

A small network maps 8x8 digit images (scikit-learn's bundled ``digits``) to
unit-length features Z, and is trained to maximise the rate reduction

    R(Z) - Rc(Z | labels) = 1/2 logdet(I + d/(N eps^2) Z^T Z)
                            - sum_j N_j/(2N) logdet(I + d/(N_j eps^2) Z_j^T Z_j)

(Yu et al. 2020, "Learning Diverse and Discriminative Representations via the
Principle of Maximal Coding Rate Reduction"). The gradient flows by hand
through: whitebox.rate.mcr2_loss -> the L2 normalisation below -> the
network's own backward. Success looks like the paper's picture: the cosine
similarities |Z Z^T|, sorted by class, turn block-diagonal (each class on its
own subspace, classes orthogonal).

    python examples/mcr2_features.py --epochs 60 --out outputs/mcr2
    python examples/mcr2_features.py --fast          # a few seconds

Writes to --out: mcr2_similarity.png (before/after), mcr2_rates.png (R, Rc,
dR per epoch) and mcr2_metrics.json (final numbers).
"""
import argparse
import json
import math
import pathlib
import sys
import time

import numpy as np

from whitebox import nn, rate
from whitebox.optim import AdamW


# --------------------------------------------------------------------- data
def load_digits_split(test_fraction=0.2, seed=0, limit=None):
    """Digits (1797 images of 8x8, 10 classes) as float rows in [0, 1], split train/test."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:
        raise ImportError("this example needs scikit-learn for its bundled digits data "
                          "(nothing is downloaded): pip install scikit-learn") from err
    digits = load_digits()
    X = digits.data.astype(np.float64) / 16.0             # (1797, 64)
    y = digits.target.astype(np.int64)                     # (1797,)
    order = np.random.default_rng(seed).permutation(len(y))
    if limit is not None:
        order = order[:limit]
    n_test = int(round(test_fraction * len(order)))
    test, train = order[:n_test], order[n_test:]
    return X[train], y[train], X[test], y[test]


# --------------------------------------------------------- L2 normalisation
def l2_normalize_forward(x, tiny=1e-12):
    """z = x / ||x|| row by row (features on the unit sphere).

    Inputs: x (N, d). Returns: z (N, d), cache.
    """
    norm = np.sqrt((x * x).sum(axis=1, keepdims=True))    # (N, 1)
    norm = np.maximum(norm, tiny)
    z = x / norm
    return z, (z, norm)


def l2_normalize_backward(dz, cache):
    """dx = (dz - z (z . dz)) / ||x||: the part of dz tangent to the sphere, rescaled.

    From z = x / r with r = ||x||: dz/dx = (I - z z^T) / r, which is symmetric.
    """
    z, norm = cache
    radial = (z * dz).sum(axis=1, keepdims=True)           # (N, 1)
    return (dz - z * radial) / norm


# ------------------------------------------------------------------- model
def build_encoder(d_in, width, d_out, seed, dtype="float32"):
    """Linear -> LayerNorm -> ReLU -> Linear; features are normalised after it."""
    rng = np.random.default_rng(seed)
    return nn.Sequential(nn.Linear(d_in, width, dtype=dtype, seed=rng),
                         nn.LayerNorm(width, dtype=dtype),
                         nn.ReLU(dtype=dtype),
                         nn.Linear(width, d_out, dtype=dtype, seed=rng),
                         dtype=dtype)


def features(model, X):
    """Unit-length features of X (no gradient bookkeeping kept)."""
    z, _ = l2_normalize_forward(model(X.astype(model.dtype)))
    return z


def rates(Z, y, eps):
    """(R, Rc, dR) of features Z with labels y, in float64."""
    Z = Z.astype(np.float64)
    R = float(rate.coding_rate(Z, eps))
    Rc = float(rate.class_compression_rate(Z, y, eps))
    return R, Rc, R - Rc


def nearest_subspace_accuracy(Z_train, y_train, Z_test, y_test, n_components):
    """Classify each test feature by the class subspace (top principal directions of
    that class's training features) that captures most of its energy."""
    classes = np.unique(y_train)
    scores = np.empty((len(Z_test), len(classes)))
    for i, j in enumerate(classes):
        _, _, Vt = np.linalg.svd(Z_train[y_train == j], full_matrices=False)
        basis = Vt[:n_components]                          # (r, d)
        scores[:, i] = np.linalg.norm(Z_test @ basis.T, axis=1)
    return float((classes[scores.argmax(axis=1)] == y_test).mean())


# ---------------------------------------------------------------- figures
def save_similarity_figure(path, panels, y):
    """|Z Z^T| (cosine similarities of unit rows) with samples sorted by class."""
    # A bare Figure (no pyplot) draws to a file without touching the display.
    from matplotlib.figure import Figure

    order = np.argsort(y, kind="stable")
    fig = Figure(figsize=(5 * len(panels), 4.6), layout="constrained")
    axes = fig.subplots(1, len(panels))
    for ax, (title, Z) in zip(np.atleast_1d(axes), panels):
        Zs = Z[order]
        im = ax.imshow(np.abs(Zs @ Zs.T), cmap="Blues", vmin=0, vmax=1)
        edges = np.flatnonzero(np.diff(y[order])) + 0.5
        for e in edges:
            ax.axhline(e, color="k", lw=0.3)
            ax.axvline(e, color="k", lw=0.3)
        # one tick per class, at the middle of its block
        bounds = np.concatenate([[-0.5], edges, [len(y) - 0.5]])
        centres = (bounds[:-1] + bounds[1:]) / 2
        classes = [str(c) for c in np.unique(y)]
        ax.set_xticks(centres, classes, fontsize=7)
        ax.set_yticks(centres, classes, fontsize=7)
        ax.tick_params(length=0)
        ax.set_title(title)
        ax.set_xlabel("samples, sorted by class")
        ax.set_ylabel("samples, sorted by class")
    fig.suptitle(f"$|Z Z^T|$ of {len(y)} samples sorted by class (lines: class boundaries); "
                 "a block-diagonal matrix = orthogonal class subspaces", fontsize=10)
    fig.colorbar(im, ax=axes, shrink=0.8, label="|cosine similarity|")
    fig.savefig(path, dpi=120)


def save_rates_figure(path, history):
    """R, Rc and dR = R - Rc on the training set, one point per epoch."""
    from matplotlib.figure import Figure

    epochs = np.arange(len(history["R"]))
    fig = Figure(figsize=(6, 4), layout="tight")
    ax = fig.subplots()
    for key, label in (("R", "R (expand all)"), ("Rc", "Rc (compress each class)"),
                       ("dR", "dR = R - Rc")):
        ax.plot(epochs, history[key], label=label)
    ax.set_xlabel("epoch (0 = initialisation)")
    ax.set_ylabel("nats (training set)")
    ax.set_title("MCR$^2$ training on digits")
    ax.legend()
    fig.savefig(path, dpi=120)


# ------------------------------------------------------------------ train
def train(args):
    from tqdm import tqdm

    X_tr, y_tr, X_te, y_te = load_digits_split(seed=args.seed,
                                               limit=600 if args.fast else None)
    model = build_encoder(X_tr.shape[1], args.width, args.dim, args.seed)
    opt = AdamW(model, lr=args.lr, weight_decay=args.weight_decay)
    rng = np.random.default_rng(args.seed + 1)

    Z0_tr, Z0_te = features(model, X_tr), features(model, X_te)
    history = {k: [v] for k, v in zip(("R", "Rc", "dR"), rates(Z0_tr, y_tr, args.eps))}
    steps_per_epoch = max(1, len(y_tr) // args.batch_size)
    # a bar only where someone watches it: a redirected log gets no carriage returns
    bar = tqdm(range(args.epochs), desc="MCR^2", unit="epoch", disable=not sys.stderr.isatty())
    for _ in bar:
        order = rng.permutation(len(y_tr))
        for s in range(steps_per_epoch):
            idx = order[s * args.batch_size:(s + 1) * args.batch_size]
            h = model(X_tr[idx].astype(model.dtype))                     # (B, dim)
            Z, norm_cache = l2_normalize_forward(h)
            loss, dZ = rate.mcr2_loss(Z, y_tr[idx], args.eps, accumulate="float64")
            opt.zero_grad()
            model.backward(l2_normalize_backward(dZ, norm_cache))
            opt.step()
        R, Rc, dR = rates(features(model, X_tr), y_tr, args.eps)
        for k, v in zip(("R", "Rc", "dR"), (R, Rc, dR)):
            history[k].append(v)
        bar.set_postfix(R=f"{R:.2f}", Rc=f"{Rc:.2f}", dR=f"{dR:.2f}", batch_loss=f"{loss:.2f}")

    Z_tr, Z_te = features(model, X_tr), features(model, X_te)
    n_comp = max(1, args.dim // 10)
    metrics = {
        "epochs": args.epochs,
        "eps": args.eps,
        "R_init": history["R"][0], "Rc_init": history["Rc"][0], "dR_init": history["dR"][0],
        "R": history["R"][-1], "Rc": history["Rc"][-1], "dR": history["dR"][-1],
        "dR_test": rates(Z_te, y_te, args.eps)[2],
        "nearest_subspace_acc_init": nearest_subspace_accuracy(Z0_tr, y_tr, Z0_te, y_te,
                                                               n_comp),
        "nearest_subspace_acc": nearest_subspace_accuracy(Z_tr, y_tr, Z_te, y_te, n_comp),
    }
    return model, history, metrics, (Z0_te, Z_te, y_te)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--batch-size", type=int, default=500,
                   help="MCR^2 needs every class well represented in a batch")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--dim", type=int, default=40, help="feature dimension d")
    p.add_argument("--eps", type=float, default=math.sqrt(0.5),
                   help="the papers' epsilon (the official code's eps=0.5 is epsilon^2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="outputs/mcr2", help="folder for figures and metrics")
    p.add_argument("--fast", action="store_true", help="a tiny run (600 images, 3 epochs)")
    args = p.parse_args(argv)
    if args.fast:
        args.epochs, args.batch_size = min(args.epochs, 3), min(args.batch_size, 240)

    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    _, history, metrics, (Z0_te, Z_te, y_te) = train(args)
    metrics["seconds"] = round(time.time() - t0, 2)

    save_similarity_figure(out / "mcr2_similarity.png",
                           [("test features at initialisation", Z0_te),
                            (f"after {args.epochs} epochs of MCR$^2$", Z_te)], y_te)
    save_rates_figure(out / "mcr2_rates.png", history)
    (out / "mcr2_metrics.json").write_text(json.dumps(metrics, indent=2))

    print(f"train R {metrics['R_init']:.2f} -> {metrics['R']:.2f}, "
          f"Rc {metrics['Rc_init']:.2f} -> {metrics['Rc']:.2f}, "
          f"dR {metrics['dR_init']:.2f} -> {metrics['dR']:.2f} (test dR {metrics['dR_test']:.2f})")
    print(f"nearest-subspace test accuracy {metrics['nearest_subspace_acc_init']:.3f} -> "
          f"{metrics['nearest_subspace_acc']:.3f}  ({metrics['seconds']} s)")
    print(f"figures: {out / 'mcr2_similarity.png'}, {out / 'mcr2_rates.png'}")
    return metrics


if __name__ == "__main__":
    main()
