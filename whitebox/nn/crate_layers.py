"""The two CRATE operators as Modules, named as the official state dict names them.

    PreNorm(norm, fn)          -> "norm.weight", "norm.bias", "fn...."
    MSSA (official Attention)  -> "qkv.weight", "to_out.0.weight", "to_out.0.bias"
    ISTA (official FeedForward)-> "weight"
    CRATELayer                 -> "0.<PreNorm(MSSA)>", "1.<PreNorm(ISTA)>"
"""
import math

import numpy as np

from .. import functional as F
from ..functional._checks import check_probability, check_real
from .layers import LayerNorm, Linear, _rng, uniform_init
from .module import Module, Sequential


class PreNorm(Module):
    """y = fn(LayerNorm(x)), with children named ``norm`` and ``fn``."""

    def __init__(self, dim, fn, dtype="float32"):
        super().__init__(dtype)
        self.norm = LayerNorm(dim, dtype=dtype)
        self.fn = fn

    def forward(self, x):
        return self.fn(self.norm(x))

    def backward(self, dout):
        return self.norm.backward(self.fn.backward(dout))


class MSSA(Module):
    """Multi-head subspace self-attention (the official ``Attention``).

    The children ``qkv`` (bias-free, rows = the stacked subspaces U_k^T) and
    ``to_out`` hold the parameters under the official names; the computation
    is whitebox.functional.mssa_forward / mssa_backward. As in the official
    code there is no output projection when heads == 1 and dim_head == dim.
    """

    def __init__(self, dim, heads=8, dim_head=64, dropout=0.0, causal=False,
                 dtype="float32", seed=0):
        super().__init__(dtype)
        for name, v in (("dim", dim), ("heads", heads), ("dim_head", dim_head)):
            if not isinstance(v, (int, np.integer)) or v <= 0:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        rng = _rng(seed)
        self.heads, self.dim_head, self.causal = int(heads), int(dim_head), bool(causal)
        self.scale = dim_head ** -0.5
        inner = heads * dim_head
        self.qkv = Linear(dim, inner, bias=False, dtype=dtype, seed=rng)
        self.project_out = not (heads == 1 and dim_head == dim)
        if self.project_out:
            # "to_out.0" as in the official Sequential(Linear, Dropout); the
            # dropouts themselves run inside mssa_forward, with self.rng
            self.to_out = Sequential(Linear(inner, dim, dtype=dtype, seed=rng), dtype=dtype)
        self.dropout = check_probability("dropout", dropout)
        self.rng = rng

    def _out_params(self):
        if not self.project_out:
            return None, None
        lin = self.to_out[0]
        return lin.param("weight"), lin.param("bias")

    def forward(self, x):
        W_out, b_out = self._out_params()
        y, self._cache = F.mssa_forward(x, self.qkv.param("weight"), W_out, b_out, self.heads,
                                        self.scale, self.causal, self.dropout, self.rng,
                                        self.training)
        self.last_attention = self._cache["attn"]   # (B, K, N, N), for figures
        return y

    def backward(self, dout):
        dx, dW_qkv, dW_out, db_out = F.mssa_backward(dout, self._take_cache())
        self.qkv._accumulate("weight", dW_qkv)
        if self.project_out:
            self.to_out[0]._accumulate("weight", dW_out)
            self.to_out[0]._accumulate("bias", db_out)
        return dx

    def subspaces(self):
        """U of shape (K, d, p): U_k = W_qkv[k p:(k+1) p, :]^T."""
        W = self.qkv.param("weight")                              # (K p, d)
        K, p = self.heads, self.dim_head
        return W.reshape(K, p, -1).transpose(0, 2, 1)             # (K, d, p)

    def extra_repr(self):
        return f"heads={self.heads}, dim_head={self.dim_head}, causal={self.causal}"


class ISTA(Module):
    """One ISTA sparse-coding step (the official ``FeedForward``), parameter ``weight``.

    Initialised kaiming_uniform as the official code: U(-sqrt(6/d), sqrt(6/d)).
    """

    def __init__(self, dim, step_size=0.1, lambd=0.1, dtype="float32", seed=0):
        super().__init__(dtype)
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim <= 0:
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        self.step_size = check_real("ista step_size", step_size, 0.0, low_open=True)
        self.lambd = check_real("ista lambd", lambd, 0.0)
        bound = math.sqrt(6.0 / dim)
        self.add_param("weight", uniform_init(_rng(seed), (dim, dim), bound))

    def forward(self, x):
        y, self._cache = F.ista_forward(x, self._params["weight"], self.step_size, self.lambd)
        return y

    def backward(self, dout):
        dx, dW = F.ista_backward(dout, self._take_cache())
        self._accumulate("weight", dW)
        return dx

    def extra_repr(self):
        return f"step_size={self.step_size}, lambd={self.lambd}"


CAPTURE_KEYS = ("mssa_in", "attention", "z_half", "ista_in", "z")


class CRATELayer(Module):
    """One CRATE layer: Z^{l+1/2} = Z^l + MSSA(LN1(Z^l));  Z^{l+1} = ISTA(LN2(Z^{l+1/2})).

    Children are named "0" (PreNorm(MSSA)) and "1" (PreNorm(ISTA)) as in the
    official ModuleList, and are also reachable as ``attn`` and ``ista``.
    Note the residual around MSSA only: the ISTA step has none.
    """

    def __init__(self, dim, heads, dim_head, dropout=0.0, ista_step=0.1, ista_lambda=0.1,
                 causal=False, dtype="float32", seed=0):
        super().__init__(dtype)
        rng = _rng(seed)
        setattr(self, "0", PreNorm(dim, MSSA(dim, heads, dim_head, dropout, causal,
                                             dtype=dtype, seed=rng), dtype=dtype))
        setattr(self, "1", PreNorm(dim, ISTA(dim, ista_step, ista_lambda, dtype=dtype,
                                             seed=rng), dtype=dtype))

    @property
    def attn(self):
        return self._modules["0"]

    @property
    def ista(self):
        return self._modules["1"]

    def __getitem__(self, i):
        if i not in (0, 1, -1, -2):
            raise IndexError(f"a CRATE layer has two children (0: MSSA, 1: ISTA), got index {i}")
        return self._modules[str(i % 2)]

    def __iter__(self):
        return iter((self.attn, self.ista))

    def __len__(self):
        return 2

    def forward(self, x, capture=None):
        """x (B, N, d) -> (B, N, d); ``capture``: dict of lists to append this layer's features to."""
        h = self.attn.norm(x)                      # LN1(Z^l)
        x_half = x + self.attn.fn(h)               # Z^{l+1/2}
        h2 = self.ista.norm(x_half)                # LN2(Z^{l+1/2})
        out = self.ista.fn(h2)                     # Z^{l+1}
        if capture is not None:
            for key, value in zip(CAPTURE_KEYS, (h, self.attn.fn.last_attention, x_half, h2,
                                                 out)):
                capture[key].append(value)
        self._cache = True
        return out

    def backward(self, dout):
        self._take_cache()
        dx_half = self.ista.backward(dout)         # through ISTA and LN2
        return dx_half + self.attn.backward(dx_half)   # residual + the MSSA branch
