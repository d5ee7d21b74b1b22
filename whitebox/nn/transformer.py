"""The standard transformer's layers as Modules: attention, MLP and the block.

    MultiHeadAttention  x -> proj(attention(qkv(x)))          children "qkv", "proj"
    MLP                 x -> fc2(GELU(fc1(x)))                 children "fc1", "fc2"
    TransformerBlock    pre-norm:  x = x + attn(norm1 x);  x = x + mlp(norm2 x)
                        post-norm: x = norm1(x + attn x);  x = norm2(x + mlp x)

``TransformerBlock.forward(x, capture)`` appends its features under CRATE's
capture keys (whitebox.nn.block.CAPTURE_KEYS), each the standard block's
counterpart: "mssa_in" the attention's input, "attention" its weights,
"z_half" the stream after attention, "ista_in" the MLP's input, "code" the
MLP's hidden GELU activations (the counterpart of the ISTA sparse code),
"z" the block's output; ``subspaces`` gives the heads' bases (K, d, p) of
one part of the fused qkv, so whitebox.rate.layer_measures runs on it.

Children carry timm's names by default; ``names`` renames them so one class
serves every official layout (nanoGPT: ln_1, attn.c_attn, attn.c_proj, ln_2,
mlp.c_fc, mlp.c_proj). The math lives in whitebox.functional.attention (its
fast path) and the shared linear, GELU, LayerNorm and dropout pairs.
"""
import math

from .. import functional as F
from ..functional import attention as A
from ..functional._checks import check_positive_int, check_probability
from .block import CAPTURE_KEYS
from .layers import GELU, Dropout, LayerNorm, Linear, _rng
from .module import Module

TIMM_NAMES = dict(norm1="norm1", attn="attn", norm2="norm2", mlp="mlp", qkv="qkv", proj="proj",
                  fc1="fc1", fc2="fc2")
NANOGPT_NAMES = dict(norm1="ln_1", attn="attn", norm2="ln_2", mlp="mlp", qkv="c_attn",
                     proj="c_proj", fc1="c_fc", fc2="c_proj")


def normal_init_(linear, rng, std=0.02):
    """Weight N(0, std^2), bias 0 (GPT-2's and BERT's initialisation), in place."""
    W = linear.param("weight")
    W[...] = (rng.standard_normal(W.shape) * std).astype(W.dtype)
    if linear.has_bias:
        linear.param("bias")[...] = 0
    return linear


def _add_child(module, role, name, child):
    """Register ``child`` under its official ``name`` and keep it at ``_<role>`` as well,
    so the code reads one way whatever the layout calls it."""
    setattr(module, name, child)
    object.__setattr__(module, "_" + role, child)


def residual_std(depth):
    """GPT-2's std for the projections that write into the residual: 0.02 / sqrt(2 depth)."""
    return 0.02 / math.sqrt(2 * depth)


class WeightOnlyLayerNorm(LayerNorm):
    """LayerNorm without the bias (nanoGPT's bias=False): y = xhat * weight."""

    def __init__(self, d, eps=1e-5, dtype="float32"):
        super().__init__(d, eps, dtype)
        del self._params["bias"], self._grads["bias"]

    def forward(self, x):
        W = self._params["weight"]
        out, self._cache = F.layernorm_forward(x, W, self.xp.zeros_like(W), self.eps)
        return out

    def backward(self, dout):
        dx, dg, _ = F.layernorm_backward(dout, self._take_cache())
        self._accumulate("weight", dg)
        return dx


class MultiHeadAttention(Module):
    """Self-attention with a fused qkv projection: (B, N, d) -> (B, N, d).

    ``qkv`` Linear(d, 3 d, bias=qkv_bias), ``proj`` Linear(d, d, bias=proj_bias);
    K = heads of width d / K, scale (d / K)^{-1/2}; ``causal`` masks later
    keys; ``attn_drop`` on the attention weights and ``proj_drop`` after proj.
    """

    def __init__(self, dim, heads, qkv_bias=True, proj_bias=True, causal=False, attn_drop=0.0,
                 proj_drop=0.0, names=None, dtype="float32", seed=0):
        super().__init__(dtype)
        check_positive_int("dim", dim)
        check_positive_int("heads", heads)
        if dim % heads:
            raise ValueError(f"dim ({dim}) must be divisible by heads ({heads})")
        names = {**TIMM_NAMES, **(names or {})}
        rng = _rng(seed)
        self.heads, self.dim_head, self.causal = int(heads), dim // heads, bool(causal)
        _add_child(self, "qkv", names["qkv"], Linear(dim, 3 * dim, qkv_bias, dtype=dtype, seed=rng))
        _add_child(self, "proj", names["proj"], Linear(dim, dim, proj_bias, dtype=dtype, seed=rng))
        self.attn_drop = check_probability("attn_drop", attn_drop)
        self.proj_drop = Dropout(proj_drop, dtype=dtype, seed=rng)
        self.rng = rng
        self.last_attention = None

    def _draws(self):
        return self.attn_drop > 0

    def subspaces(self, part="v"):
        """The heads' bases of one part of the fused qkv: U (K, d, p) with
        U_k = W_part[k p:(k+1) p]^T, W_part the "q", "k" or "v" rows (d, d) of qkv.weight."""
        return head_bases(self._qkv.param("weight"), self.heads, part)

    def forward(self, x):
        """x (B, N, d) -> (B, N, d); the attention maps stay in ``last_attention``."""
        qkv, proj = self._qkv, self._proj
        y, cache = A.attention_forward(x, qkv.param("weight"), qkv._params.get("bias"),
                                       proj.param("weight"), proj._params.get("bias"),
                                       self.heads, self.causal, self.attn_drop, self.rng,
                                       self.training)
        self._cache = cache
        self.last_attention = cache["attn"]
        return self.proj_drop(y)

    def backward(self, dout):
        dy = self.proj_drop.backward(dout)
        dx, dWq, dbq, dWp, dbp = A.attention_backward(dy, self._take_cache())
        self._qkv._accumulate("weight", dWq)
        self._qkv._accumulate("bias", dbq)
        self._proj._accumulate("weight", dWp)
        self._proj._accumulate("bias", dbp)
        return dx

    def step(self, x, past):
        """Causal attention of new tokens x (B, t, d) after the cached keys and values.

        past: (k, v), each (B, K, P, p), or None. Inference only (no cache
        kept for backward). Returns: y (B, t, d), (k, v) extended to P + t.
        """
        xp = self.xp
        qkv = self._qkv(x)                                              # (B, t, 3 d)
        self._qkv._cache = None
        q, k, v = A.split_qkv(qkv, self.heads)                          # (B, K, t, p) views
        if past is not None:
            k = xp.concatenate([past[0], k], axis=2)                   # (B, K, P + t, p)
            v = xp.concatenate([past[1], v], axis=2)
        O, _ = A.sdpa_fast_forward(q, k, v, self.causal, 0.0, None, False)   # (B, K, t, p)
        y = self._proj(A.merge_heads(O))
        self._proj._cache = None
        return y, (k, v)

    def extra_repr(self):
        return f"heads={self.heads}, dim_head={self.dim_head}, causal={self.causal}"


def head_bases(weight, heads, part="v"):
    """weight (3 d, d) of a fused qkv (or (d, d) of one part, with part=None) -> (K, d, p)."""
    parts = ("q", "k", "v")
    if part is not None:
        if part not in parts:
            raise ValueError(f"part must be one of {parts}, got {part!r}")
        d = weight.shape[1]
        i = parts.index(part)
        weight = weight[i * d:(i + 1) * d]
    d = weight.shape[1]
    p = d // heads
    return weight.reshape(heads, p, d).transpose(0, 2, 1).copy()       # (K, d, p)


class MLP(Module):
    """x -> dropout(fc2(GELU(fc1 x))), exact erf GELU; children ``fc1``, ``fc2`` (renamable)."""

    def __init__(self, dim, hidden, bias=True, dropout=0.0, names=None, dtype="float32", seed=0):
        super().__init__(dtype)
        names = {**TIMM_NAMES, **(names or {})}
        rng = _rng(seed)
        _add_child(self, "fc1", names["fc1"], Linear(dim, hidden, bias, dtype=dtype, seed=rng))
        self.act = GELU(dtype=dtype)
        _add_child(self, "fc2", names["fc2"], Linear(hidden, dim, bias, dtype=dtype, seed=rng))
        self.drop = Dropout(dropout, dtype=dtype, seed=rng)
        self.last_hidden = None

    def forward(self, x):
        """x (B, N, d) -> (B, N, d); the hidden activations stay in ``last_hidden``."""
        h = self.act(self._fc1(x))
        self.last_hidden = h
        return self.drop(self._fc2(h))

    def backward(self, dout):
        return self._fc1.backward(self.act.backward(self._fc2.backward(self.drop.backward(dout))))


class TransformerBlock(Module):
    """One transformer layer, pre-norm (ViT, GPT, MAE) or post-norm (BERT, the original).

    pre:  x = x + attn(norm1 x);  x = x + mlp(norm2 x)
    post: x = norm1(x + attn x);  x = norm2(x + mlp x)
    LayerNorms with ``eps`` (and no bias when norm_bias=False, as nanoGPT's
    bias=False); MLP hidden width int(dim mlp_ratio); ``dropout`` after the
    attention projection and the MLP, ``attn_drop`` on the attention weights.
    """

    def __init__(self, dim, heads, mlp_ratio=4.0, qkv_bias=True, bias=True, norm="pre",
                 eps=1e-6, causal=False, dropout=0.0, attn_drop=0.0, names=None,
                 dtype="float32", seed=0):
        super().__init__(dtype)
        if norm not in ("pre", "post"):
            raise ValueError(f"norm must be 'pre' or 'post', got {norm!r}")
        names = {**TIMM_NAMES, **(names or {})}
        rng = _rng(seed)
        self.norm = norm
        Norm = LayerNorm if bias else WeightOnlyLayerNorm
        _add_child(self, "norm1", names["norm1"], Norm(dim, eps, dtype=dtype))
        _add_child(self, "attn", names["attn"], MultiHeadAttention(
            dim, heads, qkv_bias, bias, causal, attn_drop, dropout, names, dtype, rng))
        _add_child(self, "norm2", names["norm2"], Norm(dim, eps, dtype=dtype))
        _add_child(self, "mlp", names["mlp"], MLP(dim, int(dim * mlp_ratio), bias, dropout, names,
                                                  dtype, rng))

    def forward(self, x, capture=None):
        """x (B, N, d) -> (B, N, d). ``capture``: a dict of lists (CAPTURE_KEYS) to append
        this block's features to (see the module docstring)."""
        self._cache = True
        pre = self.norm == "pre"
        h = self._norm1(x) if pre else x
        a = self._attn(h)
        x_half = x + a if pre else self._norm1(x + a)
        h2 = self._norm2(x_half) if pre else x_half
        m = self._mlp(h2)
        out = x_half + m if pre else self._norm2(x_half + m)
        if capture is not None:
            for key, value in zip(CAPTURE_KEYS, (h, self._attn.last_attention, x_half, h2,
                                                 self._mlp.last_hidden, out)):
                capture[key].append(value)
        return out

    def subspaces(self, part="v"):
        """U (K, d, p) of the attention's ``part`` ("q", "k" or "v"), for Rc measures."""
        return self._attn.subspaces(part)

    def backward(self, dout):
        self._take_cache()
        if self.norm == "pre":
            dx = dout + self._norm2.backward(self._mlp.backward(dout))
            return dx + self._norm1.backward(self._attn.backward(dx))
        dh = self._norm2.backward(dout)
        dx = dh + self._mlp.backward(dh)
        dh = self._norm1.backward(dx)
        return dh + self._attn.backward(dh)

    def step(self, x, past):
        """Pre-norm causal block on new tokens after a key/value cache (inference only)."""
        y, past = self._attn.step(self._norm1(x), past)
        x = x + y
        x = x + self._mlp(self._norm2(x))
        mlp = self._mlp
        for m in (self._norm1, self._norm2, mlp, mlp._fc1, mlp._fc2, mlp.act, mlp.drop):
            m._cache = None
        return x, past

    def extra_repr(self):
        return f"norm={self.norm!r}"
