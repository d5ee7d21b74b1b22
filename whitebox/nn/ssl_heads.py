"""Projection heads of self-supervised training: DINO's and SimDINO's.

    DINOHead:     x -> MLP -> l2_normalize -> WeightNormLinear (prototypes, out_dim)
    SimDINOHead:  x -> MLP -> l2_normalize

MLP: Linear(in, hidden) - GELU - Linear(hidden, hidden) - GELU - Linear(hidden,
bottleneck), weights truncated-normal (std 0.02, cut at +-2) and biases zero,
as DINO initialises them; with ``use_bn`` (DINO's ``use_bn_in_head``) a
BatchNorm1d follows each of the two hidden Linears (Linear - BN - GELU), which
takes out what every row of the batch shares before the GELU. The prototype
layer is a bias-free Linear whose weight is g * v / ||v|| row by row; with
``norm_last_layer=True`` the gain g is fixed to ones (frozen), so each
prototype is a unit vector and the logits are cosines. Parameter names are
DINO's (``mlp.0.weight``, ``last_layer.weight_g``, ``last_layer.weight_v``;
with batch norm ``mlp.1`` and ``mlp.4`` are the BatchNorm1d layers and the
Linears are ``mlp.0``, ``mlp.3``, ``mlp.6``), so its checkpoints' head keys
load as they are (``num_batches_tracked`` aside).
"""
import math

import numpy as np

from .. import functional as F
from ..functional.batch_norm import (batch_norm_backward, batch_norm_eval_backward,
                                     batch_norm_eval_forward, batch_norm_forward)
from ..functional._checks import check_positive_int, check_real
from .layers import GELU, Linear, _rng
from .module import Module, Sequential


def trunc_normal(rng, shape, std=0.02, bound=2.0):
    """N(0, std^2) cut to [-bound, bound] (absolute, as timm's trunc_normal_), by redrawing."""
    out = rng.normal(0.0, std, size=shape)
    bad = np.abs(out) > bound
    while bad.any():
        out[bad] = rng.normal(0.0, std, size=int(bad.sum()))
        bad = np.abs(out) > bound
    return out


class L2Normalize(Module):
    """y = x / max(||x||, eps) over the last axis (torch's F.normalize)."""

    def __init__(self, eps=1e-12, dtype="float32"):
        super().__init__(dtype)
        self.eps = eps

    def forward(self, x):
        out, self._cache = F.l2_normalize_forward(x, self.eps)
        return out

    def backward(self, dout):
        return F.l2_normalize_backward(dout, self._take_cache())


class BatchNorm1d(Module):
    """torch.nn.BatchNorm1d(d) on (N, d): batch statistics in training, running ones in eval.

    Training: y = (x - mean) / sqrt(var + eps) * weight + bias with the batch's mean
    and biased variance (whitebox.functional.batch_norm), and the running statistics
    move as PyTorch moves them: running_mean <- (1 - momentum) running_mean +
    momentum mean, running_var likewise with the unbiased variance var N / (N - 1).
    Eval: the same map with the running statistics. ``running_mean`` and
    ``running_var`` are frozen parameters (optimizers skip them; checkpoints hold them),
    listed in ``statistics`` (whitebox.ssl.ema_update leaves them to the teacher).
    """
    statistics = ("running_mean", "running_var")

    def __init__(self, d, eps=1e-5, momentum=0.1, dtype="float32"):
        super().__init__(dtype)
        self.d = check_positive_int("d", d)
        self.eps = check_real("eps", eps, 0.0, low_open=True)
        self.momentum = check_real("momentum", momentum, 0.0, 1.0)
        self.add_param("weight", np.ones(d))
        self.add_param("bias", np.zeros(d))
        self.add_param("running_mean", np.zeros(d), trainable=False)
        self.add_param("running_var", np.ones(d), trainable=False)

    def forward(self, x):
        p = self._params
        if not self.training:
            out, cache = batch_norm_eval_forward(x, p["weight"], p["bias"], p["running_mean"],
                                                 p["running_var"], self.eps)
            self._cache = (False, cache)
            return out
        out, cache = batch_norm_forward(x, p["weight"], p["bias"], self.eps)
        n, mu = x.shape[0], self.momentum
        p["running_mean"] *= 1 - mu
        p["running_mean"] += mu * cache["mean"]
        p["running_var"] *= 1 - mu
        p["running_var"] += (mu * n / (n - 1)) * cache["var"]
        self._cache = (True, cache)
        return out

    def backward(self, dout):
        training, cache = self._take_cache()
        dx, dg, db = (batch_norm_backward if training else batch_norm_eval_backward)(dout, cache)
        self._accumulate("weight", dg)
        self._accumulate("bias", db)
        return dx

    def extra_repr(self):
        return f"{self.d}, eps={self.eps}, momentum={self.momentum}"


class WeightNormLinear(Module):
    """y = x W^T, W = g v / ||v|| row by row (torch weight_norm, dim 0), no bias.

    v is initialised as torch.nn.Linear's weight; g = 1. ``norm_last_layer=True``
    freezes g (DINO's default), so W's rows stay unit vectors.
    """

    def __init__(self, in_features, out_features, norm_last_layer=True, dtype="float32",
                 seed=0):
        super().__init__(dtype)
        self.in_features = check_positive_int("in_features", in_features)
        self.out_features = check_positive_int("out_features", out_features)
        bound = 1.0 / math.sqrt(in_features)
        self.add_param("weight_g", np.ones((out_features, 1)), trainable=not norm_last_layer)
        self.add_param("weight_v", _rng(seed).uniform(-bound, bound,
                                                       size=(out_features, in_features)))
        self.norm_last_layer = bool(norm_last_layer)

    def forward(self, x):
        W, wn_cache = F.weight_norm_forward(self._params["weight_v"], self._params["weight_g"])
        out, lin_cache = F.linear_forward(x, W)
        self._cache = (wn_cache, lin_cache)
        return out

    def backward(self, dout):
        wn_cache, lin_cache = self._take_cache()
        dx, dW, _ = F.linear_backward(dout, lin_cache)
        dv, dg = F.weight_norm_backward(dW, wn_cache)
        self._accumulate("weight_v", dv)
        if not self.norm_last_layer:
            self._accumulate("weight_g", dg)
        return dx

    def extra_repr(self):
        return (f"{self.in_features}, {self.out_features}, "
                f"norm_last_layer={self.norm_last_layer}")


def _mlp(in_dim, hidden_dim, bottleneck_dim, dtype, rng, use_bn=False):
    linears = [Linear(in_dim, hidden_dim, dtype=dtype), Linear(hidden_dim, hidden_dim, dtype=dtype),
               Linear(hidden_dim, bottleneck_dim, dtype=dtype)]
    for layer in linears:
        layer.load_state_dict({"weight": trunc_normal(rng, layer.param("weight").shape),
                               "bias": np.zeros(layer.out_features)})
    layers = []
    for layer in linears[:2]:
        layers += [layer] + ([BatchNorm1d(hidden_dim, dtype=dtype)] if use_bn else [])
        layers.append(GELU(dtype=dtype))
    return Sequential(*layers, linears[2], dtype=dtype)


class SimDINOHead(Module):
    """x (N, in_dim) -> MLP -> L2 normalisation -> (N, bottleneck_dim), unit rows.

    ``use_bn``: batch normalisation after the MLP's two hidden Linears (then the rows
    of a training batch are no longer independent: x must be (N, in_dim), N >= 2).
    """

    def __init__(self, in_dim, hidden_dim=2048, bottleneck_dim=256, dtype="float32", seed=0,
                 use_bn=False):
        super().__init__(dtype)
        for name, v in (("in_dim", in_dim), ("hidden_dim", hidden_dim),
                        ("bottleneck_dim", bottleneck_dim)):
            check_positive_int(name, v)
        self.mlp = _mlp(in_dim, hidden_dim, bottleneck_dim, dtype, _rng(seed), bool(use_bn))
        self.norm = L2Normalize(dtype=dtype)

    def forward(self, x):
        return self.norm(self.mlp(x))

    def backward(self, dout):
        return self.mlp.backward(self.norm.backward(dout))


class DINOHead(SimDINOHead):
    """x (N, in_dim) -> MLP -> L2 normalisation -> prototypes -> (N, out_dim) logits."""

    def __init__(self, in_dim, out_dim, hidden_dim=2048, bottleneck_dim=256,
                 norm_last_layer=True, dtype="float32", seed=0, use_bn=False):
        rng = _rng(seed)
        super().__init__(in_dim, hidden_dim, bottleneck_dim, dtype, rng, use_bn)
        self.last_layer = WeightNormLinear(bottleneck_dim, out_dim, norm_last_layer, dtype, rng)

    def forward(self, x):
        return self.last_layer(super().forward(x))

    def backward(self, dout):
        return super().backward(self.last_layer.backward(dout))
