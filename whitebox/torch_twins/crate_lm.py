"""PyTorch twins of the two official causal CRATE files, for reference tests and benchmarks.

This module imports PyTorch (pip install 'whitebox-crate[torch]'); nothing
else in whitebox imports it. ``TorchCRATEGPT(variant="plain")`` has the
module layout of the official CRATE pull request (model/crate_gpt.py): the
attention written out with a registered lower-triangular ``attn.bias``
buffer, the square ISTA, no final LayerNorm. ``variant="overcomplete"`` has
the layout of crate-lm's crate_overcomplete.py: attention through
scaled_dot_product_attention(is_causal=True) with no buffer, the two-step
overcomplete ISTA decoded with the same weight, and ``transformer.ln_f``.
Both tie ``lm_head.weight`` to ``transformer.wte.weight``, so their state
dicts are the official files' state dicts:

    tm = torch_lm_from(model)     # same weights, via model.to_official_state
    model.load_state_dict(model.from_official_state(
        {k: v.detach().numpy() for k, v in tm.state_dict().items()}))

``causal=False`` drops the mask (no buffer): the twin of CRATEBERT.
"""
import math

try:
    import torch
except ImportError as e:
    raise ImportError("whitebox.torch_twins.crate_lm needs PyTorch, which is not installed: "
                      "pip install 'whitebox-crate[torch]'") from e
from torch import nn
from torch.nn import functional as F

from ._load import twin_of


class LayerNorm(nn.Module):
    def __init__(self, ndim):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim))

    def forward(self, x):
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


class CausalSelfAttention(nn.Module):
    """MSSA: c_attn (no bias) is query, key and value; c_proj with bias."""

    def __init__(self, dim, heads, block_size, dropout, written_out, causal):
        super().__init__()
        self.c_attn = nn.Linear(dim, dim, bias=False)
        self.c_proj = nn.Linear(dim, dim, bias=True)
        self.attn_dropout = nn.Dropout(dropout)
        self.resid_dropout = nn.Dropout(dropout)
        self.n_head, self.dropout, self.causal = heads, dropout, causal
        self.written_out = written_out
        if written_out and causal:    # the plain file keeps the mask as a buffer
            self.register_buffer("bias", torch.tril(torch.ones(block_size, block_size))
                                 .view(1, 1, block_size, block_size))

    def forward(self, x):
        B, T, C = x.size()
        w = self.c_attn(x).view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        if self.written_out:
            att = (w @ w.transpose(-2, -1)) * (1.0 / math.sqrt(w.size(-1)))
            if self.causal:
                att = att.masked_fill(self.bias[:, :, :T, :T] == 0, float("-inf"))
            att = self.attn_dropout(F.softmax(att, dim=-1))
            y = att @ w
        else:
            y = F.scaled_dot_product_attention(
                w, w, w, attn_mask=None, dropout_p=self.dropout if self.training else 0,
                is_causal=self.causal)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class PlainISTA(nn.Module):
    """ReLU(x + eta (x W - x W^T W) - eta lambda), W (d, d), as three products."""

    def __init__(self, dim, step_size, lambd):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(dim, dim))
        nn.init.kaiming_uniform_(self.weight)
        self.step_size, self.lambd = step_size, lambd

    def forward(self, x):
        grad_1 = F.linear(F.linear(x, self.weight), self.weight.t())
        grad_2 = F.linear(x, self.weight.t())
        return F.relu(x + self.step_size * (grad_2 - grad_1) - self.step_size * self.lambd)


class OvercompleteISTA(nn.Module):
    """Two ISTA steps from zero against W^T (W (m, d)), decoded with W."""

    def __init__(self, dim, expansion, step_size, lambd):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(expansion * dim, dim))
        nn.init.kaiming_uniform_(self.weight)
        self.step_size, self.lambd = step_size, lambd

    def forward(self, x):
        eta, lam = self.step_size, self.lambd
        z_init = F.relu(eta * F.linear(x, self.weight) - eta * lam)
        grad_1 = F.linear(F.linear(z_init, self.weight.t()), self.weight)
        grad_2 = F.linear(x, self.weight)
        code = F.relu(z_init + eta * (grad_2 - grad_1) - eta * lam)
        return F.linear(code, self.weight.t())


class Block(nn.Module):
    def __init__(self, dim, heads, block_size, variant, expansion, ista_step, ista_lambda,
                 dropout, causal):
        super().__init__()
        self.prenorm_1 = LayerNorm(dim)
        self.attn = CausalSelfAttention(dim, heads, block_size, dropout,
                                        written_out=variant == "plain", causal=causal)
        self.prenorm_2 = LayerNorm(dim)
        self.ista = (PlainISTA(dim, ista_step, ista_lambda) if variant == "plain" else
                     OvercompleteISTA(dim, expansion, ista_step, ista_lambda))

    def forward(self, x):
        x = x + self.attn(self.prenorm_1(x))
        return self.ista(self.prenorm_2(x))


class TorchCRATEGPT(nn.Module):
    """The official causal CRATE (either file); same arguments as whitebox's CRATEGPT.

    forward(idx) returns the logits at every position, (B, T, vocab).
    """

    def __init__(self, vocab_size, block_size, dim, depth, heads, variant="overcomplete",
                 expansion=4, ista_step=0.1, ista_lambda=0.1, dropout=0.0, causal=True,
                 **_ignored):
        super().__init__()
        self.block_size, self.variant = block_size, variant
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(vocab_size, dim), wpe=nn.Embedding(block_size, dim),
            drop=nn.Dropout(dropout),
            h=nn.ModuleList([Block(dim, heads, block_size, variant, expansion, ista_step,
                                   ista_lambda, dropout, causal) for _ in range(depth)])))
        if variant == "overcomplete":
            self.transformer["ln_f"] = LayerNorm(dim)
        self.lm_head = nn.Linear(dim, vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight     # tied
        for mod in self.modules():                            # GPT-2 init
            if isinstance(mod, (nn.Linear, nn.Embedding)):
                nn.init.normal_(mod.weight, 0.0, 0.02)
                if getattr(mod, "bias", None) is not None:
                    nn.init.zeros_(mod.bias)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * depth))

    def forward(self, idx):
        B, T = idx.size()
        if T > self.block_size:
            raise ValueError(f"sequence of length {T} exceeds block_size {self.block_size}")
        pos = torch.arange(T, device=idx.device)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
        for block in self.transformer.h:
            x = block(x)
        if self.variant == "overcomplete":
            x = self.transformer.ln_f(x)
        return self.lm_head(x)


def torch_lm_from(model):
    """A TorchCRATEGPT with the configuration and weights of a CRATEGPT or CRATEBERT."""
    return twin_of(TorchCRATEGPT, model, model.to_official_state(model.state_dict()),
                   causal=model.causal)
