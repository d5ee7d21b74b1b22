"""A PyTorch CRATE-MAE with the official module layout (model/crate_ae/), for tests,
benchmarks and interop.

This module imports PyTorch (pip install 'whitebox-crate[torch]'); nothing else
in whitebox imports it. ``TorchCRATEMAE`` has the official state-dict names
and computes what the official ``MaskedAutoencoderViT`` with CRATE blocks
computes: a Conv2d patch embedding, the gather-and-unshuffle masking of the
official ``random_masking`` (or a given mask put in place), encoder blocks
``x = ISTA(LN(x + MSSA(LN x)))``, decoder blocks ``y = LN(x) W^T; x = y -
MSSA(LN y)``, and the masked loss. It generalises the official patchify to
any channel count and to rectangular images.

    tm = torch_mae_from(model)          # same weights, a torch.nn.Module
    loss, pred, mask = tm(images, noise=noise)
"""
try:
    import torch
except ImportError as e:  # say which extra brings it
    raise ImportError("whitebox.torch_twins.crate_mae needs PyTorch, which is not installed: "
                      "pip install 'whitebox-crate[torch]'") from e
from torch import nn

from ..functional.pos_embed import sincos_pos_embed_2d
from ._load import twin_of
from .crate import ISTA, Attention, PreNorm, _pair


class DecoderAttention(Attention):
    """MSSA with the official decoder's ``use_softmax`` switch."""

    def __init__(self, dim, heads, dim_head, use_softmax=True):
        super().__init__(dim, heads, dim_head)
        self.use_softmax = use_softmax

    def forward(self, x):
        B, N, _ = x.shape
        w = self.qkv(x).reshape(B, N, self.heads, -1).transpose(1, 2)   # (B, K, N, p)
        dots = w @ w.transpose(-1, -2) * self.scale
        attn = torch.softmax(dots, dim=-1) if self.use_softmax else dots
        return self.to_out((attn @ w).transpose(1, 2).reshape(B, N, -1))


class DecoderStep(nn.Module):
    """The official decoder ``FeedForward``: x W^T with a square, bias-free weight."""

    def __init__(self, dim):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(dim, dim))
        nn.init.kaiming_uniform_(self.weight)

    def forward(self, x):
        return nn.functional.linear(x, self.weight)


class EncoderBlock(nn.Module):
    def __init__(self, dim, heads, dim_head, ista_step=0.1, ista_lambda=0.5):
        super().__init__()
        self.layers = nn.ModuleList([nn.ModuleList([
            PreNorm(dim, Attention(dim, heads, dim_head)),
            PreNorm(dim, ISTA(dim, ista_step, ista_lambda))])])

    def forward(self, x):
        for attn, ff in self.layers:
            x = ff(attn(x) + x)
        return x


class DecoderBlock(nn.Module):
    def __init__(self, dim, heads, dim_head, use_softmax=True):
        super().__init__()
        self.layers = nn.ModuleList([nn.ModuleList([
            PreNorm(dim, DecoderStep(dim)),
            PreNorm(dim, DecoderAttention(dim, heads, dim_head, use_softmax))])])

    def forward(self, x):
        for ff, attn in self.layers:
            y = ff(x)
            x = y - attn(y)
        return x


class PatchEmbed(nn.Module):
    def __init__(self, channels, dim, patch):
        super().__init__()
        self.proj = nn.Conv2d(channels, dim, kernel_size=patch, stride=patch)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)                   # (B, L, d)


class TorchCRATEMAE(nn.Module):
    """CRATE-MAE in PyTorch; same arguments as whitebox.models.CRATEMAE."""

    def __init__(self, image_size, patch_size, dim, depth, heads, decoder_depth, channels=3,
                 decoder_heads=None, mask_ratio=0.75, norm_pix_loss=False, ista_step=0.1,
                 ista_lambda=0.5, decoder_softmax=True, **_ignored):
        super().__init__()
        (ih, iw), (ph, pw) = _pair(image_size), _pair(patch_size)
        decoder_heads = heads if decoder_heads is None else decoder_heads
        self.patch, self.grid = (ph, pw), (ih // ph, iw // pw)
        L = self.grid[0] * self.grid[1]
        self.mask_ratio, self.norm_pix_loss = mask_ratio, norm_pix_loss
        self.patch_embed = PatchEmbed(channels, dim, (ph, pw))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, L + 1, dim), requires_grad=False)
        self.blocks = nn.ModuleList(EncoderBlock(dim, heads, dim // heads, ista_step, ista_lambda)
                                    for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.decoder_embed = nn.Linear(dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, L + 1, dim), requires_grad=False)
        self.decoder_blocks = nn.ModuleList(
            DecoderBlock(dim, decoder_heads, dim // decoder_heads, decoder_softmax)
            for _ in range(decoder_depth))
        self.decoder_norm = nn.LayerNorm(dim, eps=1e-6)
        self.decoder_pred = nn.Linear(dim, ph * pw * channels)
        table = torch.from_numpy(sincos_pos_embed_2d(dim, self.grid)).float()[None]
        self.pos_embed.data.copy_(table)
        self.decoder_pos_embed.data.copy_(table)

    def patchify(self, imgs):
        B, C, H, W = imgs.shape
        ph, pw = self.patch
        x = imgs.reshape(B, C, H // ph, ph, W // pw, pw)
        x = torch.einsum("nchpwq->nhwpqc", x)
        return x.reshape(B, (H // ph) * (W // pw), ph * pw * C)

    def random_masking(self, x, noise):
        """The official gather-and-unshuffle masking, driven by the given noise."""
        B, L, D = x.shape
        keep = int(L * (1 - self.mask_ratio))
        ids_shuffle = torch.argsort(noise, dim=1)        # ascending: small is keep
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        x_kept = torch.gather(x, 1, ids_shuffle[:, :keep, None].repeat(1, 1, D))
        mask = torch.ones(B, L, dtype=x.dtype)
        mask[:, :keep] = 0
        mask = torch.gather(mask, 1, ids_restore)
        tokens = self.mask_token.repeat(B, L - keep, 1)
        x_ = torch.cat([x_kept, tokens], dim=1)
        x_ = torch.gather(x_, 1, ids_restore[:, :, None].repeat(1, 1, D))   # unshuffle
        return x_, mask

    def forward(self, imgs, noise=None, mask=None):
        x = self.patch_embed(imgs)
        if mask is None:
            if noise is None:
                noise = torch.rand(x.shape[0], x.shape[1])
            x, mask = self.random_masking(x, noise)
        else:
            mask = mask.to(x.dtype)
            x = x * (1 - mask[..., None]) + mask[..., None] * self.mask_token
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = x + self.decoder_pos_embed
        for blk in self.blocks:
            x = blk(x)
        x = self.norm(x)
        for blk in self.decoder_blocks:
            x = blk(x)
        pred = self.decoder_pred(self.decoder_norm(x))[:, 1:, :]
        return masked_pixel_loss(pred, self.patchify(imgs), mask, self.norm_pix_loss), pred, mask


def masked_pixel_loss(pred, target, mask, norm_pix_loss):
    """MAE's loss: the per-patch mean squared error over the masked patches (mask 1), the
    target normalised per patch first with ``norm_pix_loss``."""
    if norm_pix_loss:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + 1.e-6) ** .5
    loss = ((pred - target) ** 2).mean(dim=-1)
    return (loss * mask).sum() / mask.sum()


def torch_mae_from(model):
    """A TorchCRATEMAE with the configuration and weights of a whitebox CRATEMAE."""
    return twin_of(TorchCRATEMAE, model)
