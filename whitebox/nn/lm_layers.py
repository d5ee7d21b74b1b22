"""The blocks of the CRATE language models, named as the official causal files name them.

    LMAttention (official CausalSelfAttention) -> "c_attn.weight", "c_proj.weight", "c_proj.bias"
    OvercompleteISTA (crate-lm's MLP, tied)     -> "weight", shape (expansion d, d)
    ISTA (the classifier's, square)             -> "weight", shape (d, d)
    LMBlock                                     -> "prenorm_1.*", "attn.*", "prenorm_2.*", "ista.*"

A block computes  x = x + MSSA(LN1(x));  x = ISTA(LN2(x))  (no residual
round ISTA; whitebox.nn.block.ResidualBlock). The MSSA is the classifier's
(whitebox.functional.mssa_fast_forward, q = k = v) with or without the
causal mask, and decodes new tokens through whitebox.functional.mssa_decode;
the square ISTA is the classifier's Module itself; the overcomplete ISTA is
the Module CRATE-alpha uses, with its decoder tied to the dictionary.
"""
import math

from .. import functional as F
from .block import CAPTURE_KEYS, ResidualBlock
from .crate_layers import ISTA, OvercompleteISTA
from .layers import LayerNorm, Linear, _rng
from .module import DropoutAttention

# per-layer features a forward with capture appends (see ResidualBlock.forward): CRATE's keys
LM_CAPTURE_KEYS = CAPTURE_KEYS


def _normal(rng, shape, std):
    """N(0, std^2), drawn on the CPU in float64 (cast when registered)."""
    return rng.standard_normal(shape) * std


class LMAttention(DropoutAttention):
    """MSSA with q = k = v = x c_attn^T, optionally causal; output projection c_proj.

    The official CausalSelfAttention: ``c_attn`` (d, d) bias-free (its rows
    are the stacked subspaces U_k^T), ``c_proj`` (d, d) with bias, dropout
    after the softmax and after c_proj. Both are initialised N(0, 0.02^2)
    with c_proj.weight N(0, (0.02 / sqrt(2 L))^2), as GPT-2.
    """

    def __init__(self, dim, heads, depth, causal=True, dropout=0.0, dtype="float32", seed=0):
        super().__init__(dtype)
        rng = _rng(seed)
        if dim % heads:
            raise ValueError(f"dim ({dim}) must be divisible by heads ({heads})")
        self.heads, self.dim_head, self.causal = int(heads), dim // heads, bool(causal)
        self.scale = self.dim_head ** -0.5
        self.c_attn = Linear(dim, dim, bias=False, dtype=dtype, seed=rng)
        self.c_proj = Linear(dim, dim, dtype=dtype, seed=rng)
        self.c_attn._params["weight"][...] = _normal(rng, (dim, dim), 0.02)
        self.c_proj._params["weight"][...] = _normal(rng, (dim, dim), 0.02 / math.sqrt(2 * depth))
        self.c_proj._params["bias"][...] = 0
        self._init_attention(dropout, rng)

    def forward(self, x):
        y, self._cache = F.mssa_fast_forward(x, self.c_attn.param("weight"),
                                             self.c_proj.param("weight"),
                                             self.c_proj.param("bias"), self.heads, self.scale,
                                             self.causal, self.dropout, self.rng, self.training)
        self.last_attention = self._cache["attn"]   # (B, K, T, T)
        return y

    def backward(self, dout):
        dx, dW_attn, dW_proj, db_proj = F.mssa_fast_backward(dout, self._take_cache())
        self.c_attn._accumulate("weight", dW_attn)
        self.c_proj._accumulate("weight", dW_proj)
        self.c_proj._accumulate("bias", db_proj)
        return dx

    def decode_step(self, x, past):
        """Causal MSSA of new tokens given the projected past: inference only
        (whitebox.functional.mssa_decode: one cached tensor per layer, as q = k = v).

        Inputs: x (B, t, d) the new tokens (after LN1); past (B, K, P, p) the
        cached projections of the P earlier tokens, or None.
        Returns: y (B, t, d), the cache extended to P + t.
        """
        return F.mssa_decode(x, past, self.c_attn.param("weight"), self.c_proj.param("weight"),
                             self.c_proj.param("bias"), self.heads, self.scale, self.causal)

    def subspaces(self):
        """U of shape (K, d, p): U_k = c_attn.weight[k p:(k+1) p, :]^T."""
        W = self.c_attn.param("weight")
        return W.reshape(self.heads, self.dim_head, -1).transpose(0, 2, 1)

    def extra_repr(self):
        return f"heads={self.heads}, dim_head={self.dim_head}, causal={self.causal}"


class LMBlock(ResidualBlock):
    """x = x + MSSA(LN1(x));  x = ISTA(LN2(x)), children named as the official Block."""

    def __init__(self, dim, heads, depth, variant="overcomplete", expansion=4, ista_step=0.1,
                 ista_lambda=0.1, causal=True, dropout=0.0, dtype="float32", seed=0):
        super().__init__(dtype)
        rng = _rng(seed)
        self.prenorm_1 = LayerNorm(dim, dtype=dtype)
        self.attn = LMAttention(dim, heads, depth, causal, dropout, dtype=dtype, seed=rng)
        self.prenorm_2 = LayerNorm(dim, dtype=dtype)
        if variant == "overcomplete":
            self.ista = OvercompleteISTA(dim, expansion, ista_step, ista_lambda, dtype=dtype,
                                         seed=rng)
        else:
            self.ista = ISTA(dim, ista_step, ista_lambda, dtype=dtype, seed=rng)

    def parts(self):
        return self.prenorm_1, self.attn, self.prenorm_2, self.ista

    def code(self, out):
        """The sparse code of the last forward: c2 (overcomplete) or the output itself (plain)."""
        return self.ista.last_codes if isinstance(self.ista, OvercompleteISTA) else out

    def decode_step(self, x, past):
        """The block on new tokens given the cached past projections (inference only)."""
        y, past = self.attn.decode_step(self.prenorm_1(x), past)
        x = x + y
        out = self.ista(self.prenorm_2(x))
        self.prenorm_1._cache = self.prenorm_2._cache = self.ista._cache = None
        return out, past
