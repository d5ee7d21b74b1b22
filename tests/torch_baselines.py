"""PyTorch twins of the standard baselines, written from the official code's structure.

Each twin keeps the official module names (timm's VisionTransformer,
nanoGPT's GPT, facebookresearch/mae's MaskedAutoencoderViT, Hugging Face's
BertForMaskedLM), so a whitebox state dict loads into it as it is. Used by
the tests only, in float64, where PyTorch is installed.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from whitebox.torch_twins.crate_mae import masked_pixel_loss


class Attention(nn.Module):
    def __init__(self, dim, heads, qkv_bias=True, proj_bias=True, causal=False, names=None):
        super().__init__()
        names = names or ("qkv", "proj")
        self.names, self.heads, self.causal = names, heads, causal
        setattr(self, names[0], nn.Linear(dim, 3 * dim, bias=qkv_bias))
        setattr(self, names[1], nn.Linear(dim, dim, bias=proj_bias))

    def forward(self, x):
        B, N, C = x.shape
        qkv = getattr(self, self.names[0])(x).reshape(B, N, 3, self.heads, C // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)            # (B, K, N, p) each
        att = (q @ k.transpose(-2, -1)) * (C // self.heads) ** -0.5
        if self.causal:
            mask = torch.ones(N, N, dtype=torch.bool).triu(1)
            att = att.masked_fill(mask, float("-inf"))
        y = (att.softmax(-1) @ v).transpose(1, 2).reshape(B, N, C)
        return getattr(self, self.names[1])(y)


class Mlp(nn.Module):
    def __init__(self, dim, hidden, bias=True, names=None):
        super().__init__()
        self.names = names or ("fc1", "fc2")
        setattr(self, self.names[0], nn.Linear(dim, hidden, bias=bias))
        setattr(self, self.names[1], nn.Linear(hidden, dim, bias=bias))

    def forward(self, x):
        return getattr(self, self.names[1])(F.gelu(getattr(self, self.names[0])(x)))


class TorchBlock(nn.Module):
    """timm's Block (pre-norm) or the post-norm arrangement, timm names."""

    def __init__(self, dim, heads, mlp_ratio=4.0, norm="pre", causal=False, eps=1e-6,
                 qkv_bias=True):
        super().__init__()
        self.norm = norm
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, heads, qkv_bias, True, causal)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x):
        if self.norm == "pre":
            x = x + self.attn(self.norm1(x))
            return x + self.mlp(self.norm2(x))
        x = self.norm1(x + self.attn(x))
        return self.norm2(x + self.mlp(x))


class TorchViT(nn.Module):
    """timm VisionTransformer (class token, learned positions, head on the class token)."""

    def __init__(self, image_size, patch_size, num_classes, dim, depth, heads, mlp_ratio=4.0,
                 channels=3, qkv_bias=True):
        super().__init__()
        n = (image_size // patch_size) ** 2
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(channels, dim, patch_size, patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, n + 1, dim))
        self.blocks = nn.ModuleList([TorchBlock(dim, heads, mlp_ratio, qkv_bias=qkv_bias)
                                     for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, images):
        x = self.patch_embed.proj(images).flatten(2).transpose(1, 2)   # (B, L, d)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.norm(x)[:, 0])


class _LayerNorm(nn.Module):
    """nanoGPT's LayerNorm with an optional bias."""

    def __init__(self, dim, bias):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None

    def forward(self, x):
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


class _GPTBlock(nn.Module):
    def __init__(self, dim, heads, bias):
        super().__init__()
        self.ln_1 = _LayerNorm(dim, bias)
        self.attn = Attention(dim, heads, bias, bias, True, ("c_attn", "c_proj"))
        self.ln_2 = _LayerNorm(dim, bias)
        self.mlp = Mlp(dim, 4 * dim, bias, ("c_fc", "c_proj"))

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class TorchGPT(nn.Module):
    """nanoGPT's GPT: transformer.{wte, wpe, h, ln_f}, lm_head tied to wte."""

    def __init__(self, vocab_size, block_size, dim, depth, heads, bias=True):
        super().__init__()
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(vocab_size, dim), wpe=nn.Embedding(block_size, dim),
            h=nn.ModuleList([_GPTBlock(dim, heads, bias) for _ in range(depth)]),
            ln_f=_LayerNorm(dim, bias)))
        self.lm_head = nn.Linear(dim, vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight

    def forward(self, idx):
        T = idx.shape[1]
        x = self.transformer.wte(idx) + self.transformer.wpe(torch.arange(T))
        for blk in self.transformer.h:
            x = blk(x)
        return self.lm_head(self.transformer.ln_f(x))


class TorchMAE(nn.Module):
    """facebookresearch/mae MaskedAutoencoderViT (timm Blocks with nn.LayerNorm, eps 1e-5)."""

    def __init__(self, image_size, patch_size, dim, depth, heads, decoder_dim, decoder_depth,
                 decoder_heads, channels=3, norm_pix_loss=False, mlp_ratio=4.0, eps=1e-5):
        super().__init__()
        n = (image_size // patch_size) ** 2
        self.p, self.norm_pix_loss = patch_size, norm_pix_loss
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(channels, dim, patch_size, patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, n + 1, dim), requires_grad=False)
        self.blocks = nn.ModuleList([TorchBlock(dim, heads, mlp_ratio, eps=eps)
                                     for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.decoder_embed = nn.Linear(dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, n + 1, decoder_dim),
                                              requires_grad=False)
        self.decoder_blocks = nn.ModuleList([TorchBlock(decoder_dim, decoder_heads, mlp_ratio,
                                                        eps=eps)
                                             for _ in range(decoder_depth)])
        self.decoder_norm = nn.LayerNorm(decoder_dim, eps=eps)
        self.decoder_pred = nn.Linear(decoder_dim, patch_size ** 2 * channels)

    def patchify(self, imgs):
        B, C, H, W = imgs.shape
        h = H // self.p
        x = imgs.reshape(B, C, h, self.p, h, self.p)
        x = torch.einsum("nchpwq->nhwpqc", x)
        return x.reshape(B, h * h, self.p ** 2 * C)

    def forward(self, imgs, noise, mask_ratio):
        x = self.patch_embed.proj(imgs).flatten(2).transpose(1, 2) + self.pos_embed[:, 1:]
        B, L, D = x.shape
        keep = int(L * (1 - mask_ratio))
        ids_shuffle = torch.argsort(noise, dim=1)
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        ids_keep = ids_shuffle[:, :keep]
        x = torch.gather(x, 1, ids_keep.unsqueeze(-1).repeat(1, 1, D))
        mask = torch.ones(B, L, dtype=x.dtype)
        mask[:, :keep] = 0
        mask = torch.gather(mask, 1, ids_restore)
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(B, -1, -1)
        x = torch.cat([cls, x], dim=1)
        for blk in self.blocks:
            x = blk(x)
        x = self.decoder_embed(self.norm(x))
        tokens = self.mask_token.repeat(B, ids_restore.shape[1] + 1 - x.shape[1], 1)
        x_ = torch.cat([x[:, 1:], tokens], dim=1)
        x_ = torch.gather(x_, 1, ids_restore.unsqueeze(-1).repeat(1, 1, x.shape[2]))
        x = torch.cat([x[:, :1], x_], dim=1) + self.decoder_pos_embed
        for blk in self.decoder_blocks:
            x = blk(x)
        pred = self.decoder_pred(self.decoder_norm(x))[:, 1:]
        return masked_pixel_loss(pred, self.patchify(imgs), mask, self.norm_pix_loss), pred, mask


class _BertSelf(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.query, self.key, self.value = (nn.Linear(dim, dim) for _ in range(3))


class _BertDenseNorm(nn.Module):
    def __init__(self, d_in, dim, eps):
        super().__init__()
        self.dense = nn.Linear(d_in, dim)
        self.LayerNorm = nn.LayerNorm(dim, eps=eps)


class _BertLayer(nn.Module):
    def __init__(self, dim, heads, inter, eps):
        super().__init__()
        self.heads = heads
        self.attention = nn.Module()
        self.attention.self = _BertSelf(dim)
        self.attention.output = _BertDenseNorm(dim, dim, eps)
        self.intermediate = nn.Module()
        self.intermediate.dense = nn.Linear(dim, inter)
        self.output = _BertDenseNorm(inter, dim, eps)

    def forward(self, x):
        B, N, C = x.shape
        s = self.attention.self
        q, k, v = (m(x).reshape(B, N, self.heads, -1).transpose(1, 2)
                   for m in (s.query, s.key, s.value))
        att = ((q @ k.transpose(-2, -1)) / math.sqrt(C // self.heads)).softmax(-1)
        ctx = (att @ v).transpose(1, 2).reshape(B, N, C)
        o = self.attention.output
        x = o.LayerNorm(o.dense(ctx) + x)
        h = F.gelu(self.intermediate.dense(x))
        return self.output.LayerNorm(self.output.dense(h) + x)


class TorchBERT(nn.Module):
    """Hugging Face BertForMaskedLM's computation and names (absolute positions, no pooler)."""

    def __init__(self, vocab_size, block_size, dim, depth, heads, intermediate, type_vocab_size=2,
                 eps=1e-12):
        super().__init__()
        self.bert = nn.Module()
        e = self.bert.embeddings = nn.Module()
        e.word_embeddings = nn.Embedding(vocab_size, dim)
        e.position_embeddings = nn.Embedding(block_size, dim)
        e.token_type_embeddings = nn.Embedding(type_vocab_size, dim)
        e.LayerNorm = nn.LayerNorm(dim, eps=eps)
        self.bert.encoder = nn.Module()
        self.bert.encoder.layer = nn.ModuleList([_BertLayer(dim, heads, intermediate, eps)
                                                 for _ in range(depth)])
        self.cls = nn.Module()
        p = self.cls.predictions = nn.Module()
        p.transform = _BertDenseNorm(dim, dim, eps)
        p.bias = nn.Parameter(torch.zeros(vocab_size))
        p.decoder = nn.Linear(dim, vocab_size)
        p.decoder.weight = e.word_embeddings.weight          # tied, as Hugging Face ties them
        p.decoder.bias = p.bias

    def forward(self, idx, token_type_ids):
        e = self.bert.embeddings
        T = idx.shape[1]
        x = e.word_embeddings(idx) + e.position_embeddings(torch.arange(T)) + \
            e.token_type_embeddings(token_type_ids)
        x = e.LayerNorm(x)
        for layer in self.bert.encoder.layer:
            x = layer(x)
        t = self.cls.predictions.transform
        h = t.LayerNorm(F.gelu(t.dense(x)))
        return self.cls.predictions.decoder(h)


def load_into(twin, state):
    """Copy a whitebox state dict (NumPy arrays) into a twin, in float64, strictly."""
    twin.double()
    twin.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in state.items()}, strict=True)
    return twin


def check_grads(model, twin, atol=1e-10, skip=()):
    """Every trainable whitebox gradient against the twin's .grad (relative to its scale)."""
    params = dict(twin.named_parameters(remove_duplicate=False))
    for name, g in model.grads().items():
        if name in skip:
            continue
        ref = params[name].grad.numpy()
        scale = max(1.0, float(abs(ref).max()))
        err = float(abs(g - ref).max()) / scale
        assert err < atol, f"{name}: gradient differs by {err:.3g}"
