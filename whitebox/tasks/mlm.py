"""Masked language modelling with CRATE: ``python -m whitebox.train --task mlm``.

The same data, model sizes and flags as ``--task lm`` (see whitebox/tasks/lm.py),
with CRATEBERT: bidirectional MSSA, and BERT's objective (``--model bert``:
Hugging Face's BertForMaskedLM at the same sizes). In every training
window 15% of the positions are chosen; of those 80% become the mask token
``<mask>`` (an extra entry of the character vocabulary, its last id), 10% a
random character, 10% stay; the loss is the cross-entropy at the chosen
positions only. The masking draws from its own generator, saved in the
checkpoint, so a resumed run masks exactly as an uninterrupted one.

Held out: a fixed masking of the held-out windows (the same every epoch)
gives the masked accuracy and loss; the baseline always guesses the most
frequent training character at the chosen positions. The run ends with
``test masked accuracy: XX.X% (unigram baseline YY.Y%)``.

No official masked CRATE language model exists; this one is the causal
model's trunk without the causal mask, trained as BERT was.
"""
import os

import numpy as np

from .. import backend
from ..data.masking import mask_tokens
from ..functional.token_cross_entropy import (token_cross_entropy_backward,
                                              token_cross_entropy_forward)
from ..models import BERT, CRATEBERT
from ..rate import layer_measures
from .lm import LanguageModel, plot_atoms

MASK = "<mask>"
MASK_PROB = 0.15


class MaskedLanguageModel(LanguageModel):
    name = "mlm"
    description = "masked (BERT-style) character language model"
    specials = (MASK,)
    models = ("crate", "bert")
    standard = "bert"

    def setup(self, rng):
        super().setup(rng)
        self.mask_id = self.tokenizer.token_id(MASK)
        V = self.tokenizer.vocab_size
        # its own generator, checkpointed with the others: resume masks exactly the same
        self.mask_rng = np.random.default_rng([self.cfg.seed, 1])
        # a fixed masking of the held-out windows, the same every epoch
        self.test_inputs, self.test_targets = mask_tokens(self.x_test, self.mask_id, V,
                                                          np.random.default_rng([self.cfg.seed, 2]),
                                                          MASK_PROB)
        chosen = self.test_targets != -1
        top = np.bincount(self.train_ids, minlength=V).argmax()
        self.baseline = float((self.test_targets[chosen] == top).mean())
        self.baseline_char = self.tokenizer.decode([top])

    def generators(self):
        return {"mask": self.mask_rng}

    def build_model(self):
        if self.opt.dim % self.opt.heads:
            raise ValueError(f"--dim ({self.opt.dim}) must be divisible by --heads "
                             f"({self.opt.heads})")
        if self.cfg.model == "bert":
            return BERT(**self.standard_kwargs(), mask_id=self.mask_id,   # Hugging Face's
                        pad_token_id=None)      # characters: no padding row
        return CRATEBERT(**self.model_kwargs(), mask_id=self.mask_id)

    def batches(self):
        """Windows masked on the host (BERT's rule), then moved: one transfer each way, none back."""
        where = self.cfg.backend
        for x, _ in self.host_batches():
            inputs, targets = mask_tokens(x, self.mask_id, self.tokenizer.vocab_size,
                                          self.mask_rng, MASK_PROB)
            yield backend.to_device(inputs, where), backend.to_device(targets, where)

    def train_step(self, model, batch):
        inputs, targets = batch
        logits = model(inputs)
        loss, cache = token_cross_entropy_forward(logits, targets)
        model.backward(token_cross_entropy_backward(loss.dtype.type(1.0), cache))
        chosen = targets != -1
        correct = ((logits.argmax(axis=-1) == targets) & chosen).sum()
        n = chosen.sum()
        return loss, {"loss": loss * n, "acc": correct, "count": n}

    def evaluate(self, model):
        """Masked loss and accuracy on the fixed held-out masking, and the per-layer measures
        (split over processes: as the causal model's, lm.py)."""
        model.eval()
        where = self.cfg.backend
        sums = dict(loss=0.0, correct=0.0, count=0.0)
        for i in self.evaluation_share(range(0, len(self.test_inputs), 64)):
            x = backend.to_device(self.test_inputs[i:i + 64], where)
            y = backend.to_device(self.test_targets[i:i + 64], where)
            logits = model(x)
            chosen = y != -1
            n = float(chosen.sum())
            sums["loss"] += float(token_cross_entropy_forward(logits, y)[0]) * n
            sums["correct"] += float(((logits.argmax(axis=-1) == y) & chosen).sum())
            sums["count"] += n
        sums = self.add_parts(sums)
        record = dict(test_loss=sums["loss"] / sums["count"],
                      test_acc=sums["correct"] / sums["count"])
        if self.writes:
            record["rc"], record["nonzero"] = layer_measures(model, self.probe)
        return record

    def epoch_line(self, record):
        return (f"epoch {record['epoch']:3d} | train loss {record['train_loss']:.4f} acc "
                f"{100 * record['train_acc']:5.1f}% | test loss {record['test_loss']:.4f} "
                f"masked acc {100 * record['test_acc']:5.1f}%")

    def figures(self, model, history, out):
        plot_mlm_curves(history, self.baseline, os.path.join(out, "curves.png"))
        from .. import plots
        plots.plot_layer_measures(history, os.path.join(out, "layers.png"), **self.layer_titles())
        # the model reads both sides of a position: show the contexts after it too
        plot_atoms(model, self.probe_windows(), self.tokenizer, os.path.join(out, "atoms.png"),
                   right=12, name=self.atoms_name())

    def fill_in_lines(self, model, n=None):
        """Held-out windows with their masks filled in by ``model``'s top guess."""
        n = self.opt.samples if n is None else n
        x = self.test_inputs[:n]
        logits = backend.to_numpy(model.eval()(backend.to_device(x, self.cfg.backend)))
        lines = []
        for i in range(len(x)):
            chosen = self.test_targets[i] != -1
            guess = np.where(chosen, logits[i].argmax(-1), x[i])
            shown = "".join("_" if c else ch for c, ch in
                            zip(chosen, self.tokenizer.decode(self.x_test[i])))
            lines.append(f"  masked:  {shown!r}\n  filled:  "
                         f"{self.tokenizer.decode(guess)!r}")
        return lines

    def summary(self, history, model):
        lines = self.fill_in_lines(model)
        return "\n".join(lines + [
            f"test masked accuracy: {100 * history[-1]['test_acc']:.1f}% (unigram baseline "
            f"{100 * self.baseline:.1f}%)"])


def plot_mlm_curves(history, baseline, path):
    """Loss, and masked accuracy against the unigram baseline (guess the commonest character)."""
    from .. import plots
    fig, axes = plots.figure(1, 2, (10, 3.6))
    ax_loss, ax_acc = axes[0]
    epochs = [h["epoch"] for h in history]
    ax_loss.plot(epochs, [h["train_loss"] for h in history], "o-", label="train")
    ax_loss.plot(epochs, [h["test_loss"] for h in history], "s-", label="held out")
    ax_loss.set(xlabel="epoch", ylabel="nats / masked character", title="loss")
    ax_acc.plot(epochs, [100 * h["train_acc"] for h in history], "o-", label="train")
    ax_acc.plot(epochs, [100 * h["test_acc"] for h in history], "s-", label="held out")
    if baseline is not None:
        ax_acc.axhline(100 * baseline, color="k", ls="--", lw=1, label="unigram baseline")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)",
               title="masked accuracy (the chosen positions only)")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
    ax_loss.legend(fontsize=8)
    plots.legend_beside(ax_acc)
    return plots.save(fig, path)


TASK = MaskedLanguageModel
