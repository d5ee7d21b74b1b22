"""CRATE language models: causal (CRATEGPT) and masked (CRATEBERT), one trunk.

    idx (B, T) integer tokens, T <= block_size
      -> x = wte[idx] + wpe[:T]                                   (B, T, d)
      -> L blocks:  x = x + MSSA(LN1(x))     compression (causal for GPT)
                    x = ISTA(LN2(x))         sparsification, NO residual
      -> ln_f (overcomplete variant only)
      -> logits = x wte^T                    tied head            (B, T, vocab)

Two ISTA variants, both official:
  "plain"        the official CRATE pull request (model/crate_gpt.py): the
                 classifier's square warm-started ISTA; no final LayerNorm.
  "overcomplete" crate-lm (crate_overcomplete.py, the one its train.py uses):
                 W (expansion d, d); two ISTA steps from zero against W^T,
                 decoded with W; a final LayerNorm ``transformer.ln_f``.

The two models differ only in the attention mask and the objective:
CRATEGPT predicts token t+1 from tokens <= t (next-token cross-entropy);
CRATEBERT sees the whole sequence and predicts the tokens hidden by
``mask_tokens`` (masked-token cross-entropy on the chosen positions only).
No official masked CRATE language model exists: CRATEBERT is this trunk
without the causal mask, trained with BERT's masking rule (Devlin et al.
2019: 15% of positions chosen; of those 80% replaced by the mask token, 10%
by a random token, 10% left unchanged). As in BERT the mask token is an
ordinary row of the vocabulary (``mask_id``, by default the last id),
embedded by wte and scored by the tied head like any other token.

Parameter names are the official state-dict names; ``from_official_state``
and ``to_official_state`` translate the two things the official files carry
in addition: the tied alias ``lm_head.weight`` and (plain) the causal-mask
buffers ``transformer.h.{i}.attn.bias``.
"""
import numpy as np

from ..backend import backend_name, to_numpy
from ..data.masking import check_mask_id as _check_mask_id
from ..functional._blas import matmul_rows
from ..functional._checks import (check_dout, check_finite, check_ids,
                                 check_positive_int, check_probability, check_real)
from ..functional import softmax_forward
from ..nn import Dropout, Embedding, LayerNorm, Module, ModuleList
from ..nn.layers import _rng
from ..nn.lm_layers import LM_CAPTURE_KEYS, LMBlock

VARIANTS = ("overcomplete", "plain")


def embed_tokens(tr, idx):
    """x = drop(wte[idx] + wpe[:T]) (B, T, d) for ids idx (B, T), through a trunk's wte,
    wpe and drop (the token and position embeddings of CRATE-GPT/BERT and GPT-2)."""
    x = tr.wte(idx)                                                 # (B, T, d)
    x += tr.wpe.param("weight")[:idx.shape[1]]
    return tr.drop(x)


def embed_tokens_backward(tr, dx):
    """The reverse of embed_tokens for dx (B, T, d): wpe[:T] gets sum_b dx, wte the
    lookup's scatter-add."""
    dx = tr.drop.backward(dx)
    tr.wpe._grads["weight"][:dx.shape[1]] += dx.sum(axis=0)
    tr.wte.backward(dx)                                             # lookup: scatter-add


def embed_new_tokens(tr, idx, start):
    """wte[idx] + wpe[start:start + t] (B, t, d): new tokens idx (B, t) after ``start``
    cached ones (no dropout: generation runs in evaluation mode)."""
    return tr.wte.param("weight")[idx] + tr.wpe.param("weight")[start:start + idx.shape[1]]


def tied_logits(tr, x):
    """logits = x wte^T (B, T, V) for x (B, T, d): the head tied to the token embedding."""
    return matmul_rows(x, tr.wte.param("weight").T)


def tied_logits_backward(tr, dlogits, x):
    """The head's gradients: wte accumulates dlogits^T x; returns dx = dlogits wte (B, T, d)."""
    wte = tr.wte
    V, d = wte.param("weight").shape
    wte._accumulate("weight", dlogits.reshape(-1, V).T @ x.reshape(-1, d))
    return matmul_rows(dlogits, wte.param("weight"))


def pop_tied_head(state):
    """Drop ``lm_head.weight`` from ``state`` (in place), refusing one that differs from
    ``transformer.wte.weight``: the head is tied to the token embedding."""
    head = state.pop("lm_head.weight", None)
    wte = state.get("transformer.wte.weight")
    if head is not None and wte is not None and not np.array_equal(to_numpy(head),
                                                                    to_numpy(wte)):
        raise ValueError("official state: lm_head.weight differs from transformer.wte.weight,"
                         " but the head is tied to the token embedding")
    return state


def token_model_repr(config, last):
    """A token model's extra_repr: vocab_size, block_size, dim, depth, heads, then ``last``."""
    c = config
    return (f"vocab_size={c['vocab_size']}, block_size={c['block_size']}, dim={c['dim']}, "
            f"depth={c['depth']}, heads={c['heads']}, {last}")


def add_tied_head(state):
    """A copy of ``state`` with the tied alias ``lm_head.weight`` = transformer.wte.weight."""
    state = dict(state)
    state["lm_head.weight"] = state["transformer.wte.weight"].copy()
    return state


class _Trunk(Module):
    """The official ``transformer`` ModuleDict: wte, wpe, drop, h, and ln_f (overcomplete)."""

    def __init__(self, vocab_size, block_size, dim, depth, heads, variant, expansion, ista_step,
                 ista_lambda, causal, dropout, dtype, rng):
        super().__init__(dtype)
        self.wte = Embedding(vocab_size, dim, dtype=dtype, seed=rng)
        self.wpe = Embedding(block_size, dim, dtype=dtype, seed=rng)
        for emb in (self.wte, self.wpe):   # GPT-2 init N(0, 0.02^2), not PyTorch's N(0, 1)
            emb._params["weight"] *= 0.02
        self.drop = Dropout(dropout, dtype=dtype, seed=rng)
        self.h = ModuleList([LMBlock(dim, heads, depth, variant, expansion, ista_step,
                                     ista_lambda, causal, dropout, dtype=dtype, seed=rng)
                             for _ in range(depth)], dtype=dtype)
        if variant == "overcomplete":
            self.ln_f = LayerNorm(dim, dtype=dtype)


class TokenModel(Module):
    """Base of the models that read (B, T) token ids: CRATE-GPT, CRATE-BERT, GPT and BERT.
    A subclass sets ``vocab_size`` and ``block_size``."""

    def _check_idx(self, idx):
        xp = self.xp
        if not isinstance(idx, (np.ndarray, xp.ndarray)):
            raise TypeError(f"idx must be an integer array of token ids (B, T), got "
                            f"{type(idx).__name__}")
        if idx.ndim != 2:
            raise ValueError(f"idx must be 2-dimensional (B, T), got shape {tuple(idx.shape)}")
        if not isinstance(idx, xp.ndarray):
            raise TypeError(f"idx is a {backend_name(idx)} array but the model lives on "
                            f"{self.backend}: move it with whitebox.to_device(idx, "
                            f"{self.backend!r})")
        if idx.shape[1] > self.block_size:
            raise ValueError(f"idx has T = {idx.shape[1]} tokens (shape {tuple(idx.shape)}), "
                             f"more than block_size = {self.block_size}")
        if idx.shape[1] == 0:
            raise ValueError(f"idx has no tokens (shape {tuple(idx.shape)})")
        check_ids("idx", idx, self.vocab_size)


class CausalGeneration:
    """``generate`` for a causal token model with ``forward``, ``new_cache`` and
    ``forward_cached`` (CRATE-GPT and GPT)."""

    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, rng=None,
                 use_cache=True):
        """Sample ``max_new_tokens`` tokens after ``idx`` (B, T); returns (B, T + max_new_tokens).

        Each step samples from softmax(logits[:, -1] / temperature), restricted
        to the ``top_k`` largest logits when given, with ``rng`` (a numpy
        Generator or seed; draws happen on the CPU). The context is the last
        block_size tokens, as in the official generate. With ``use_cache``
        each new token costs one token's work per layer (see forward_cached);
        once the context slides past block_size the positions shift and the
        cache is rebuilt from the window. The model is put in eval mode.
        """
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, (int, np.integer)) \
                or max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be a non-negative integer, got "
                             f"{max_new_tokens!r}")
        temperature = check_real("temperature", temperature, 0.0, low_open=True)
        if top_k is not None:
            top_k = check_positive_int("top_k", top_k)
        self._check_idx(idx[:, -self.block_size:] if getattr(idx, "ndim", 0) == 2 else idx)
        check_ids("idx", idx, self.vocab_size)          # the ids before the window too
        if np.iinfo(idx.dtype).max < self.config["vocab_size"] - 1:
            raise ValueError(f"idx has dtype {idx.dtype}, which cannot hold the ids up to "
                             f"vocab_size - 1 = {self.config['vocab_size'] - 1} that generate "
                             "appends; pass idx.astype(np.int64)")
        rng = _rng(rng if rng is not None else 0, "rng")
        self.eval()
        xp = self.xp
        out = idx
        cache = None
        for _ in range(max_new_tokens):
            window = out[:, -self.block_size:]
            if not use_cache:
                logits = self.forward(window)[:, -1]
                self._cache = None
            elif cache is None or out.shape[1] > self.block_size:
                cache = self.new_cache()
                logits = self.forward_cached(window, cache)[:, -1]
            else:
                logits = self.forward_cached(out[:, -1:], cache)[:, -1]
            nxt = sample_next(to_numpy(logits).astype(np.float64), temperature, top_k, rng)
            out = xp.concatenate([out, xp.asarray(nxt[:, None]).astype(out.dtype)], axis=1)
        return out


class CRATELanguageModel(TokenModel):
    """The shared trunk and tied head of CRATEGPT and CRATEBERT (see the module docstring)."""

    causal = True

    def __init__(self, vocab_size, block_size, dim, depth, heads, variant="overcomplete",
                 expansion=4, ista_step=0.1, ista_lambda=0.1, dropout=0.0, dtype="float32",
                 seed=0):
        super().__init__(dtype)
        for name, v in (("vocab_size", vocab_size), ("block_size", block_size), ("dim", dim),
                        ("depth", depth), ("heads", heads), ("expansion", expansion)):
            check_positive_int(name, v)
        if dim % heads:
            raise ValueError(f"dim ({dim}) must be divisible by heads ({heads}): "
                             f"dim_head = dim // heads")
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        check_real("ista_step", ista_step, 0.0, low_open=True)
        check_real("ista_lambda", ista_lambda, 0.0)
        check_probability("dropout", dropout)
        self.config = dict(vocab_size=vocab_size, block_size=block_size, dim=dim, depth=depth,
                           heads=heads, variant=variant, expansion=expansion,
                           ista_step=ista_step, ista_lambda=ista_lambda, dropout=dropout,
                           dtype=self.dtype, seed=seed)
        self.vocab_size, self.block_size, self.variant = vocab_size, block_size, variant
        self.dim, self.depth, self.heads, self.dim_head = dim, depth, heads, dim // heads
        self.transformer = _Trunk(vocab_size, block_size, dim, depth, heads, variant, expansion,
                                  ista_step, ista_lambda, self.causal, dropout, self.dtype,
                                  _rng(seed))
        self.captured = None

    # ------------------------------------------------------------ compute
    def forward(self, idx, capture=False):
        """idx (B, T) ints -> logits (B, T, vocab).

        With capture=True, ``self.captured`` holds per-layer lists of LN1(x)
        ("mssa_in"), attention maps ("attention", (B, K, T, T)), the
        half-step ("z_half"), LN2 ("ista_in"), the sparse code ("code": c2
        (B, T, m) overcomplete, the last_codes of OvercompleteISTA; the block
        output plain) and the output ("z").
        """
        self._check_idx(idx)
        tr = self.transformer
        x = embed_tokens(tr, idx)                                   # (B, T, d)
        self.captured = {k: [] for k in LM_CAPTURE_KEYS} if capture else None
        for block in tr.h:
            x = block(x, self.captured)
        if self.variant == "overcomplete":
            x = tr.ln_f(x)
        logits = tied_logits(tr, x)                                 # (B, T, V)
        self._cache = (x, logits.shape)
        return logits

    def backward(self, dlogits):
        """Accumulate every parameter gradient; token ids have none, so return None.

        The tied table wte gets two gradients: dlogits^T x from the head and
        the scatter-add of dx from the lookup.
        """
        x, logits_shape = self._take_cache()
        check_dout(type(self).__name__, dlogits, logits_shape)
        check_finite("dlogits", dlogits)
        tr = self.transformer
        dx = tied_logits_backward(tr, dlogits, x)                   # (B, T, d)
        if self.variant == "overcomplete":
            dx = tr.ln_f.backward(dx)
        for block in reversed(list(tr.h)):
            dx = block.backward(dx)
        embed_tokens_backward(tr, dx)
        return None

    # ------------------------------------------------------------ official files
    def from_official_state(self, state):
        """An official state dict -> this model's keys (a new dict; ``state`` is not changed).

        Verifies and drops ``lm_head.weight`` (must equal transformer.wte.weight:
        the official head is tied) and the plain file's causal-mask buffers
        ``transformer.h.{i}.attn.bias`` (must be the lower-triangular ones of
        shape (1, 1, block, block), block >= block_size).
        """
        state = pop_tied_head(dict(state))
        for key in [k for k in state if k.startswith("transformer.h.") and k.endswith(".attn.bias")]:
            mask = to_numpy(state.pop(key))
            n = mask.shape[-1] if mask.ndim == 4 else -1
            if mask.shape != (1, 1, n, n) or n < self.block_size or \
                    not np.array_equal(mask[0, 0], np.tril(np.ones((n, n)))):
                raise ValueError(f"official state: {key} of shape {mask.shape} is not the causal "
                                 f"mask (lower-triangular ones, shape (1, 1, n, n) with "
                                 f"n >= block_size = {self.block_size})")
        return state

    def to_official_state(self, state):
        """This model's state dict -> the official file's keys (adds the tied alias and buffers)."""
        state = add_tied_head(state)
        if self.variant == "plain" and self.causal:
            n = self.block_size
            mask = np.tril(np.ones((n, n), dtype=np.float32)).reshape(1, 1, n, n)
            for i in range(self.depth):
                state[f"transformer.h.{i}.attn.bias"] = mask
        return state

    # ------------------------------------------------------------ features
    def subspaces(self, layer):
        """U of layer ``layer``, shape (K, d, p), for whitebox.rate.measure_compression."""
        return self.transformer.h[layer].attn.subspaces()

    def attention_maps(self):
        return [b.attn.last_attention for b in self.transformer.h]

    def extra_repr(self):
        return token_model_repr(self.config, f"variant={self.config['variant']!r}")


class CRATEGPT(CausalGeneration, CRATELanguageModel):
    """Causal CRATE (GPT-style): logits[:, t] predict idx[:, t + 1] from idx[:, :t + 1].

    ``CRATEGPT(vocab_size, block_size, dim, depth, heads, variant="overcomplete",
    expansion=4, ista_step=0.1, ista_lambda=0.1, dropout=0.0, dtype="float32", seed=0)``;
    dim_head = dim // heads.
    """

    causal = True

    def new_cache(self):
        """An empty generation cache: one (B, K, P, p) tensor per layer, and the position P."""
        return {"past": [None] * self.depth, "length": 0}

    def _check_cache(self, cache, batch):
        """A cache from this model's new_cache, filled by earlier calls for this batch."""
        past = cache.get("past") if isinstance(cache, dict) else None
        if not isinstance(past, list) or set(cache) != {"past", "length"} or \
                len(past) != self.depth:
            raise ValueError(f"cache must come from this model's new_cache() ({self.depth} "
                             f"layers), got {type(cache).__name__}"
                             + (f" with {len(past)} layers" if isinstance(past, list) else ""))
        attn = self.transformer.h[0].attn
        expected = (batch, attn.heads, cache["length"], attn.dim_head)
        if past[0] is not None and tuple(past[0].shape) != expected:
            raise ValueError(f"cache holds projections of shape {tuple(past[0].shape)}, "
                             f"expected (B, K, P, p) = {expected} for these {batch} sequences "
                             "and this model: start a new_cache() for this batch")

    def forward_cached(self, idx, cache):
        """Logits of the new tokens ``idx`` (B, t) following those already in ``cache``.

        The tokens take positions P .. P + t - 1 (P = cache["length"]); every
        layer appends their projections to its cached tensor. Running a
        sequence through in pieces gives the logits forward() gives at once.
        """
        self._check_idx(idx)
        self._check_cache(cache, idx.shape[0])
        P, t = cache["length"], idx.shape[1]
        if P + t > self.block_size:
            raise ValueError(f"the cache holds {P} tokens; {t} more exceed block_size = "
                             f"{self.block_size}")
        tr = self.transformer
        x = embed_new_tokens(tr, idx, P)                                      # (B, t, d)
        for i, block in enumerate(tr.h):
            x, cache["past"][i] = block.decode_step(x, cache["past"][i])
        if self.variant == "overcomplete":
            x = tr.ln_f(x)
            tr.ln_f._cache = None
        cache["length"] = P + t
        return tied_logits(tr, x)                                             # (B, t, V)


def sample_next(logits, temperature, top_k, rng):
    """One id per row from softmax(logits / temperature) over the top_k largest (NumPy).

    The logits are shifted by their row maximum before the division, so a
    temperature near 0 gives the argmax (a tiny temperature cannot overflow).
    """
    if not np.isfinite(logits).all():
        raise ValueError("generate: the model's logits contain NaN or infinite values")
    z = logits - logits.max(axis=1, keepdims=True)                # (B, V), <= 0
    if top_k is not None and top_k < z.shape[1]:
        kth = np.sort(z, axis=1)[:, -top_k][:, None]
        z = np.where(z < kth, -np.inf, z)
    with np.errstate(over="ignore"):                              # -inf: probability 0
        p, _ = softmax_forward(z / temperature)                   # (B, V)
    u = rng.random((z.shape[0], 1))
    return np.minimum((np.cumsum(p, axis=1) < u).sum(axis=1), z.shape[1] - 1)


class CRATEBERT(CRATELanguageModel):
    """Masked CRATE (BERT-style): bidirectional MSSA, logits at every position.

    Same constructor, layout and parameter names as CRATEGPT, plus ``mask_id``
    (default vocab_size - 1): the vocabulary row that stands for a hidden
    token. Train with ``whitebox.data.mask_tokens`` and whitebox.functional's
    token_cross_entropy on the chosen positions.
    """

    causal = False

    def __init__(self, vocab_size, block_size, dim, depth, heads, variant="overcomplete",
                 expansion=4, ista_step=0.1, ista_lambda=0.1, dropout=0.0, dtype="float32",
                 seed=0, mask_id=None):
        super().__init__(vocab_size, block_size, dim, depth, heads, variant, expansion,
                         ista_step, ista_lambda, dropout, dtype, seed)
        self.mask_id = _check_mask_id(vocab_size - 1 if mask_id is None else mask_id,
                                      vocab_size)
        self.config["mask_id"] = self.mask_id
