"""Self-supervised training's parts: the multi-crop network and the teacher.

``MultiCropNetwork(backbone, head)`` runs a backbone on every crop of a batch
and one head on all the features (DINO's MultiCropWrapper): views of one
resolution are run together, each resolution group on its own twin of the
backbone (``Module.replica``: the same parameter arrays, its own caches and
gradients), and backward adds every twin's gradients into the backbone's.

``ema_teacher(student)`` is a twin of the student that owns its parameters
(copies), frozen; ``ema_update(teacher, student, m)`` moves it to
m teacher + (1 - m) student (a batch norm's running statistics excepted: the
teacher keeps its own, as DINO's teacher does); ``cosine_momentum`` is DINO's schedule of m,
from 0.996 to 1 over the run.
"""
import math

import numpy as np

from .backend import get_array_module
from .functional._checks import check_positive_int, check_real
from .nn import Module


class MultiCropNetwork(Module):
    """out = head(concat_v backbone(views[v])): (sum_v B, out_dim), crop-major.

    Inputs of forward: a list of views, each (B, C, H_v, W_v), with equal B.
    Returns: head outputs (len(views) B, out_dim), rows of view v at [v B, (v + 1) B).
    backward(dout) accumulates the gradients of backbone and head; returns None.
    """

    def __init__(self, backbone, head):
        super().__init__(backbone.dtype)
        self.backbone = backbone
        self.head = head
        self._twins = {}          # resolution -> replica of the backbone, made on first use

    def _runner(self, i):
        if i == 0:
            return self.backbone
        if i not in self._twins:
            self._twins[i] = self.backbone.replica()
        twin = self._twins[i]
        twin.train(self.backbone.training)
        return twin

    def forward(self, views):
        if not isinstance(views, (list, tuple)) or not views:
            raise ValueError("views must be a non-empty list of image batches")
        xp = get_array_module(views[0])
        groups = []                     # consecutive views of one shape run together
        for v in views:
            if v.shape[0] != views[0].shape[0]:
                raise ValueError(f"every view must hold the same batch, got "
                                 f"{[tuple(u.shape) for u in views]}")
            if groups and groups[-1][0] == v.shape[1:]:
                groups[-1][1].append(v)
            else:
                groups.append((v.shape[1:], [v]))
        features, sizes = [], []
        for i, (_, batch) in enumerate(groups):
            features.append(self._runner(i)(xp.concatenate(batch, axis=0)))
            sizes.append(features[-1].shape[0])
        out = self.head(xp.concatenate(features, axis=0))
        self._cache = sizes
        return out

    def backward(self, dout):
        sizes = self._take_cache()
        dfeat = self.head.backward(dout)
        start = 0
        mine = self.backbone.grads()
        for i, n in enumerate(sizes):
            runner = self._runner(i)
            runner.backward(dfeat[start:start + n])
            start += n
            if runner is not self.backbone:
                for name, g in runner.grads().items():
                    mine[name] += g
                runner.zero_grad()
        return None


def ema_teacher(student):
    """A frozen twin of ``student`` with its own copies of every parameter, in eval mode.

    The twin is built by ``Module.replica`` (the same classes and structure),
    then each of its modules is given its own parameter dict of copies, so an
    optimizer step on the student leaves the teacher alone until ema_update.
    """
    teacher = student.replica()
    for _, mod in teacher.named_modules():
        object.__setattr__(mod, "_params", {k: v.copy() for k, v in mod._params.items()})
        object.__setattr__(mod, "_frozen", set(mod._frozen))
        if isinstance(mod, MultiCropNetwork):
            mod._twins = {}
    teacher.freeze()
    return teacher.eval()


def ema_update(teacher, student, momentum):
    """teacher <- m teacher + (1 - m) student, every parameter (frozen ones included) but
    the statistics a module lists in its ``statistics`` attribute (BatchNorm1d's running
    mean and variance), which the teacher's own forward passes keep, as in DINO, whose
    EMA runs over parameters and not buffers."""
    m = check_real("momentum", momentum, 0.0, 1.0)
    t, s = teacher.state_dict(), student.state_dict()
    if t.keys() != s.keys():
        raise KeyError("ema_update: teacher and student have different parameters")
    skip = {f"{name}.{p}" if name else p for name, mod in teacher.named_modules()
            for p in getattr(mod, "statistics", ())}
    for name, p in t.items():
        if name not in skip:
            p *= m
            p += (1 - m) * s[name]


def cosine_momentum(base, n_epochs, steps_per_epoch, final=1.0):
    """DINO's schedule: m_i = final + (base - final) (1 + cos(pi i / n)) / 2, i < n = epochs
    times steps. Returns (n,) float64."""
    base = check_real("base", base, 0.0, 1.0)
    n = check_positive_int("n_epochs", n_epochs) * check_positive_int("steps_per_epoch",
                                                                      steps_per_epoch)
    i = np.arange(n)
    return final + 0.5 * (base - final) * (1 + np.cos(math.pi * i / n))
