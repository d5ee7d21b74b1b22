"""GPT-2 as nanoGPT's model.py computes it: a causal pre-norm transformer with a tied head.

    idx (B, T) integer tokens, T <= block_size
      -> x = wte[idx] + wpe[:T]                                 (B, T, d)
      -> depth blocks h.i:  x = x + attn(ln_1 x)                causal, fused c_attn (q, k, v)
                            x = x + mlp(ln_2 x)                 c_proj(GELU(c_fc x)), 4 d
      -> ln_f -> logits = x wte^T                               (B, T, vocab) lm_head tied

LayerNorms have eps 1e-5 and a bias only when ``bias`` (nanoGPT's
GPTConfig.bias); names are nanoGPT's, so its checkpoints load as they are.
Hugging Face GPT-2 files load too (``from_official_state``): their
``c_attn``, ``c_proj`` and ``c_fc`` are Conv1D layers whose weights are
stored transposed, as nanoGPT's from_pretrained transposes them.

Generation keeps, per layer, the keys and the values of every earlier
token: two (B, K, P, p) tensors, 2 depth d numbers per token and sequence.
CRATE-GPT (whitebox.models.crate_lm) keeps one, since its q = k = v.
"""
import numpy as np

from ..backend import to_numpy
from ..functional._checks import check_dout, check_positive_int, check_probability
from ..nn import Dropout, Embedding, LayerNorm, Module, ModuleList, TransformerBlock
from ..nn.block import CAPTURE_KEYS
from ..nn.layers import _rng
from ..nn.transformer import NANOGPT_NAMES, WeightOnlyLayerNorm, normal_init_, residual_std
from .crate_lm import (CausalGeneration, TokenModel, add_tied_head, embed_new_tokens,
                       embed_tokens, embed_tokens_backward, pop_tied_head, tied_logits,
                       tied_logits_backward, token_model_repr)

CONV1D_WEIGHTS = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight",
                  "mlp.c_proj.weight")


class _Trunk(Module):
    """nanoGPT's ``transformer`` ModuleDict: wte, wpe, drop, h, ln_f."""

    def __init__(self, vocab_size, block_size, dim, depth, heads, bias, dropout, dtype, rng):
        super().__init__(dtype)
        self.wte = Embedding(vocab_size, dim, dtype=dtype, seed=rng)
        self.wpe = Embedding(block_size, dim, dtype=dtype, seed=rng)
        for emb in (self.wte, self.wpe):                 # GPT-2's N(0, 0.02^2)
            emb._params["weight"] *= 0.02
        self.drop = Dropout(dropout, dtype=dtype, seed=rng)
        self.h = ModuleList([TransformerBlock(dim, heads, 4.0, bias, bias, "pre", 1e-5, True,
                                              dropout, dropout, NANOGPT_NAMES, dtype, rng)
                             for _ in range(depth)], dtype=dtype)
        self.ln_f = (LayerNorm if bias else WeightOnlyLayerNorm)(dim, 1e-5, dtype=dtype)
        for block in self.h:
            for lin in (block._attn._qkv, block._attn._proj, block._mlp._fc1, block._mlp._fc2):
                normal_init_(lin, rng)
            for lin in (block._attn._proj, block._mlp._fc2):
                normal_init_(lin, rng, residual_std(depth))


class GPT(CausalGeneration, TokenModel):
    """nanoGPT's GPT. forward(idx (B, T)) -> logits (B, T, vocab) at every position;
    backward(dlogits) accumulates every gradient (token ids have none: returns None)."""
    ATTENTION = "standard attention"           # the training header's word for it

    def __init__(self, vocab_size, block_size, dim, depth, heads, bias=True, dropout=0.0,
                 dtype="float32", seed=0):
        super().__init__(dtype)
        for name, v in (("vocab_size", vocab_size), ("block_size", block_size), ("dim", dim),
                        ("depth", depth), ("heads", heads)):
            check_positive_int(name, v)
        if dim % heads:
            raise ValueError(f"dim ({dim}) must be divisible by heads ({heads})")
        check_probability("dropout", dropout)
        self.config = dict(vocab_size=vocab_size, block_size=block_size, dim=dim, depth=depth,
                           heads=heads, bias=bool(bias), dropout=dropout, dtype=self.dtype,
                           seed=seed)
        self.vocab_size, self.block_size, self.dim, self.depth = vocab_size, block_size, dim, depth
        self.heads, self.dim_head = heads, dim // heads
        self.captured = None
        self.transformer = _Trunk(vocab_size, block_size, dim, depth, heads, bool(bias), dropout,
                                  self.dtype, _rng(seed))

    def forward(self, idx, capture=False):
        """idx (B, T) ints -> logits (B, T, vocab). With capture=True, ``self.captured``
        holds per-block lists under CRATE's keys (whitebox.nn.transformer)."""
        self._check_idx(idx)
        tr = self.transformer
        x = embed_tokens(tr, idx)                                     # (B, T, d)
        self.captured = {k: [] for k in CAPTURE_KEYS} if capture else None
        for block in tr.h:
            x = block(x, self.captured)
        x = tr.ln_f(x)
        logits = tied_logits(tr, x)                                   # (B, T, V)
        self._cache = (x, logits.shape)
        return logits

    def backward(self, dlogits):
        """The reverse walk; wte gets the head's dlogits^T x and the lookup's scatter-add."""
        x, logits_shape = self._take_cache()
        check_dout("GPT", dlogits, logits_shape)
        tr = self.transformer
        dx = tr.ln_f.backward(tied_logits_backward(tr, dlogits, x))  # (B, T, d)
        for block in reversed(list(tr.h)):
            dx = block.backward(dx)
        embed_tokens_backward(tr, dx)
        return None

    # ------------------------------------------------------------ generation
    def new_cache(self):
        """An empty key/value cache: per layer (k, v), each (B, K, P, p), and the length P."""
        return {"past": [None] * self.depth, "length": 0}

    def cache_bytes_per_token(self, batch=1):
        """Bytes the cache grows by per generated token: 2 depth d numbers (k and v) a sequence."""
        return 2 * self.depth * self.dim * batch * np.dtype(self.dtype).itemsize

    def forward_cached(self, idx, cache):
        """Logits (B, t, V) of new tokens idx (B, t) at positions P .. P + t - 1 after the cache."""
        self._check_idx(idx)
        past = cache.get("past") if isinstance(cache, dict) else None
        if not isinstance(past, list) or len(past) != self.depth:
            raise ValueError(f"cache must come from this model's new_cache() ({self.depth} "
                             f"layers), got {type(cache).__name__}")
        P, t = cache["length"], idx.shape[1]
        if past[0] is not None and past[0][0].shape[0] != idx.shape[0]:
            raise ValueError(f"cache holds {past[0][0].shape[0]} sequences, idx has "
                             f"{idx.shape[0]}: start a new_cache() for this batch")
        if P + t > self.block_size:
            raise ValueError(f"the cache holds {P} tokens; {t} more exceed block_size = "
                             f"{self.block_size}")
        tr = self.transformer
        x = embed_new_tokens(tr, idx, P)                                    # (B, t, d)
        for i, block in enumerate(tr.h):
            x, past[i] = block.step(x, past[i])
        x = tr.ln_f(x)
        tr.ln_f._cache = None
        cache["length"] = P + t
        return tied_logits(tr, x)                                           # (B, t, V)

    # ------------------------------------------------------------ official files
    def from_official_state(self, state):
        """A nanoGPT or Hugging Face GPT-2 state dict -> this model's keys (a new dict).

        Drops the tied alias ``lm_head.weight`` (checked equal to wte) and
        causal-mask buffers (``*.attn.bias`` of shape (1, 1, n, n),
        ``*.attn.masked_bias``). Hugging Face's layout (keys without the
        ``transformer.`` prefix, or Conv1D weights: c_attn of shape (d, 3 d))
        gets the prefix and its four Conv1D weights per block transposed.
        """
        state = {(k if k.startswith(("transformer.", "lm_head.")) else "transformer." + k): v
                 for k, v in state.items()}
        pop_tied_head(state)
        for key in [k for k in state if k.endswith((".attn.bias", ".attn.masked_bias"))]:
            if getattr(state[key], "ndim", 0) == 4 or key.endswith("masked_bias"):
                del state[key]                       # buffers, not parameters
        first = state.get("transformer.h.0.attn.c_attn.weight")
        if first is not None and tuple(first.shape) == (self.dim, 3 * self.dim):   # Conv1D
            for i in range(self.depth):
                for name in CONV1D_WEIGHTS:
                    key = f"transformer.h.{i}.{name}"
                    if key in state:
                        state[key] = to_numpy(state[key]).T
        return state

    def to_official_state(self, state):
        """This model's state dict -> nanoGPT's (adds the tied alias ``lm_head.weight``)."""
        return add_tied_head(state)

    def subspaces(self, layer, part="v"):
        """U (K, d, p) of block ``layer``'s ``part`` of c_attn, for Rc measures."""
        return self.transformer.h[layer].subspaces(part)

    def attention_maps(self):
        return [b._attn.last_attention for b in self.transformer.h]

    def extra_repr(self):
        return token_model_repr(self.config, f"bias={self.config['bias']}")


def hf_gpt2_state(state, depth):
    """A nanoGPT-layout state dict -> Hugging Face GPT2Model's layout (no prefix, Conv1D
    weights transposed), e.g. to hand weights to ``transformers``."""
    out = {}
    for k, v in state.items():
        if k == "lm_head.weight":
            continue
        name = k[len("transformer."):] if k.startswith("transformer.") else k
        if any(name == f"h.{i}.{w}" for i in range(depth) for w in CONV1D_WEIGHTS):
            v = np.ascontiguousarray(to_numpy(v).T)
        out[name] = v
    return out


def gpt2(**kw):
    """GPT-2 small as nanoGPT trains it: vocabulary 50,304 (padded), 1024 positions, d 768,
    12 layers of 12 heads, biases (124,475,904 parameters)."""
    cfg = dict(vocab_size=50304, block_size=1024, dim=768, depth=12, heads=12)
    cfg.update(kw)
    return GPT(**cfg)
