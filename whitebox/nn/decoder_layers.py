"""The CRATE-MAE decoder layer: the encoder layer run backwards.

An encoder layer compresses (Z + MSSA(LN Z)) and then sparsifies (ISTA).
The decoder undoes the two in reverse order (official
model/crate_ae/crate_decoder.py, children named as the official state dict):

    "0"  PreNorm(Linear, no bias)    y = LN0(x) W^T           the inverse of the ISTA step
    "1"  PreNorm(MSSA)              out = y - MSSA(LN1(y))    compression run backwards

The ISTA step is (for small eta) close to a linear map by the dictionary; its
inverse is a linear map too, learned freely here (W square, kaiming-uniform as
the official ``FeedForward``). Subtracting the MSSA update instead of adding
it moves the tokens AWAY from their subspaces: expansion, the reverse of the
denoising (compression) step.
"""
import math

from .crate_layers import MSSA, PreNorm
from .layers import Linear, _rng, uniform_init
from .module import Module

DECODER_CAPTURE_KEYS = ("y", "mssa_in", "attention", "z")


class DecoderLayer(Module):
    """One CRATE-MAE decoder layer: y = LN0(x) W^T;  out = y - MSSA(LN1(y)).

    Children "0" (PreNorm(Linear)) and "1" (PreNorm(MSSA), softmax optional), also
    reachable as ``inverse_ista`` and ``attn`` (the state-dict keys stay "0" and "1",
    the official checkpoint's).
    """

    def __init__(self, dim, heads, dim_head, softmax=True, dtype="float32", seed=0):
        super().__init__(dtype)
        rng = _rng(seed)
        linear = Linear(dim, dim, bias=False, dtype=dtype, seed=rng)
        linear.add_param("weight", uniform_init(rng, (dim, dim), math.sqrt(6.0 / dim)))
        setattr(self, "0", PreNorm(dim, linear, dtype=dtype))
        setattr(self, "1", PreNorm(dim, MSSA(dim, heads, dim_head, softmax=softmax, dtype=dtype,
                                                    seed=rng), dtype=dtype))

    @property
    def inverse_ista(self):
        """PreNorm(Linear): y = LN0(x) W^T, the learned inverse of the encoder's ISTA step."""
        return self._modules["0"]

    @property
    def attn(self):
        return self._modules["1"]

    def forward(self, x, capture=None):
        """x (B, N, d) -> (B, N, d); ``capture``: dict of lists for this layer's features."""
        y = self.inverse_ista(x)                   # LN0(x) W^T
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
        return self.inverse_ista.backward(dy)
