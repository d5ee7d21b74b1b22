"""Projection heads of self-supervised training: DINO's and SimDINO's.

    DINOHead:     x -> MLP -> l2_normalize -> WeightNormLinear (prototypes, out_dim)
    SimDINOHead:  x -> MLP -> l2_normalize

MLP: Linear(in, hidden) - GELU - Linear(hidden, hidden) - GELU - Linear(hidden,
bottleneck), weights truncated-normal (std 0.02, cut at +-2) and biases zero,
as DINO initialises them. The prototype layer is a bias-free Linear whose
weight is g * v / ||v|| row by row; with ``norm_last_layer=True`` the gain g is
fixed to ones (frozen), so each prototype is a unit vector and the logits are
cosines. Parameter names are DINO's (``mlp.0.weight``, ``last_layer.weight_g``,
``last_layer.weight_v``), so its checkpoints' head keys load as they are.
"""
import math

import numpy as np

from .. import functional as F
from ..functional._checks import check_positive_int
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


def _mlp(in_dim, hidden_dim, bottleneck_dim, dtype, rng):
    layers = [Linear(in_dim, hidden_dim, dtype=dtype), GELU(dtype=dtype),
              Linear(hidden_dim, hidden_dim, dtype=dtype), GELU(dtype=dtype),
              Linear(hidden_dim, bottleneck_dim, dtype=dtype)]
    for layer in layers[::2]:
        layer.load_state_dict({"weight": trunc_normal(rng, layer.param("weight").shape),
                               "bias": np.zeros(layer.out_features)})
    return Sequential(*layers, dtype=dtype)


class SimDINOHead(Module):
    """x (..., in_dim) -> MLP -> L2 normalisation -> (..., bottleneck_dim), unit rows."""

    def __init__(self, in_dim, hidden_dim=2048, bottleneck_dim=256, dtype="float32", seed=0):
        super().__init__(dtype)
        for name, v in (("in_dim", in_dim), ("hidden_dim", hidden_dim),
                        ("bottleneck_dim", bottleneck_dim)):
            check_positive_int(name, v)
        self.mlp = _mlp(in_dim, hidden_dim, bottleneck_dim, dtype, _rng(seed))
        self.norm = L2Normalize(dtype=dtype)

    def forward(self, x):
        return self.norm(self.mlp(x))

    def backward(self, dout):
        return self.mlp.backward(self.norm.backward(dout))


class DINOHead(SimDINOHead):
    """x (..., in_dim) -> MLP -> L2 normalisation -> prototypes -> (..., out_dim) logits."""

    def __init__(self, in_dim, out_dim, hidden_dim=2048, bottleneck_dim=256,
                 norm_last_layer=True, dtype="float32", seed=0):
        rng = _rng(seed)
        super().__init__(in_dim, hidden_dim, bottleneck_dim, dtype, rng)
        self.last_layer = WeightNormLinear(bottleneck_dim, out_dim, norm_last_layer, dtype, rng)

    def forward(self, x):
        return self.last_layer(super().forward(x))

    def backward(self, dout):
        return super().backward(self.last_layer.backward(dout))
