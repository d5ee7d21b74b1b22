"""Thin Module wrappers around the functional pairs.

Each holds its parameters under PyTorch's names (``weight``, ``bias``), keeps
the cache of its last forward, and ADDS into its gradients on backward.
"""
import math

import numpy as np

from .. import functional as F
from ..functional._checks import (check_dout, check_positive_int, check_probability, check_real,
                                 is_int)
from .module import Module


def _rng(seed, name="seed"):
    """A numpy Generator: ``seed`` itself, or one seeded with a non-negative integer (or None)."""
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is not None and (not is_int(seed) or seed < 0):
        raise ValueError(f"{name} must be a non-negative integer, a numpy Generator or None, "
                         f"got {seed!r}")
    return np.random.default_rng(seed)


def uniform_init(rng, shape, bound):
    """U(-bound, bound), drawn on the CPU in float64 (cast when registered)."""
    return rng.uniform(-bound, bound, size=shape)


class Linear(Module):
    """y = x W^T + b, W of shape (out_features, in_features).

    Initialised as torch.nn.Linear: W, b ~ U(-1/sqrt(in), 1/sqrt(in)).
    """

    def __init__(self, in_features, out_features, bias=True, dtype="float32", seed=0):
        super().__init__(dtype)
        self.in_features = check_positive_int("in_features", in_features)
        self.out_features = check_positive_int("out_features", out_features)
        rng = _rng(seed)
        bound = 1.0 / math.sqrt(in_features)
        self.add_param("weight", uniform_init(rng, (out_features, in_features), bound))
        self.has_bias = bool(bias)
        if bias:
            self.add_param("bias", uniform_init(rng, (out_features,), bound))

    def forward(self, x):
        out, self._cache = F.linear_forward(x, self._params["weight"],
                                            self._params.get("bias"))
        return out

    def backward(self, dout):
        dx, dW, db = F.linear_backward(dout, self._take_cache())
        self._accumulate("weight", dW)
        if self.has_bias:
            self._accumulate("bias", db)
        return dx

    def extra_repr(self):
        return f"{self.in_features}, {self.out_features}, bias={self.has_bias}"


class LayerNorm(Module):
    """torch.nn.LayerNorm(d): eps 1e-5, biased variance, weight 1 and bias 0."""

    def __init__(self, d, eps=1e-5, dtype="float32"):
        super().__init__(dtype)
        self.d = check_positive_int("normalized dimension d", d)
        self.eps = check_real("eps", eps, 0.0, low_open=True)
        self.add_param("weight", np.ones(d))
        self.add_param("bias", np.zeros(d))

    def forward(self, x):
        out, self._cache = F.layernorm_forward(x, self._params["weight"],
                                               self._params["bias"], self.eps)
        return out

    def backward(self, dout):
        dx, dg, db = F.layernorm_backward(dout, self._take_cache())
        self._accumulate("weight", dg)
        self._accumulate("bias", db)
        return dx

    def extra_repr(self):
        return f"{self.d}, eps={self.eps}"


class ReLU(Module):
    def forward(self, x):
        out, self._cache = F.relu_forward(x)
        return out

    def backward(self, dout):
        return F.relu_backward(dout, self._take_cache())


class GELU(Module):
    def __init__(self, approximate="none", dtype="float32"):
        super().__init__(dtype)
        if approximate not in ("none", "tanh"):
            raise ValueError(f"approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def forward(self, x):
        out, self._cache = F.gelu_forward(x, self.approximate)
        return out

    def backward(self, dout):
        return F.gelu_backward(dout, self._take_cache())


class Softmax(Module):
    """Softmax over the last axis."""

    def forward(self, x):
        out, self._cache = F.softmax_forward(x)
        return out

    def backward(self, dout):
        return F.softmax_backward(dout, self._take_cache())


class Dropout(Module):
    """Inverted dropout; identity in eval mode. Masks come from ``seed``'s generator."""

    def __init__(self, p=0.0, dtype="float32", seed=0):
        super().__init__(dtype)
        self.p = check_probability("dropout probability p", p)
        self.rng = _rng(seed)

    def forward(self, x):
        out, mask = F.dropout_forward(x, self.p, self.rng, self.training)
        # the shape, also a marker of an identity pass: backward-before-forward is caught
        self._cache = (x.shape, mask)
        return out

    def backward(self, dout):
        shape, mask = self._take_cache()
        check_dout("Dropout", dout, shape)
        return F.dropout_backward(dout, mask)

    def _draws(self):
        return self.p > 0

    def extra_repr(self):
        return f"p={self.p}"


class Embedding(Module):
    """Rows of a (num_embeddings, d) table, initialised N(0, 1) as PyTorch does."""

    def __init__(self, num_embeddings, d, dtype="float32", seed=0):
        super().__init__(dtype)
        self.num_embeddings = check_positive_int("num_embeddings", num_embeddings)
        self.d = check_positive_int("d", d)
        self.add_param("weight", _rng(seed).standard_normal((num_embeddings, d)))

    def forward(self, ids):
        out, self._cache = F.embedding_forward(ids, self._params["weight"])
        return out

    def backward(self, dout):
        self._accumulate("weight", F.embedding_backward(dout, self._take_cache()))
        return None  # integer ids have no gradient

    def extra_repr(self):
        return f"{self.num_embeddings}, {self.d}"


class Patchify(Module):
    """(B, C, H, W) -> (B, n, p1*p2*C), the official order (no parameters)."""

    def __init__(self, patch_size, dtype="float32"):
        super().__init__(dtype)
        self.patch_size = patch_size

    def forward(self, images):
        out, self._cache = F.patchify_forward(images, self.patch_size)
        return out

    def backward(self, dout):
        return F.patchify_backward(dout, self._take_cache())

    def extra_repr(self):
        return f"patch_size={self.patch_size}"


class ShiftedPatches(Module):
    """(B, C, H, W) -> (B, 5C, H, W): the images and four diagonal shifts of them by ``shift``
    pixels, the input of shifted patch tokens (functional.shifted_patches; no parameters)."""

    def __init__(self, shift, dtype="float32"):
        super().__init__(dtype)
        self.shift = shift

    def forward(self, images):
        out, self._cache = F.shifted_patches_forward(images, self.shift)
        return out

    def backward(self, dout):
        return F.shifted_patches_backward(dout, self._take_cache())

    def extra_repr(self):
        return f"shift={self.shift}"


class Unpatchify(Module):
    """(B, n, p1*p2*C) -> (B, C, H, W), the inverse of Patchify (no parameters)."""

    def __init__(self, image_shape, patch_size, dtype="float32"):
        super().__init__(dtype)
        self.image_shape, self.patch_size = tuple(image_shape), patch_size

    def forward(self, patches):
        out, self._cache = F.unpatchify_forward(patches, self.image_shape, self.patch_size)
        return out

    def backward(self, dout):
        return F.unpatchify_backward(dout, self._take_cache())

    def extra_repr(self):
        return f"image_shape={self.image_shape}, patch_size={self.patch_size}"


class Identity(Module):
    def forward(self, x):
        self._cache = True
        return x

    def backward(self, dout):
        self._take_cache()
        return dout
