"""A PyTorch CRATE with the official module layout, for interop and reference.

This module imports PyTorch (install the extra: pip install 'whitebox-crate[torch]');
nothing else in whitebox imports it. ``TorchCRATE`` has the official
state-dict names and computes what the official model/crate.py computes
(the ISTA step as three products, attention with q = k = v), so it serves
as the autograd reference in tests and benchmarks, and as the way to take a
whitebox model to PyTorch's distributed tools and back:

    tm = torch_model_from(model)        # same weights, a torch.nn.Module
    model.load_state_dict({k: v.detach().numpy() for k, v in tm.state_dict().items()})
"""
try:
    import torch
except ImportError as e:  # say which extra brings it
    raise ImportError("whitebox.torch_twins.crate needs PyTorch, which is not installed: "
                      "pip install 'whitebox-crate[torch]'") from e
from torch import nn
from torch.nn import functional as F

from ._load import twin_of


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


class PreNorm(nn.Module):
    def __init__(self, dim, fn, eps=1e-5):        # CRATE-alpha's official PreNorm: eps 1e-6
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.fn = fn

    def forward(self, x):
        return self.fn(self.norm(x))


class Attention(nn.Module):
    """MSSA: one bias-free projection as query, key and value (CRATE-alpha: out_bias=False)."""

    def __init__(self, dim, heads, dim_head, dropout=0.0, out_bias=True):
        super().__init__()
        inner = heads * dim_head
        self.heads, self.scale = heads, dim_head ** -0.5
        self.qkv = nn.Linear(dim, inner, bias=False)
        self.drop = nn.Dropout(dropout)
        self.to_out = (nn.Sequential(nn.Linear(inner, dim, bias=out_bias), nn.Dropout(dropout))
                       if not (heads == 1 and dim_head == dim) else nn.Identity())

    def forward(self, x):
        B, N, _ = x.shape
        w = self.qkv(x).reshape(B, N, self.heads, -1).transpose(1, 2)   # (B, K, N, p)
        attn = self.drop(torch.softmax(w @ w.transpose(-1, -2) * self.scale, dim=-1))
        return self.to_out((attn @ w).transpose(1, 2).reshape(B, N, -1))


class ISTA(nn.Module):
    """ReLU(x + eta (x W - x W^T W) - eta lambda), computed as three products."""

    def __init__(self, dim, step_size=0.1, lambd=0.1):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(dim, dim))
        nn.init.kaiming_uniform_(self.weight)
        self.step_size, self.lambd = step_size, lambd

    def forward(self, x):
        dtd_x = F.linear(F.linear(x, self.weight), self.weight.t())    # x W^T W
        dt_x = F.linear(x, self.weight.t())                            # x W
        return F.relu(x + self.step_size * (dt_x - dtd_x) - self.step_size * self.lambd)


class Transformer(nn.Module):
    def __init__(self, dim, depth, heads, dim_head, dropout=0.0, ista_step=0.1,
                 ista_lambda=0.1):
        super().__init__()
        self.layers = nn.ModuleList(
            nn.ModuleList([PreNorm(dim, Attention(dim, heads, dim_head, dropout)),
                           PreNorm(dim, ISTA(dim, ista_step, ista_lambda))])
            for _ in range(depth))

    def forward(self, x):
        for attn, ista in self.layers:
            x = ista(attn(x) + x)
        return x


class TorchCRATE(nn.Module):
    """The CRATE classifier in PyTorch; same arguments as whitebox.models.CRATE."""

    def __init__(self, image_size, patch_size, num_classes, dim, depth, heads, dim_head=64,
                 channels=3, pool="cls", ista_step=0.1, ista_lambda=0.1, dropout=0.0,
                 emb_dropout=0.0, **_ignored):
        super().__init__()
        (ih, iw), (ph, pw) = _pair(image_size), _pair(patch_size)
        self.patch = (ph, pw)
        n = (ih // ph) * (iw // pw)
        patch_dim = channels * ph * pw
        self.to_patch_embedding = nn.Sequential(
            nn.Identity(), nn.LayerNorm(patch_dim), nn.Linear(patch_dim, dim), nn.LayerNorm(dim))
        self.pos_embedding = nn.Parameter(torch.randn(1, n + 1, dim))
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim))
        self.dropout = nn.Dropout(emb_dropout)
        self.transformer = Transformer(dim, depth, heads, dim_head, dropout, ista_step,
                                       ista_lambda)
        self.pool = pool
        self.mlp_head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, num_classes))

    def patchify(self, img):
        B, C, H, W = img.shape
        ph, pw = self.patch
        x = img.reshape(B, C, H // ph, ph, W // pw, pw).permute(0, 2, 4, 3, 5, 1)
        return x.reshape(B, (H // ph) * (W // pw), ph * pw * C)          # (B, n, p1 p2 C)

    def forward(self, img):
        x = self.to_patch_embedding(self.patchify(img))
        B, _, d = x.shape
        x = torch.cat([self.cls_token.expand(B, 1, d), x], dim=1) + self.pos_embedding
        x = self.transformer(self.dropout(x))
        x = x[:, 0] if self.pool == "cls" else x.mean(dim=1)
        return self.mlp_head(x)


def torch_model_from(model):
    """A TorchCRATE with the configuration and weights of a whitebox CRATE."""
    return twin_of(TorchCRATE, model)
