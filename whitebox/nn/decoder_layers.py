"""The CRATE-MAE decoder layer: the encoder layer run backwards.

An encoder layer compresses (Z + MSSA(LN Z)) and then sparsifies (ISTA).
The decoder undoes the two in reverse order (official
model/crate_ae/crate_decoder.py, children named as the official state dict):

    "0"  PreNorm(Linear, no bias)    y = LN0(x) W^T           the inverse of the ISTA step
    "1"  PreNorm(DecoderMSSA)        out = y - MSSA(LN1(y))    compression run backwards

The ISTA step is (for small eta) close to a linear map by the dictionary; its
inverse is a linear map too, learned freely here (W square, kaiming-uniform as
the official ``FeedForward``). Subtracting the MSSA update instead of adding
it moves the tokens AWAY from their subspaces: expansion, the reverse of the
denoising (compression) step.
"""
import math

from .. import functional as F
from .crate_layers import MSSA, PreNorm
from .layers import Linear, _rng, uniform_init
from .module import Module

DECODER_CAPTURE_KEYS = ("y", "mssa_in", "attention", "z")


class DecoderMSSA(MSSA):
    """MSSA with the official decoder's option to drop the softmax.

    softmax=False weights the tokens by s w_k w_k^T itself (official
    ``use_softmax=False``); the backward is MSSA's, told by the cache.
    """

    def __init__(self, dim, heads=8, dim_head=64, softmax=True, dtype="float32", seed=0):
        super().__init__(dim, heads, dim_head, dtype=dtype, seed=seed)
        self.softmax = bool(softmax)

    def forward(self, x):
        W_out, b_out = self._out_params()
        y, self._cache = F.mssa_forward(x, self.qkv.param("weight"), W_out, b_out, self.heads,
                                        self.scale, softmax=self.softmax)
        self.last_attention = self._cache["attn"]   # (B, K, N, N), for figures
        return y

    def extra_repr(self):
        return f"{super().extra_repr()}, softmax={self.softmax}"


class DecoderLayer(Module):
    """One CRATE-MAE decoder layer: y = LN0(x) W^T;  out = y - MSSA(LN1(y)).

    Children "0" (PreNorm(Linear)) and "1" (PreNorm(DecoderMSSA)), also
    reachable as ``step`` and ``attn``.
    """

    def __init__(self, dim, heads, dim_head, softmax=True, dtype="float32", seed=0):
        super().__init__(dtype)
        rng = _rng(seed)
        step = Linear(dim, dim, bias=False, dtype=dtype, seed=rng)
        step.add_param("weight", uniform_init(rng, (dim, dim), math.sqrt(6.0 / dim)))
        setattr(self, "0", PreNorm(dim, step, dtype=dtype))
        setattr(self, "1", PreNorm(dim, DecoderMSSA(dim, heads, dim_head, softmax, dtype=dtype,
                                                    seed=rng), dtype=dtype))

    @property
    def step(self):
        return self._modules["0"]

    @property
    def attn(self):
        return self._modules["1"]

    def forward(self, x, capture=None):
        """x (B, N, d) -> (B, N, d); ``capture``: dict of lists for this layer's features."""
        y = self.step(x)                           # LN0(x) W^T
        h = self.attn.norm(y)                      # LN1(y), the MSSA input
        out = y - self.attn.fn(h)                  # expansion: the MSSA update subtracted
        if capture is not None:
            for key, value in zip(DECODER_CAPTURE_KEYS,
                                  (y, h, self.attn.fn.last_attention, out)):
                capture[key].append(value)
        self._cache = True
        return out

    def backward(self, dout):
        self._take_cache()
        # out = y - f(y): the MSSA branch sees -dout, so its parameters get the right sign
        dy = dout + self.attn.backward(-dout)
        return self.step.backward(dy)
