"""The Vision Transformer (Dosovitskiy et al. 2021) as timm's VisionTransformer computes it.

    images (B, C, H, W)
      -> patch_embed.proj: conv with kernel = stride = patch, as a product   (B, L, d)
      -> prepend cls_token, add the learned pos_embed (1, 1 + L, d)          (B, N, d)
      -> depth blocks:  x = x + attn(norm1 x)      softmax(q k^T / sqrt(p)) v, fused qkv
                        x = x + mlp(norm2 x)       fc2(GELU(fc1 x)), hidden mlp_ratio d
      -> norm (LayerNorm, eps 1e-6) -> head on the class token               (B, classes)

Every name and shape is timm's (``patch_embed.proj.weight`` (d, C, p, p),
``cls_token``, ``pos_embed``, ``blocks.i.norm1/attn.qkv/attn.proj/norm2/
mlp.fc1/mlp.fc2``, ``norm``, ``head``), so a timm state dict loads as it is.
The CRATE classifier beside it (whitebox.models.crate) replaces the block
with MSSA (one projection U for q, k and v) and one ISTA step.
"""
import numpy as np

from ..functional._checks import check_positive_int
from ..nn import Dropout, LayerNorm, Linear, ModuleList, TransformerBlock
from ..nn.block import CAPTURE_KEYS
from ..nn.layers import _rng
from ..nn.patch_embed import PatchEmbed
from ._image import ImageModel


def trunc_normal(rng, shape, std=0.02):
    """N(0, std^2) cut at +-2 std (timm's trunc_normal_), drawn on the CPU in float64."""
    x = rng.standard_normal(shape)
    bad = np.abs(x) > 2
    while bad.any():
        x[bad] = rng.standard_normal(int(bad.sum()))
        bad = np.abs(x) > 2
    return x * std


def init_linears(module, rng, std=0.02):
    """timm's init for every Linear below ``module``: weight trunc-normal(std), bias 0."""
    for _, m in module.named_modules():
        if isinstance(m, Linear):
            m.param("weight")[...] = trunc_normal(rng, m.param("weight").shape, std)
            if m.has_bias:
                m.param("bias")[...] = 0


class ViT(ImageModel):
    """timm's VisionTransformer (class token, learned positions, pre-norm blocks).

    forward(images (B, channels, H, W), capture=False) -> logits (B, num_classes);
    backward(dlogits) accumulates every gradient and returns d images.
    With capture=True, ``self.captured`` holds per-block lists under CRATE's
    keys (whitebox.nn.transformer), and ``subspaces(l)`` gives the heads'
    value bases, so whitebox.rate.layer_measures measures ViT as it does CRATE.
    dropout: timm's drop_rate (after the positions, the attention projection
    and the MLP); attn_drop on the attention weights.
    """
    ATTENTION = "standard attention"           # the training header's word for it

    def __init__(self, image_size, patch_size, num_classes, dim, depth, heads, mlp_ratio=4.0,
                 channels=3, qkv_bias=True, dropout=0.0, attn_drop=0.0, dtype="float32", seed=0):
        super().__init__(dtype)
        for name, v in (("num_classes", num_classes), ("dim", dim), ("depth", depth),
                        ("heads", heads)):
            check_positive_int(name, v)
        self._set_geometry(image_size, patch_size, channels)
        self.config = dict(image_size=image_size, patch_size=patch_size, num_classes=num_classes,
                           dim=dim, depth=depth, heads=heads, mlp_ratio=mlp_ratio,
                           channels=channels, qkv_bias=qkv_bias, dropout=dropout,
                           attn_drop=attn_drop, dtype=self.dtype, seed=seed)
        self.dim = dim
        self.captured = None
        rng = _rng(seed)
        self.patch_embed = PatchEmbed(channels, dim, patch_size, dtype=dtype, seed=rng)
        self.add_param("cls_token", 1e-6 * rng.standard_normal((1, 1, dim)))
        self.add_param("pos_embed", trunc_normal(rng, (1, 1 + self.num_patches, dim)))
        self.pos_drop = Dropout(dropout, dtype=dtype, seed=rng)
        self.blocks = ModuleList([TransformerBlock(dim, heads, mlp_ratio, qkv_bias, eps=1e-6,
                                                   dropout=dropout, attn_drop=attn_drop,
                                                   dtype=dtype, seed=rng)
                                  for _ in range(depth)], dtype=dtype)
        self.norm = LayerNorm(dim, eps=1e-6, dtype=dtype)
        self.head = Linear(dim, num_classes, dtype=dtype, seed=rng)
        init_linears(self.blocks, rng)
        init_linears(self.head, rng)

    def forward_features(self, images, capture=False):
        """images (B, C, H, W) -> the normalised tokens (B, 1 + L, d)."""
        images = self._images(images)
        x = self._tokens(self.patch_embed(images), pos="pos_embed")    # (B, N, d)
        x = self.pos_drop(x)
        self.captured = {k: [] for k in CAPTURE_KEYS} if capture else None
        for block in self.blocks:
            x = block(x, self.captured)
        return self.norm(x)

    def backward_features(self, dx):
        """The reverse walk of forward_features: dx (B, 1 + L, d) -> d images."""
        dx = self.norm.backward(dx)
        for block in reversed(list(self.blocks)):
            dx = block.backward(dx)
        dx = self.pos_drop.backward(dx)
        return self.patch_embed.backward(self._tokens_backward(dx, pos="pos_embed"))

    def forward(self, images, capture=False):
        """images (B, C, H, W) -> logits (B, num_classes), the head on the class token."""
        x = self.forward_features(images, capture)                   # (B, N, d)
        logits = self.head(x[:, 0])
        self._cache = (x.shape, logits.shape)
        return logits

    def backward(self, dlogits):
        """Accumulate every parameter gradient; return the gradient w.r.t. the images."""
        x_shape, logits_shape = self._take_cache()
        self._check_upstream("dlogits", dlogits, logits_shape, op="ViT")
        dx = self.xp.zeros(x_shape, dtype=dlogits.dtype)
        dx[:, 0] = self.head.backward(dlogits)                       # (B, d)
        return self.backward_features(dx)

    def attention_maps(self):
        """Attention of every block from the last forward: list of (B, K, N, N)."""
        return [block.attn.last_attention for block in self.blocks]

    def subspaces(self, layer, part="v"):
        """U (K, d, p) of block ``layer``'s ``part`` of qkv ("v": the values), for
        whitebox.rate.measure_compression."""
        return self.blocks[layer].subspaces(part)

    def extra_repr(self):
        c = self.config
        return (f"image_size={c['image_size']}, patch_size={c['patch_size']}, dim={c['dim']}, "
                f"depth={c['depth']}, heads={c['heads']}")


def _imagenet(dim, heads, num_classes, kw):
    cfg = dict(image_size=224, patch_size=16, num_classes=num_classes, dim=dim, depth=12,
               heads=heads)
    cfg.update(kw)
    return ViT(**cfg)


def vit_tiny(num_classes=1000, **kw):
    """ViT-Ti/16: d 192, depth 12, 3 heads (5,717,416 parameters at 1000 classes)."""
    return _imagenet(192, 3, num_classes, kw)


def vit_small(num_classes=1000, **kw):
    """ViT-S/16: d 384, depth 12, 6 heads (22,050,664 parameters)."""
    return _imagenet(384, 6, num_classes, kw)


def vit_base(num_classes=1000, **kw):
    """ViT-B/16: d 768, depth 12, 12 heads (86,567,656 parameters)."""
    return _imagenet(768, 12, num_classes, kw)
