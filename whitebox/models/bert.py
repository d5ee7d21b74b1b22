"""BERT for masked language modelling, as Hugging Face's BertForMaskedLM computes it.

    idx (B, T), token_type_ids (B, T) (default all 0)
      -> x = LN(word[idx] + position[:T] + token_type[tt])          bert.embeddings  (B, T, d)
      -> depth post-norm layers bert.encoder.layer.i:
           a = softmax(q k^T / sqrt(p)) v,  q, k, v separate Linears   attention.self
           x = LN(x + dense(a))                                       attention.output
           x = LN(x + dense2(GELU(dense1 x)))                         intermediate, output
      -> h = LN(GELU(dense x))                                        cls.predictions.transform
      -> logits = h word^T + cls.predictions.bias                     decoder tied  (B, T, vocab)

Every LayerNorm has eps 1e-12; GELU is the exact erf form. Names are
Hugging Face's, so a BertForMaskedLM state dict loads as it is
(``from_official_state`` drops the tied decoder aliases and the buffers).
CRATE-BERT (whitebox.models.crate_lm) replaces each layer with MSSA and ISTA.
"""
import numpy as np

from ..backend import to_numpy
from ..functional import attention as A
from ..functional._blas import matmul_rows
from ..functional._checks import check_dout, check_positive_int, check_probability, is_int
from ..functional.embedding import check_ids
from ..nn import GELU, Dropout, Embedding, LayerNorm, Linear, Module, ModuleList
from ..nn.block import CAPTURE_KEYS
from ..nn.module import DropoutAttention
from ..nn.layers import _rng
from ..nn.transformer import head_bases, normal_init_
from .crate_lm import TokenModel, _check_mask_id, token_model_repr

EPS = 1e-12


class _DenseNorm(Module):
    """``dense`` then dropout, added to the residual, then ``LayerNorm`` (BertSelfOutput,
    BertOutput): forward(h, residual) = LN(residual + dropout(dense h))."""

    def __init__(self, d_in, dim, dropout, dtype, rng):
        super().__init__(dtype)
        self.dense = Linear(d_in, dim, dtype=dtype, seed=rng)
        self.LayerNorm = LayerNorm(dim, EPS, dtype=dtype)
        self.dropout = Dropout(dropout, dtype=dtype, seed=rng)

    def forward(self, h, residual):
        self._cache = True
        return self.LayerNorm(residual + self.dropout(self.dense(h)))

    def backward(self, dout):
        """Returns (d h, d residual)."""
        self._take_cache()
        ds = self.LayerNorm.backward(dout)
        return self.dense.backward(self.dropout.backward(ds)), ds


class _SelfAttention(DropoutAttention):
    """BertSelfAttention: separate ``query``, ``key``, ``value`` Linears, the shared core."""

    def __init__(self, dim, heads, dropout, dtype, rng):
        super().__init__(dtype)
        self.heads = heads
        self.query = Linear(dim, dim, dtype=dtype, seed=rng)
        self.key = Linear(dim, dim, dtype=dtype, seed=rng)
        self.value = Linear(dim, dim, dtype=dtype, seed=rng)
        self._init_attention(dropout, rng)

    def forward(self, x):
        q, k, v = (A.split_heads(m(x), self.heads) for m in (self.query, self.key, self.value))
        O, self._cache = A.sdpa_fast_forward(q, k, v, False, self.dropout, self.rng,
                                             self.training)
        self.last_attention = self._cache["attn"]
        return A.merge_heads(O)                                        # (B, T, d), a view

    def backward(self, dout):
        B, T, d = dout.shape
        parts, _ = A.heads_buffers(self.xp, B, self.heads, T, d // self.heads, 3, dout.dtype)
        dq, dk, dv = (A.merge_heads(g) for g in         # (B, T, d) each, views: no copy
                      A.sdpa_fast_backward(A.split_heads(dout, self.heads), self._take_cache(),
                                           out=parts))
        return self.query.backward(dq) + self.key.backward(dk) + self.value.backward(dv)


class _Attention(Module):
    def __init__(self, dim, heads, dropout, dtype, rng):
        super().__init__(dtype)
        setattr(self, "self", _SelfAttention(dim, heads, dropout, dtype, rng))
        self.output = _DenseNorm(dim, dim, dropout, dtype, rng)


class _Intermediate(Module):
    def __init__(self, dim, inter, dtype, rng):
        super().__init__(dtype)
        self.dense = Linear(dim, inter, dtype=dtype, seed=rng)


class BertLayer(Module):
    """x = LN(x + dense(attn x));  x = LN(x + dense2(GELU(dense1 x))), Hugging Face's names."""

    def __init__(self, dim, heads, inter, dropout=0.0, dtype="float32", seed=0):
        super().__init__(dtype)
        rng = _rng(seed)
        self.attention = _Attention(dim, heads, dropout, dtype, rng)
        self.intermediate = _Intermediate(dim, inter, dtype, rng)
        self.act = GELU(dtype=dtype)
        self.output = _DenseNorm(inter, dim, dropout, dtype, rng)

    def forward(self, x, capture=None):
        """x (B, T, d) -> (B, T, d). ``capture``: a dict of lists to append this layer's
        features to under CRATE's keys (as whitebox.nn.TransformerBlock, post-norm)."""
        att = self.attention
        core = getattr(att, "self")
        x_half = att.output(core(x), x)                                 # (B, T, d)
        self._cache = True
        hidden = self.act(self.intermediate.dense(x_half))
        out = self.output(hidden, x_half)
        if capture is not None:
            for key, value in zip(CAPTURE_KEYS, (x, core.last_attention, x_half, x_half,
                                                 hidden, out)):
                capture[key].append(value)
        return out

    def subspaces(self, part="v"):
        """U (K, d, p) of the ``part`` ("q", "k" or "v") Linear: U_k = W[k p:(k+1) p]^T."""
        core = getattr(self.attention, "self")
        names = dict(q="query", k="key", v="value")
        if part not in names:
            raise ValueError(f"part must be one of {tuple(names)}, got {part!r}")
        return head_bases(getattr(core, names[part]).param("weight"), core.heads, None)

    def backward(self, dout):
        self._take_cache()
        dh, dx = self.output.backward(dout)
        dx = dx + self.intermediate.dense.backward(self.act.backward(dh))
        att = self.attention
        dctx, dx = att.output.backward(dx)
        return dx + getattr(att, "self").backward(dctx)


class _Embeddings(Module):
    def __init__(self, vocab_size, block_size, type_vocab_size, dim, dropout, dtype, rng):
        super().__init__(dtype)
        self.word_embeddings = Embedding(vocab_size, dim, dtype=dtype, seed=rng)
        self.position_embeddings = Embedding(block_size, dim, dtype=dtype, seed=rng)
        self.token_type_embeddings = Embedding(type_vocab_size, dim, dtype=dtype, seed=rng)
        self.LayerNorm = LayerNorm(dim, EPS, dtype=dtype)
        self.dropout = Dropout(dropout, dtype=dtype, seed=rng)


class _Encoder(Module):
    def __init__(self, layers, dtype):
        super().__init__(dtype)
        self.layer = ModuleList(layers, dtype=dtype)


class _Trunk(Module):
    def __init__(self, embeddings, encoder, dtype):
        super().__init__(dtype)
        self.embeddings, self.encoder = embeddings, encoder


class _Transform(Module):
    def __init__(self, dim, dtype, rng):
        super().__init__(dtype)
        self.dense = Linear(dim, dim, dtype=dtype, seed=rng)
        self.act = GELU(dtype=dtype)
        self.LayerNorm = LayerNorm(dim, EPS, dtype=dtype)


class _Predictions(Module):
    def __init__(self, dim, vocab_size, dtype, rng):
        super().__init__(dtype)
        self.transform = _Transform(dim, dtype, rng)
        self.add_param("bias", np.zeros(vocab_size))


class _Cls(Module):
    def __init__(self, predictions, dtype):
        super().__init__(dtype)
        self.predictions = predictions


class BERT(TokenModel):
    """Hugging Face's BertForMaskedLM (absolute positions, no pooler).

    forward(idx (B, T), token_type_ids=None, capture=False) -> logits (B, T, vocab);
    backward(dlogits) accumulates every gradient (returns None).
    intermediate: the MLP width (default 4 dim); dropout: hidden and attention
    dropout (Hugging Face's two probabilities, one number here). mask_id: the
    vocabulary row that stands for a hidden token (default vocab_size - 1;
    [MASK] is 103 in bert-base-uncased), read by the masked-LM task.
    pad_token_id: Hugging Face's padding row (default 0, as BertConfig): it
    starts at zero and the lookup gives it no gradient (the tied decoder
    still does); None for a vocabulary without padding.
    """
    ATTENTION = "standard attention"           # the training header's word for it

    def __init__(self, vocab_size, block_size, dim, depth, heads, intermediate=None,
                 type_vocab_size=2, dropout=0.0, dtype="float32", seed=0, mask_id=None,
                 pad_token_id=0):
        super().__init__(dtype)
        intermediate = 4 * dim if intermediate is None else intermediate
        self.captured = None
        for name, v in (("vocab_size", vocab_size), ("block_size", block_size), ("dim", dim),
                        ("depth", depth), ("heads", heads), ("intermediate", intermediate),
                        ("type_vocab_size", type_vocab_size)):
            check_positive_int(name, v)
        if dim % heads:
            raise ValueError(f"dim ({dim}) must be divisible by heads ({heads})")
        check_probability("dropout", dropout)
        self.mask_id = _check_mask_id(vocab_size - 1 if mask_id is None else mask_id, vocab_size)
        if pad_token_id is not None and not (is_int(pad_token_id)
                                             and 0 <= pad_token_id < vocab_size):
            raise ValueError(f"pad_token_id must be None or an id in [0, {vocab_size}), "
                             f"got {pad_token_id!r}")
        self.pad_token_id = None if pad_token_id is None else int(pad_token_id)
        self.config = dict(vocab_size=vocab_size, block_size=block_size, dim=dim, depth=depth,
                           heads=heads, intermediate=intermediate,
                           type_vocab_size=type_vocab_size, dropout=dropout, dtype=self.dtype,
                           seed=seed, mask_id=self.mask_id, pad_token_id=self.pad_token_id)
        self.vocab_size, self.block_size, self.dim = vocab_size, block_size, dim
        self.type_vocab_size = type_vocab_size
        rng = _rng(seed)
        emb = _Embeddings(vocab_size, block_size, type_vocab_size, dim, dropout, dtype, rng)
        layers = [BertLayer(dim, heads, intermediate, dropout, dtype, rng) for _ in range(depth)]
        self.bert = _Trunk(emb, _Encoder(layers, dtype), dtype)
        self.cls = _Cls(_Predictions(dim, vocab_size, dtype, rng), dtype)
        # Hugging Face's _init_weights: N(0, 0.02^2) weights and embeddings, zero biases
        for _, m in self.named_modules():
            if isinstance(m, Linear):
                normal_init_(m, rng)
            elif isinstance(m, Embedding):
                m.param("weight")[...] = 0.02 * rng.standard_normal(m.param("weight").shape)
        if self.pad_token_id is not None:       # nn.Embedding(padding_idx=...): a zero row
            emb.word_embeddings.param("weight")[self.pad_token_id] = 0

    def forward(self, idx, token_type_ids=None, capture=False):
        """idx (B, T) ints, token_type_ids (B, T) ints or None (all 0) -> logits (B, T, vocab).
        With capture=True, ``self.captured`` holds per-layer lists under CRATE's keys."""
        self._check_idx(idx)
        xp = self.xp
        if token_type_ids is None:
            token_type_ids = xp.zeros(idx.shape, dtype=np.int64)
        elif tuple(token_type_ids.shape) != tuple(idx.shape):
            raise ValueError(f"token_type_ids have shape {tuple(token_type_ids.shape)}, "
                             f"expected {tuple(idx.shape)} (the shape of idx)")
        check_ids("token_type_ids", token_type_ids, self.type_vocab_size)
        e = self.bert.embeddings
        T = idx.shape[1]
        x = e.word_embeddings(idx) + e.position_embeddings.param("weight")[:T]   # (B, T, d)
        x += e.token_type_embeddings(token_type_ids)
        x = e.dropout(e.LayerNorm(x))
        self.captured = {k: [] for k in CAPTURE_KEYS} if capture else None
        for layer in self.bert.encoder.layer:
            x = layer(x, self.captured)
        t = self.cls.predictions.transform
        h = t.LayerNorm(t.act(t.dense(x)))                                      # (B, T, d)
        word = e.word_embeddings.param("weight")
        logits = matmul_rows(h, word.T) + self.cls.predictions.param("bias")    # (B, T, V)
        self._cache = (h, logits.shape, idx)
        return logits

    def backward(self, dlogits):
        """The reverse walk; the word table gets the decoder's dlogits^T h and the lookup's."""
        h, logits_shape, idx = self._take_cache()
        check_dout("BERT", dlogits, logits_shape)
        e, p = self.bert.embeddings, self.cls.predictions
        V, d = self.vocab_size, self.dim
        p._accumulate("bias", dlogits.reshape(-1, V).sum(axis=0))
        e.word_embeddings._accumulate("weight", dlogits.reshape(-1, V).T @ h.reshape(-1, d))
        dh = matmul_rows(dlogits, e.word_embeddings.param("weight"))          # (B, T, d)
        t = p.transform
        dx = t.dense.backward(t.act.backward(t.LayerNorm.backward(dh)))
        for layer in reversed(list(self.bert.encoder.layer)):
            dx = layer.backward(dx)
        dx = e.LayerNorm.backward(e.dropout.backward(dx))
        e.position_embeddings._grads["weight"][:dx.shape[1]] += dx.sum(axis=0)
        e.token_type_embeddings.backward(dx)
        if self.pad_token_id is not None:       # the lookup of [PAD] leaves its row alone
            dx = dx * (idx != self.pad_token_id)[..., None]
        e.word_embeddings.backward(dx)
        return None

    # ------------------------------------------------------------ official files
    def from_official_state(self, state):
        """A Hugging Face BertForMaskedLM (or BertForPreTraining) state dict -> this model's.

        Drops the tied aliases ``cls.predictions.decoder.weight`` / ``.bias``
        (checked equal to the word table and ``cls.predictions.bias``), the
        buffers ``bert.embeddings.position_ids`` / ``token_type_ids``, and the
        pooler and next-sentence head (``bert.pooler.*``, ``cls.seq_relationship.*``),
        which BertForMaskedLM does not have either.
        """
        state = dict(state)
        for alias, key in (("cls.predictions.decoder.weight",
                            "bert.embeddings.word_embeddings.weight"),
                           ("cls.predictions.decoder.bias", "cls.predictions.bias")):
            v = state.pop(alias, None)
            if v is not None and key in state and not np.array_equal(to_numpy(v),
                                                                     to_numpy(state[key])):
                raise ValueError(f"official state: {alias} differs from {key}, but the decoder "
                                 "is tied to it")
        for key in list(state):
            if key in ("bert.embeddings.position_ids", "bert.embeddings.token_type_ids") or \
                    key.startswith(("bert.pooler.", "cls.seq_relationship.")):
                del state[key]
        return state

    def to_official_state(self, state):
        """This model's state dict -> BertForMaskedLM's (adds the tied decoder aliases)."""
        state = dict(state)
        state["cls.predictions.decoder.weight"] = \
            state["bert.embeddings.word_embeddings.weight"].copy()
        state["cls.predictions.decoder.bias"] = state["cls.predictions.bias"].copy()
        return state

    def subspaces(self, layer, part="v"):
        """U (K, d, p) of layer ``layer``'s ``part`` projection, for Rc measures."""
        return self.bert.encoder.layer[layer].subspaces(part)

    def attention_maps(self):
        return [getattr(layer.attention, "self").last_attention
                for layer in self.bert.encoder.layer]

    def extra_repr(self):
        return token_model_repr(self.config, f"intermediate={self.config['intermediate']}")


def bert_base(**kw):
    """BERT-base (uncased vocabulary of 30,522, 512 positions, d 768, 12 layers of 12 heads,
    MLP 3072) with its MLM head: 109,514,298 parameters."""
    cfg = dict(vocab_size=30522, block_size=512, dim=768, depth=12, heads=12, mask_id=103)
    cfg.update(kw)
    return BERT(**cfg)
