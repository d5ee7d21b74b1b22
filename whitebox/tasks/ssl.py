"""Self-supervised CRATE or ViT: SimDINO's coding-rate loss or DINO's, features judged by k-NN.

``python -m whitebox.train --task ssl [--ssl-loss simdino|dino] [--model crate|vit]``
trains a CRATE backbone (or timm's ViT at the same --dim, --depth and
--heads, each head dim // heads wide) and a projection head without labels on scikit-learn's
8 x 8 digits (bundled). Each step draws 2 global crops (8 x 8) and
``n_local`` local ones (4 x 4, 4 patches instead of 16, the position table
resampled) of every image; the student sees all crops, the teacher (an
exponential moving average of the student, DINO's cosine momentum) only
the global ones, and the loss is SimDINO's (``whitebox.losses.simdino_loss``)
or DINO's (``whitebox.losses.DINOLoss``).

After each epoch the teacher's class-token features (the backbone's last
LayerNorm of the class token: CRATE's ``mlp_head.0``, the ViT's ``norm``) of the held-out digits are classified by a
weighted k-NN (k = 20, cosine, temperature 0.07, DINO's evaluation) against
those of the training digits. The job ends with
``test k-NN accuracy: X% (raw pixels Y%, untrained network Z%)``: the same
k-NN on the raw pixels and on the features of the network as initialised.

The default run (SimDINO, eps 0.2, 30 epochs of 23 steps, about 2 minutes on
one core) reaches 79.8% and 77.8% held out with seeds 0 and 1, against 75.1%
and 74.4% for the untrained network and 99.0% and 97.6% for raw pixels: the
features improve on the network's initial ones, far from the pixels' own
neighbourhoods on these easy digits. The same run with ``--model vit``
(seed 0, about 80 s on one core) learns much less: 30.3% held out against
22.6% for its untrained network and 99.0% for raw pixels; a smaller step
helps (``--lr 5e-4`` 41.4%, ``--lr 2e-4`` 45.5%), a larger eps (0.5: 36.4%)
or a heavier compression term (``--coeff 3``: 38.0%, both at lr 2e-4) does not.
The ViT with ``--ssl-loss dino`` (its default, below; seed 0, about 3
minutes on a loaded core) reaches 63.0% against the same 22.6%.

DINO's head here carries batch normalisation after its two hidden Linears
(``--head-bn``, DINO's ``use_bn_in_head``; on by default with
``--ssl-loss dino``, off with simdino). The default DINO run (30 epochs, 256
prototypes, teacher temperature 0.04, about 80 s on one loaded core) reaches
87.5% and 87.9% held out with seeds 0 and 1, against 75.1% and 74.4% for the
untrained network and 99.0% and 97.6% for raw pixels.

Without it (``--head-bn off``, the head of DINO's ViT runs) DINO collapses at
this scale, and not because of a defect: six whole float64 training steps
(crops, backbone and head, loss, centre, AdamW, the EMA teacher, the
temperature warm-up) agree with a PyTorch twin to round-off
(tests/test_ssl_dino_twin.py), and one step matches central differences
(tests/test_ssl_parts.py). What we measured: an untrained CRATE's class-token
features of different digits have mean cosine 0.997 (the class token and its
position, drawn at unit scale, dominate the attention's small per-image
part), the head passes them on (bottleneck cosine 0.997 at init, 0.999 and
more from the first epoch on), and the teacher's centred, sharpened
distributions go to uniform: entropy log K for each image and for their
mean, loss log 256 = 5.545, k-NN 72.7% after the 30-epoch default (seed 0).
Every setting tried (10-epoch runs, seed 0) ends there: lr 1e-4 to 2e-3;
teacher temperature 0.004 to 0.04; out_dim 64 to 4096; teacher momentum 0.9
to 0.999; batch 128 and 256; no local crops, 8 local crops, weaker
augmentation; the class token and position table at DINO's 0.02 scale; no
weight decay; a wider head; the last layer frozen in the first epoch; the
global gradient norm clipped at 3. Raising the centre's momentum from 0.9 to
0.99 gives the other collapse instead (loss near 0, one prototype for every
image). The batch norm subtracts what the batch's rows share before the GELU
(the same untrained head's bottleneck cosine: 0.21), and the run learns: at
the end of the default run (seed 0) the teacher's distribution for one image
has 0.72 of the uniform entropy and their mean 0.94, and the bottleneck
cosine is 0.68. SimDINO's coding rate pushes the features apart itself.
In the steps the teacher runs in training mode (the loop trains the whole
:class:`SSLModel`), so its head's batch norm uses the batch's statistics, as
DINO's teacher does; it keeps its own running statistics (the EMA moves
parameters only).

The teacher, DINO's centre and the count of EMA updates are frozen
parameters of the run's model (:class:`SSLModel`), so checkpoints hold
them; the teacher update for an optimizer step is applied at the start of
the next step or before an evaluation, so a resumed run takes the same
steps. The losses couple the whole batch (the coding rate of the batch),
so a step is never split into shards.
"""
import dataclasses
import os

import numpy as np

from .. import backend, plots
from ..data.loader import normalize
from ..data.multicrop import MultiCrop
from ..knn import knn_accuracy
from ..losses import DINOLoss, simdino_loss
from ..models import CRATE, ViT
from ..models.class_token_features import CRATEFeatures, ViTFeatures
from ..nn import DINOHead, Module, SimDINOHead
from ..ssl import MultiCropNetwork, cosine_momentum, ema_teacher, ema_update
from ..settings import COUNT, POSITIVE, POSITIVE_INT, PROBABILITY, Check, setting
from .base import Task
from .images import DATASETS, NUM_CLASSES, OPTIONAL_COUNT, ImageData, load_split

LOSSES = ("simdino", "dino")


@dataclasses.dataclass
class SSLOptions(ImageData):
    dataset: str = setting("digits", "images (digits ships with scikit-learn)",
                           Check(str, choices=DATASETS))
    patch: int = setting(2, "patch size", POSITIVE_INT)
    ssl_loss: str = setting("simdino", "SimDINO's coding-rate loss or DINO's",
                            Check(str, choices=LOSSES))
    dim: int = setting(64, "token width d", POSITIVE_INT)
    depth: int = setting(2, "number of layers (CRATE's or the ViT's blocks)",
                       POSITIVE_INT)
    heads: int = setting(2, "attention heads K", POSITIVE_INT)
    dim_head: int = setting(32, "width p of each head's subspace (CRATE; the ViT's heads "
                          "are dim // heads wide)", POSITIVE_INT)
    hidden_dim: int = setting(256, "hidden width of the head's MLP", POSITIVE_INT)
    bottleneck_dim: int = setting(64, "the head's L2-normalised output (SimDINO's features)",
                                  POSITIVE_INT)
    out_dim: int = setting(256, "DINO's prototypes (--ssl-loss dino)", POSITIVE_INT)
    head_bn: str = setting(None, "batch normalisation after the head's hidden Linears (DINO's "
                           "use_bn_in_head): on or off (default: on with --ssl-loss dino, off "
                           "with simdino)", Check(str, choices=("on", "off"), optional=True))
    n_local: int = setting(4, "local crops per image", COUNT)
    local_size: int = setting(None, "side of the local crops in pixels (default: half the "
                              "image, a multiple of the patch)", OPTIONAL_COUNT)
    global_scale_min: float = setting(0.5, "global crops cover a fraction U(this, 1) of the "
                                      "image", Check(float, low=0.01, high=1))
    local_scale_min: float = setting(0.2, "local crops cover a fraction U(this, "
                                     "--local-scale-max) of the image",
                                     Check(float, low=0.01, high=1))
    local_scale_max: float = setting(0.5, "largest fraction of the image a local crop covers",
                                     Check(float, low=0.01, high=1))
    flip: bool = setting(False, "left-right flips (off: a mirrored digit is another shape)",
                         Check(bool))
    eps: float = setting(0.2, "SimDINO's eps (epsilon^2 of the coding rate)", POSITIVE)
    coeff: float = setting(1.0, "SimDINO's weight of the compression term",
                           Check(float, low=0))
    teacher_temp: float = setting(0.04, "DINO's teacher temperature", POSITIVE)
    warmup_teacher_temp: float = setting(0.04, "DINO's first teacher temperature", POSITIVE)
    warmup_teacher_temp_epochs: int = setting(0, "DINO's temperature warm-up epochs", COUNT)
    momentum_teacher: float = setting(0.99, "first EMA momentum of the teacher (cosine to 1)",
                                      PROBABILITY)
    knn_k: int = setting(20, "neighbours of the k-NN evaluation", POSITIVE_INT)
    knn_temperature: float = setting(0.07, "temperature of the k-NN votes", POSITIVE)


class SSLModel(Module):
    """The run's model: ``student`` (trained), ``teacher`` (its frozen EMA twin) and frozen
    state: DINO's ``center`` (1, out_dim) and ``ema_steps`` [optimizer steps, EMA updates]."""

    def __init__(self, student, center_dim):
        super().__init__(student.dtype)
        self.student = student
        self.teacher = ema_teacher(student)
        self.add_param("center", np.zeros((1, center_dim)), trainable=False)
        self.add_param("ema_steps", np.zeros(2), trainable=False)

    @property
    def ATTENTION(self):
        """The backbone's word for its attention in the run's header (the ViT's), or None."""
        return getattr(self.student.backbone.model, "ATTENTION", None)


class SSL(Task):
    name = "ssl"
    Options = SSLOptions
    models = ("crate", "vit")
    runtime_options = ("data",)
    description = "self-supervised CRATE or ViT (SimDINO or DINO), judged by k-NN"
    introduced = {"head_bn": "off"}   # runs saved before --head-bn had heads without it
    defaults = dict(epochs=30, batch_size=64, lr=2e-3, weight_decay=0.04, warmup_epochs=2.0)
    fast = dict(n_train=384, n_test=128, epochs=2, batch_size=64, dim=32, depth=1,
                dim_head=16, hidden_dim=64, bottleneck_dim=32, out_dim=64, n_local=2)

    @classmethod
    def resolve(cls, options):
        if options.head_bn is None:
            options.head_bn = "on" if options.ssl_loss == "dino" else "off"
        return options

    @classmethod
    def default_out(cls, options):
        return f"runs/ssl-{options.ssl_loss}"

    # ------------------------------------------------ data and model
    def setup(self, rng):
        o = self.opt
        (train_images, train_labels), (test_images, test_labels), (mean, std) = \
            load_split(o, self.cfg.seed)
        H, W = train_images.shape[2:]
        local = o.local_size or max(o.patch, (H // 2) // o.patch * o.patch)
        if local % o.patch or local > min(H, W):
            raise ValueError(f"local_size must be a multiple of the patch ({o.patch}) and at "
                             f"most the image side ({min(H, W)}), got {local}")
        if H != W:
            raise ValueError(f"the crops are square: images must be square, got {H}x{W}")
        if self.cfg.batch_size > len(train_labels):
            raise ValueError(f"batch_size {self.cfg.batch_size} exceeds the {len(train_labels)} "
                             "training images (every step takes a full batch)")
        self.rng = rng
        if o.local_scale_min > o.local_scale_max:
            raise ValueError(f"local_scale_min ({o.local_scale_min}) must not exceed "
                             f"local_scale_max ({o.local_scale_max})")
        self.crops = MultiCrop(H, local, o.n_local, global_scale=(o.global_scale_min, 1.0),
                               local_scale=(o.local_scale_min, o.local_scale_max), flip=o.flip)
        self.train_images, self.mean, self.std = train_images, mean, std
        self.image_shape = train_images.shape[1:]
        dev = self.cfg.backend
        self.bank = backend.to_device(normalize(train_images, mean, std), dev)
        self.queries = backend.to_device(normalize(test_images, mean, std), dev)
        self.train_labels = backend.to_device(train_labels, dev)
        self.test_labels = backend.to_device(test_labels, dev)
        self.steps = len(train_labels) // self.cfg.batch_size
        self.momentum = cosine_momentum(o.momentum_teacher, self.cfg.epochs, self.steps)
        if o.ssl_loss == "dino":
            self.crit = DINOLoss(o.out_dim, self.crops.n_crops, o.warmup_teacher_temp,
                                 o.teacher_temp, min(o.warmup_teacher_temp_epochs,
                                                     self.cfg.epochs), self.cfg.epochs)
        self.references = None

    def steps_per_epoch(self):
        return self.steps

    def describe(self):
        return (f"{self.opt.dataset}: {len(self.bank)} train, {len(self.queries)} held out | "
                f"{self.opt.ssl_loss}, 2 global + {self.opt.n_local} local crops")

    def _student(self):
        o, (C, H, W) = self.opt, self.image_shape
        if self.cfg.model == "vit":
            if o.dim % o.heads:
                raise ValueError(f"--dim ({o.dim}) must be divisible by --heads ({o.heads}) "
                                 "with --model vit (each head is dim // heads wide)")
            default = SSLOptions.__dataclass_fields__["dim_head"].default
            if o.dim_head not in (default, o.dim // o.heads):    # --fast sets dim // heads
                raise ValueError(f"--dim-head is CRATE's head width; the ViT's heads are "
                                 f"dim // heads = {o.dim // o.heads} wide: leave it at "
                                 f"{default} or give {o.dim // o.heads}, got {o.dim_head}")
            backbone = ViTFeatures(ViT(image_size=(H, W), patch_size=o.patch,
                                       num_classes=NUM_CLASSES, dim=o.dim, depth=o.depth,
                                       heads=o.heads, channels=C, dtype="float32",
                                       seed=self.cfg.seed))
        else:
            backbone = CRATEFeatures(CRATE(image_size=(H, W), patch_size=o.patch,
                                           num_classes=NUM_CLASSES, dim=o.dim, depth=o.depth,
                                           heads=o.heads, dim_head=o.dim_head, channels=C,
                                           dtype="float32", seed=self.cfg.seed))
        shared = dict(seed=self.cfg.seed + 1, use_bn=o.head_bn == "on")
        if o.ssl_loss == "dino":
            head = DINOHead(o.dim, o.out_dim, o.hidden_dim, o.bottleneck_dim, **shared)
        else:
            head = SimDINOHead(o.dim, o.hidden_dim, o.bottleneck_dim, **shared)
        return MultiCropNetwork(backbone, head)

    def build_model(self):
        return SSLModel(self._student(), self.opt.out_dim if self.opt.ssl_loss == "dino" else 1)

    def step_splits(self, model):
        return False      # the loss couples the batch: one step is never split into shards

    # ------------------------------------------------ one epoch
    def batches(self):
        order = self.rng.permutation(len(self.train_images))
        dev, B = self.cfg.backend, self.cfg.batch_size
        for s in range(self.steps):
            images = self.train_images[order[s * B:(s + 1) * B]]
            views = self.crops(images, self.rng)
            yield [backend.to_device(normalize(v, self.mean, self.std), dev) for v in views]

    def _sync_teacher(self, model):
        """Apply the EMA updates owed for the optimizer steps taken so far."""
        count = model.param("ema_steps")
        while int(count[1]) < int(count[0]):
            ema_update(model.teacher, model.student, float(self.momentum[int(count[1])]))
            count[1] += 1

    def train_step(self, model, batch):
        self._sync_teacher(model)
        o, n = self.opt, batch[0].shape[0]
        student = model.student(batch)
        teacher = model.teacher(batch[:2])
        if o.ssl_loss == "simdino":
            loss, dout, terms = simdino_loss(student, teacher, len(batch), o.eps, o.coeff,
                                             terms=True)
            sums = {"compression": terms["compression"] * n,
                    "expansion": terms["expansion"] * n}
        else:
            epoch = int(model.param("ema_steps")[0]) // self.steps
            self.crit.center = model.param("center").copy()
            loss, dout = self.crit(student, teacher, epoch)
            model.param("center")[...] = self.crit.center
            sums = {}
        model.student.backward(dout)
        model.param("ema_steps")[0] += 1
        return loss, {"loss": loss * n, **sums, "count": n}

    def _features(self, backbone, images, chunk=512):
        xp = backend.xp_of(self.cfg.backend)
        return xp.concatenate([backbone(images[i:i + chunk])
                               for i in range(0, len(images), chunk)])

    def _knn(self, bank, queries):
        o = self.opt
        return knn_accuracy(bank, self.train_labels, queries, self.test_labels, o.knn_k,
                            o.knn_temperature, NUM_CLASSES)

    def evaluate(self, model):
        """k-NN accuracy of the teacher's and the student's features on the held-out images."""
        self._sync_teacher(model)
        model.eval()
        if self.references is None:
            flat = lambda x: x.reshape(len(x), -1)
            untrained = self._student().to(self.cfg.backend).eval().backbone
            self.references = dict(
                knn_raw=self._knn(flat(self.bank), flat(self.queries)),
                knn_untrained=self._knn(self._features(untrained, self.bank),
                                        self._features(untrained, self.queries)))
        out = {}
        for name, net in (("knn", model.teacher), ("knn_student", model.student)):
            out[name] = self._knn(self._features(net.backbone, self.bank),
                                  self._features(net.backbone, self.queries))
        return {**out, **self.references}

    def epoch_line(self, record):
        terms = (f" (compression {record['train_compression']:.4f}, expansion "
                 f"{record['train_expansion']:.4f})" if "train_expansion" in record else "")
        return (f"epoch {record['epoch']:3d} | train loss {record['train_loss']:.4f}{terms} | "
                f"test k-NN {100 * record['knn']:5.1f}% "
                f"(student {100 * record['knn_student']:5.1f}%)")

    def figures(self, model, history, out, count=6):
        """ssl_curves.png: the loss (and SimDINO's two terms) and k-NN accuracy by epoch;
        ssl_attention.png: the teacher's class-token attention (first and last layer) on
        held-out digits; ssl_pca.png: the held-out teacher features on their first two
        principal axes, coloured by the label they were never trained with."""
        self._curves(history, out)
        model.eval()
        backbone = model.teacher.backbone
        feats = backend.to_numpy(self._features(backbone, self.queries))     # (q, d)
        labels = backend.to_numpy(self.test_labels)
        centred = feats - feats.mean(axis=0)
        _, _, Vt = np.linalg.svd(centred, full_matrices=False)
        xy = centred @ Vt[:2].T                                               # (q, 2)
        fig, axes = plots.figure(1, 1, (5, 4.5))
        ax = axes[0][0]
        points = ax.scatter(xy[:, 0], xy[:, 1], c=labels, cmap="tab10", s=8)
        fig.colorbar(points, ax=ax, label="digit")
        ax.set(xlabel="PC 1", ylabel="PC 2", title="held-out teacher features (PCA)")
        plots.save(fig, os.path.join(out, "ssl_pca.png"))
        backbone(self.queries[:count])
        maps = backbone.attention_maps()
        layers = sorted({0, len(maps) - 1})
        shown = self.queries[:count] * backend.to_device(self.std.reshape(1, -1, 1, 1),
                                                          self.cfg.backend)
        shown = (shown + backend.to_device(self.mean.reshape(1, -1, 1, 1), self.cfg.backend)
                 ).clip(0, 1)                                                 # back to [0, 1]
        H, W = self.image_shape[1:]
        plots.plot_attention(shown, {l: maps[l] for l in layers},
                             (H // self.opt.patch, W // self.opt.patch),
                             os.path.join(out, "ssl_attention.png"), labels=labels[:count])

    def _curves(self, history, out):
        epochs = [h["epoch"] for h in history]
        fig, axes = plots.figure(1, 2, (9, 3.5))
        ax_loss, ax_knn = axes[0]
        for key, label in (("train_loss", "loss"), ("train_compression", "compression"),
                           ("train_expansion", "expansion")):
            if key in history[0]:
                ax_loss.plot(epochs, [h[key] for h in history], "o-", label=label)
        ax_loss.set(xlabel="epoch", title=f"{self.opt.ssl_loss} loss")
        ax_knn.plot(epochs, [100 * h["knn"] for h in history], "o-", label="teacher")
        ax_knn.plot(epochs, [100 * h["knn_student"] for h in history], "s-", label="student")
        for key, label in (("knn_raw", "raw pixels"), ("knn_untrained", "untrained")):
            ax_knn.axhline(100 * history[-1][key], ls="--", color="gray" if key == "knn_raw"
                           else "black", label=label)
        ax_knn.set(xlabel="epoch", ylabel="k-NN accuracy (%)", title="held-out k-NN")
        from matplotlib.ticker import MaxNLocator
        for ax in (ax_loss, ax_knn):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))   # epochs are whole numbers
            ax.grid(alpha=0.3)
            ax.legend()
        plots.save(fig, os.path.join(out, "ssl_curves.png"))

    def summary(self, history, model):
        h = history[-1]
        return (f"test k-NN accuracy: {100 * h['knn']:.1f}% (raw pixels {100 * h['knn_raw']:.1f}%,"
                f" untrained network {100 * h['knn_untrained']:.1f}%)")


TASK = SSL
