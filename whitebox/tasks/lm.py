"""Causal language modelling with CRATE: ``python -m whitebox.train --task lm``.

The default run trains a character-level CRATEGPT (overcomplete ISTA, width
128, 4 layers, 4 heads, context 64) on the text of Python's documentation
topics (``pydoc_data.topics`` in the standard library, about 465,000
characters; nothing is downloaded), the first 90% to train and the last 10%
held out. ``--data path.txt`` trains on a text file of your own instead.
``--model gpt`` trains nanoGPT's GPT at the same sizes instead (its per-layer
measures: Rc of each block's attention input on the value subspaces, the
non-zero fraction of the MLP hidden units).
An epoch is ``--steps-per-epoch`` batches of random windows. After each
epoch it reports the held-out cross-entropy in nats per character and, per
layer, the compression Rc of the MSSA input and the non-zero fraction of the
ISTA sparse codes on a fixed batch of held-out windows. At the end it draws
``curves.png`` (losses against the bigram baseline), ``layers.png`` and
``atoms.png`` (for a few dictionary atoms of the last layer, the contexts
that activate them most), prints a few sampled lines and ends with
``test loss: X.XXX nats/char (bigram baseline Y.YYY)``.

The character tokenizer is built from the whole text and saved in the
checkpoint; resuming on a text whose tokenizer differs is refused before
anything is loaded or written.
"""
import dataclasses
import os

import numpy as np

from .. import backend, plots
from ..checkpoint import _read as read_checkpoint
from ..data.text import (CharTokenizer, bigram_cross_entropy, pydoc_corpus, random_windows,
                         read_text, sequential_windows, split_text)
from ..functional.token_cross_entropy import (token_cross_entropy_backward,
                                              token_cross_entropy_forward)
from ..models import CRATEGPT, GPT
from ..rate import layer_measures
from ..settings import NONNEG, POSITIVE_INT, PROBABILITY, Check, setting
from ..training.runs import RunFolder
from .base import STANDARD_LAYER_TITLES, Task, refuse_unused


@dataclasses.dataclass
class LMOptions:
    data: str = setting(None, "a UTF-8 text file to train on (default: Python's pydoc topics)",
                        Check(str, optional=True))
    held_out: float = setting(0.1, "fraction of the text held out (its end)",
                              Check(float, low=0.01, high=0.5))
    block_size: int = setting(64, "context length T in characters", POSITIVE_INT)
    steps_per_epoch: int = setting(100, "training batches per epoch", POSITIVE_INT)
    variant: str = setting("overcomplete", "ISTA variant (overcomplete: crate-lm; plain: the "
                           "official pull request)", Check(str, choices=("overcomplete", "plain")))
    dim: int = setting(128, "token width d", POSITIVE_INT)
    depth: int = setting(4, "number of CRATE blocks", POSITIVE_INT)
    heads: int = setting(4, "attention heads K (dim_head = dim // heads)", POSITIVE_INT)
    expansion: int = setting(4, "overcomplete dictionary size m = expansion * dim", POSITIVE_INT)
    ista_step: float = setting(0.1, "ISTA step size eta", Check(float, low=1e-12))
    ista_lambda: float = setting(0.1, "ISTA sparsity weight lambda", NONNEG)
    dropout: float = setting(0.0, "dropout on embeddings, attention weights and outputs",
                             PROBABILITY)
    eval_windows: int = setting(300, "held-out windows scored after each epoch", POSITIVE_INT)
    measure_size: int = setting(32, "held-out windows for the per-layer measures",
                                POSITIVE_INT)
    samples: int = setting(3, "lines sampled at the end", Check(int, low=0))
    temperature: float = setting(0.8, "sampling temperature", Check(float, low=1e-6))


class LanguageModel(Task):
    name = "lm"
    Options = LMOptions
    models = ("crate", "gpt")
    runtime_options = ("data",)
    description = "causal (GPT-style) character language model"
    evaluate_is_pure = True      # fixed held-out windows and probe windows
    standard = "gpt"                             # --model of the standard transformer
    CRATE_ONLY = ("variant", "expansion", "ista_step", "ista_lambda")
    # threads=2: each batch in two shards at once (training/threaded.py); measured 1.5x
    # faster per epoch than one thread on 2 cores, and still faster beside a busy process
    defaults = dict(epochs=8, batch_size=32, lr=3e-3, weight_decay=0.1, warmup_epochs=0.5,
                    min_lr=3e-4, threads=2)
    fast = dict(epochs=2, batch_size=8, steps_per_epoch=5, block_size=32, dim=32, depth=2,
                heads=2, eval_windows=16, measure_size=4, samples=1)
    specials = ()                                # the masked model adds "<mask>"

    @classmethod
    def default_out(cls, options):
        return f"runs/{cls.name}" if options.data is None else \
            f"runs/{cls.name}-{os.path.splitext(os.path.basename(options.data))[0]}"

    # ------------------------------------------------ data and model
    def setup(self, rng):
        o = self.opt
        text = read_text(o.data) if o.data else pydoc_corpus()
        self.source = o.data or "pydoc_data.topics"
        self.tokenizer = CharTokenizer.from_text(text, specials=self.specials)
        if self.cfg.resume:
            self._refuse_other_tokenizer()
        train_text, test_text = split_text(text, o.held_out, min_chars=o.block_size + 1)
        self.train_ids = self.tokenizer.encode(train_text)
        self.test_ids = self.tokenizer.encode(test_text)
        self.rng = rng
        self.x_test, self.y_test = sequential_windows(self.test_ids, o.block_size,
                                                      o.eval_windows)
        self.probe = backend.to_device(self.x_test[:o.measure_size], self.cfg.backend)
        self.baseline = bigram_cross_entropy(self.train_ids, self.test_ids,
                                             self.tokenizer.vocab_size)

    def _refuse_other_tokenizer(self):
        path = RunFolder(self.cfg.out).checkpoint
        if os.path.isfile(path):
            self.check_state((read_checkpoint(path)[1].get("extra") or {}).get("task"))

    def state(self):
        return {"tokenizer": self.tokenizer.to_dict()}

    def check_state(self, saved):
        saved_tok = (saved or {}).get("tokenizer")
        if saved_tok is None:
            raise ValueError("--resume: the checkpoint holds no tokenizer, so it is not a run "
                             f"of --task {self.name}")
        if saved_tok != self.tokenizer.to_dict():
            old = CharTokenizer.from_dict(saved_tok)
            extra = sorted(set(self.tokenizer.chars) - set(old.chars))
            gone = sorted(set(old.chars) - set(self.tokenizer.chars))
            raise ValueError(
                f"--resume: the text {self.source!r} gives a tokenizer of "
                f"{self.tokenizer.vocab_size} tokens, but the checkpoint was trained with "
                f"another one of {old.vocab_size} (characters new here: {extra[:10]!r}, "
                f"missing here: {gone[:10]!r}); resume on the same text, or start a new "
                "--out. Nothing was changed.")

    def steps_per_epoch(self):
        return self.opt.steps_per_epoch

    def describe(self):
        return (f"{self.source}: {len(self.train_ids):,} train / {len(self.test_ids):,} held-out "
                f"characters, vocabulary {self.tokenizer.vocab_size}")

    def model_kwargs(self):
        o = self.opt
        return dict(vocab_size=self.tokenizer.vocab_size, block_size=o.block_size, dim=o.dim,
                    depth=o.depth, heads=o.heads, variant=o.variant, expansion=o.expansion,
                    ista_step=o.ista_step, ista_lambda=o.ista_lambda, dropout=o.dropout,
                    dtype="float32", seed=self.cfg.seed)

    def standard_kwargs(self):
        """The standard transformer's arguments at the same sizes (CRATE's settings refused)."""
        o = self.opt
        refuse_unused(self, self.CRATE_ONLY, self.cfg.model)
        return dict(vocab_size=self.tokenizer.vocab_size, block_size=o.block_size, dim=o.dim,
                    depth=o.depth, heads=o.heads, dropout=o.dropout, dtype="float32",
                    seed=self.cfg.seed)

    def build_model(self):
        if self.opt.dim % self.opt.heads:
            raise ValueError(f"--dim ({self.opt.dim}) must be divisible by --heads "
                             f"({self.opt.heads})")
        if self.cfg.model == "gpt":
            return GPT(**self.standard_kwargs())                 # nanoGPT's model
        return CRATEGPT(**self.model_kwargs())

    def layer_titles(self):
        """plot_layer_measures' titles for this run's model."""
        return {"titles": STANDARD_LAYER_TITLES} if self.cfg.model == self.standard else {}

    def atoms_name(self):
        return "MLP hidden units" if self.cfg.model == self.standard else "dictionary atoms"

    # ------------------------------------------------ one epoch
    def host_batches(self):
        """One epoch of (inputs, next tokens) windows, NumPy arrays on the host."""
        for _ in range(self.opt.steps_per_epoch):
            yield random_windows(self.train_ids, self.opt.block_size, self.cfg.batch_size,
                                 self.rng)

    def batches(self):
        where = self.cfg.backend
        for x, y in self.host_batches():
            yield backend.to_device(x, where), backend.to_device(y, where)

    def train_step(self, model, batch):
        x, y = batch
        loss, cache = token_cross_entropy_forward(model(x), y)
        model.backward(token_cross_entropy_backward(loss.dtype.type(1.0), cache))
        n = x.shape[0]
        return loss, {"loss": loss * n, "count": n}

    def evaluate(self, model):
        """Held-out nats per character (eval mode), and the per-layer measures.

        Split over processes, each evaluates its share of the batches and the
        first adds the measures (its record is the one written).
        """
        model.eval()
        total = 0.0
        where = self.cfg.backend
        for i in self.evaluation_share(range(0, len(self.x_test), 64)):
            x = backend.to_device(self.x_test[i:i + 64], where)
            y = backend.to_device(self.y_test[i:i + 64], where)
            total += float(token_cross_entropy_forward(model(x), y)[0]) * len(x)
        record = dict(test_loss=self.add_parts(dict(loss=total))["loss"] / len(self.x_test))
        if self.writes:
            record["rc"], record["nonzero"] = layer_measures(model, self.probe)
        return record

    def epoch_line(self, record):
        return (f"epoch {record['epoch']:3d} | train loss {record['train_loss']:.4f} | "
                f"test loss {record['test_loss']:.4f} nats/char")

    # ------------------------------------------------ figures and the last line
    def figures(self, model, history, out):
        plot_losses(history, self.baseline, os.path.join(out, "curves.png"))
        plots.plot_layer_measures(history, os.path.join(out, "layers.png"), **self.layer_titles())
        plot_atoms(model, self.probe_windows(), self.tokenizer, os.path.join(out, "atoms.png"),
                   name=self.atoms_name())

    def probe_windows(self):
        return self.x_test[:max(self.opt.measure_size, 64)]

    def sample_lines(self, model, n=None, length=None):
        """``n`` lines sampled from ``model``, each from a held-out prompt."""
        o = self.opt
        n = o.samples if n is None else n
        length = o.block_size * 2 if length is None else length
        lines = []
        rng = np.random.default_rng(self.cfg.seed)
        for i in range(n):
            start = int(rng.integers(0, len(self.test_ids) - 16))
            prompt = self.test_ids[start:start + 16][None]
            out = model.generate(backend.to_device(prompt, self.cfg.backend), length,
                                 temperature=o.temperature, rng=rng)
            text = self.tokenizer.decode(backend.to_numpy(out[0]))
            lines.append(f"  sample {i + 1}: {text[:16]!r} -> {text[16:]!r}")
        return lines

    def summary(self, history, model):
        lines = self.sample_lines(model)
        return "\n".join(lines + [f"test loss: {history[-1]['test_loss']:.3f} nats/char "
                                  f"(bigram baseline {self.baseline:.3f})"])


# ---------------------------------------------------------------- measures and figures
def plot_losses(history, baseline, path):
    """Train and held-out loss per epoch, with the bigram baseline as a line."""
    fig, axes = plots.figure(1, 1, (6, 3.5))
    ax = axes[0][0]
    epochs = [h["epoch"] for h in history]
    ax.plot(epochs, [h["train_loss"] for h in history], "o-", label="train")
    ax.plot(epochs, [h["test_loss"] for h in history], "s-", label="held out")
    if baseline is not None:
        ax.axhline(baseline, color="k", ls="--", lw=1, label="bigram baseline")
    ax.set(xlabel="epoch", ylabel="nats / character", title="loss")
    ax.grid(alpha=0.3)
    ax.legend()
    return plots.save(fig, path)


def top_atom_contexts(model, windows, tokenizer, atoms=6, per_atom=5, left=12, layer=-1,
                      right=0):
    """For the most selective atoms of ``layer``: the contexts where each fires most.

    Atoms active on 1% to 30% of tokens are ranked by their largest code;
    for each, the ``per_atom`` strongest positions are returned with up to
    ``left`` characters before and ``right`` after (a model that sees both
    sides, the masked LM, needs both). Returns a list of (atom, fraction
    active, [(left, char, right, value), ...]).
    """
    model.eval()
    model.forward(backend.to_device(windows, model.backend), capture=True)
    codes = backend.to_numpy(model.captured["code"][layer])          # (n, T, m)
    model.captured = None
    # the first positions of a window have (almost) no past: a different regime
    codes = codes[:, 4:]
    skip = 4
    active = (codes > 0).mean(axis=(0, 1))                            # (m,)
    peak = codes.max(axis=(0, 1))
    chosen = np.nonzero((active > 0.01) & (active < 0.3))[0]
    if len(chosen) < atoms:
        chosen = np.argsort(active)[::-1]
    chosen = chosen[np.argsort(peak[chosen])[::-1][:atoms]]
    result = []
    for atom in chosen:
        flat = codes[..., atom].reshape(-1)
        best = np.argsort(flat)[::-1][:per_atom]
        hits = []
        for i in best:
            row, col = divmod(int(i), codes.shape[1])
            col += skip
            hits.append((tokenizer.decode(windows[row, max(0, col - left):col]),
                         tokenizer.decode(windows[row, col:col + 1]),
                         tokenizer.decode(windows[row, col + 1:col + 1 + right]),
                         float(flat[i])))
        result.append((int(atom), float(active[atom]), hits))
    return result


def plot_atoms(model, windows, tokenizer, path, atoms=6, per_atom=5, right=0,
               name="dictionary atoms"):
    """atoms.png: one panel per atom, its strongest contexts with the firing character boxed.

    Columns, named in each panel's header row: the characters before, the
    character at which the atom fires (boxed), with ``right`` > 0 the
    characters after (for a model that reads both sides), and the code's value.
    name: what the units of ``captured["code"]`` are (a standard transformer's
    are its MLP hidden units, the counterpart of CRATE's atoms).
    """
    found = top_atom_contexts(model, windows, tokenizer, atoms, per_atom, right=right)
    x_char = 0.42 if right else 0.54              # the boxed character's left edge
    x_right = x_char + 0.026                       # the characters after it
    x_value = x_right + 0.25 if right else 0.62
    rows = per_atom + 1                                   # a header row, then the contexts
    fig, axes = plots.figure(len(found), 1, (8.5 if right else 7.5,
                                             0.2 * rows * len(found) + 0.6))
    sides = "before and after" if right else "before"
    fig.suptitle(f"Last-layer {name}: where each fires most (the characters {sides} "
                 "the boxed one)", fontsize=9)
    for ax, (atom, frac, hits) in zip(axes[:, 0], found):
        ax.set_axis_off()
        unit = "atom" if name == "dictionary atoms" else "unit"
        ax.set_title(f"{unit} {atom}, active on {100 * frac:.0f}% of characters",
                     fontsize=9, loc="left")

        def row(j, *cells):
            y = 1 - (j + 0.5) / rows
            for x, text, kw in cells:
                ax.text(x, y, text, va="center", transform=ax.transAxes, **kw)
        head = dict(fontsize=7, color="0.45", style="italic")
        row(0, (x_char - 0.02, "before", dict(ha="right", **head)),
            (x_char + 0.007, "char", dict(ha="center", **head)),
            *([(x_right, "after", dict(ha="left", **head))] if right else []),
            (x_value, "code", dict(ha="left", **head)))
        for j, (left, char, after, value) in enumerate(hits, start=1):
            row(j, (x_char - 0.005, repr(left)[1:-1],
                    dict(ha="right", family="monospace", fontsize=8, color="0.35")),
                (x_char, repr(char)[1:-1] or " ",
                 dict(ha="left", family="monospace", fontsize=9, weight="bold",
                      bbox=dict(boxstyle="round,pad=0.15", fc="gold", ec="none"))),
                *([(x_right, repr(after)[1:-1],
                    dict(ha="left", family="monospace", fontsize=8, color="0.35"))]
                  if right else []),
                (x_value, f"{value:.3f}", dict(ha="left", fontsize=8)))
    return plots.save(fig, path)


TASK = LanguageModel
