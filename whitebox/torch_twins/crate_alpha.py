"""A PyTorch CRATE-alpha with the official module layout, for reference and interop.

This module imports PyTorch (pip install 'whitebox-crate[torch]'); nothing else
in whitebox imports it. ``TorchCRATEAlpha`` has the state-dict names of the
official UCSC-VLAA/CRATE-alpha torch_inference/model/crate_alpha.py and computes
what it computes (the ISTA steps written as the official einsums do them: the
LASSO gradient D^T (D z1 - x) as two products), with three arguments the
official file hard-codes made explicit: ``channels`` (official 3),
``expansion`` (4) and ``ista_step``/``ista_lambda`` (0.1, 0.1). It is the
autograd reference in tests and benchmarks:

    tm = torch_model_from(model)        # same weights, a torch.nn.Module
"""
try:
    import torch
except ImportError as e:  # say which extra brings it
    raise ImportError("whitebox.torch_twins.crate_alpha needs PyTorch, which is not installed: "
                      "pip install 'whitebox-crate[torch]'") from e
from torch import nn
from torch.nn import functional as F

from ._load import twin_of
from .crate import Attention, PreNorm, _pair


class OvercompleteISTABlock(nn.Module):
    """Two ISTA steps from zero against D (d, m), decoded by D1 (d, m)."""

    def __init__(self, d, expansion=4, eta=0.1, lmbda=0.1):
        super().__init__()
        self.eta, self.lmbda = eta, lmbda
        self.D = nn.Parameter(nn.init.kaiming_uniform_(torch.empty(d, expansion * d)))
        self.D1 = nn.Parameter(nn.init.kaiming_uniform_(torch.empty(d, expansion * d)))

    def forward(self, x):
        z1 = F.relu(self.eta * (x @ self.D) - self.eta * self.lmbda)           # (B, N, m)
        lasso_grad = (z1 @ self.D.t() - x) @ self.D                            # D^T (D z1 - x)
        z2 = F.relu(z1 - self.eta * lasso_grad - self.eta * self.lmbda)
        return z2 @ self.D1.t()                                                # (B, N, d)


class Transformer(nn.Module):
    def __init__(self, dim, depth, heads, dim_head, expansion=4, ista_step=0.1,
                 ista_lambda=0.1):
        super().__init__()
        self.layers = nn.ModuleList(
            nn.ModuleList([PreNorm(dim, Attention(dim, heads, dim_head, out_bias=False),
                                   eps=1e-6),
                           PreNorm(dim, OvercompleteISTABlock(dim, expansion, ista_step,
                                                              ista_lambda), eps=1e-6)])
            for _ in range(depth))

    def forward(self, x):
        for attn, ff in self.layers:
            x = attn(x) + x
            x = ff(x) + x
        return x


class TorchCRATEAlpha(nn.Module):
    """CRATE-alpha in PyTorch; same arguments as whitebox.models.CRATEAlpha."""

    def __init__(self, image_size, patch_size, num_classes, dim, depth, heads, dim_head=None,
                 channels=3, expansion=4, ista_step=0.1, ista_lambda=0.1, **_ignored):
        super().__init__()
        (ih, iw), (ph, pw) = _pair(image_size), _pair(patch_size)
        dim_head = dim // heads if dim_head is None else dim_head
        n = (ih // ph) * (iw // pw)
        self.conv1 = nn.Conv2d(channels, dim, kernel_size=(ph, pw), stride=(ph, pw), bias=True)
        self.pos_embedding = nn.Parameter(torch.randn(1, n + 1, dim))
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim))
        self.transformer = Transformer(dim, depth, heads, dim_head, expansion, ista_step,
                                       ista_lambda)
        self.mlp_head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, num_classes))

    def forward(self, img):
        x = self.conv1(img)                                   # (B, d, h, w)
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)   # (B, n, d)
        B, _, d = x.shape
        x = torch.cat([self.cls_token.expand(B, 1, d), x], dim=1) + self.pos_embedding
        x = self.transformer(x)
        return self.mlp_head(x[:, 0])


def torch_model_from(model):
    """A TorchCRATEAlpha with the configuration and weights of a whitebox CRATEAlpha."""
    if model.config.get("attention"):
        raise ValueError(f"the PyTorch twin computes the official attention only, got "
                         f"attention={model.config['attention']!r}")
    return twin_of(TorchCRATEAlpha, model)
