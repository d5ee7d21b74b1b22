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

from ..backend import backend_name
from ..functional._checks import check_array, check_dout, check_finite, check_positive_int
from ..nn import Dropout, LayerNorm, Linear, Module, ModuleList, TransformerBlock
from ..nn.layers import _rng
from ..nn.patch_embed import PatchEmbed


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


def check_images(model, images, channels, image_hw):
    """images must be a finite (B, channels, H, W) float batch on the model's backend."""
    xp = check_array("images", images, ndim=4)
    if tuple(images.shape[1:]) != (channels,) + tuple(image_hw):
        raise ValueError(f"images have shape {tuple(images.shape)}, expected (B, {channels}, "
                         f"{image_hw[0]}, {image_hw[1]})")
    if xp is not model.xp:
        raise TypeError(f"images are {backend_name(images)} arrays but the model lives on "
                        f"{model.backend}: move them with whitebox.to_device")
    check_finite("images", images)
    return xp


class ViT(Module):
    """timm's VisionTransformer (class token, learned positions, pre-norm blocks).

    forward(images (B, channels, H, W)) -> logits (B, num_classes);
    backward(dlogits) accumulates every gradient and returns d images.
    dropout: timm's drop_rate (after the positions, the attention projection
    and the MLP); attn_drop on the attention weights.
    """

    def __init__(self, image_size, patch_size, num_classes, dim, depth, heads, mlp_ratio=4.0,
                 channels=3, qkv_bias=True, dropout=0.0, attn_drop=0.0, dtype="float32", seed=0):
        super().__init__(dtype)
        for name, v in (("image_size", image_size), ("patch_size", patch_size),
                        ("num_classes", num_classes), ("dim", dim), ("depth", depth),
                        ("heads", heads), ("channels", channels)):
            check_positive_int(name, v)
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} is not divisible by patch_size "
                             f"{patch_size}")
        self.config = dict(image_size=image_size, patch_size=patch_size, num_classes=num_classes,
                           dim=dim, depth=depth, heads=heads, mlp_ratio=mlp_ratio,
                           channels=channels, qkv_bias=qkv_bias, dropout=dropout,
                           attn_drop=attn_drop, dtype=self.dtype, seed=seed)
        self.image_hw, self.channels, self.dim = (image_size, image_size), channels, dim
        self.num_patches = (image_size // patch_size) ** 2
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

    def forward_features(self, images):
        """images (B, C, H, W) -> the normalised tokens (B, 1 + L, d)."""
        xp = check_images(self, images, self.channels, self.image_hw)
        x = self.patch_embed(images.astype(self.dtype, copy=False))    # (B, L, d)
        B, L, d = x.shape
        cls = xp.broadcast_to(self._params["cls_token"], (B, 1, d))
        x = xp.concatenate([cls, x], axis=1) + self._params["pos_embed"]  # (B, N, d)
        x = self.pos_drop(x)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def backward_features(self, dx):
        """The reverse walk of forward_features: dx (B, 1 + L, d) -> d images."""
        dx = self.norm.backward(dx)
        for block in reversed(list(self.blocks)):
            dx = block.backward(dx)
        dx = self.pos_drop.backward(dx)
        self._accumulate("pos_embed", dx.sum(axis=0, keepdims=True))
        self._accumulate("cls_token", dx[:, :1].sum(axis=0, keepdims=True))
        return self.patch_embed.backward(dx[:, 1:])

    def forward(self, images):
        """images (B, C, H, W) -> logits (B, num_classes), the head on the class token."""
        x = self.forward_features(images)                            # (B, N, d)
        logits = self.head(x[:, 0])
        self._cache = (x.shape, logits.shape)
        return logits

    def backward(self, dlogits):
        """Accumulate every parameter gradient; return the gradient w.r.t. the images."""
        x_shape, logits_shape = self._take_cache()
        check_dout("ViT", dlogits, logits_shape)
        dx = self.xp.zeros(x_shape, dtype=dlogits.dtype)
        dx[:, 0] = self.head.backward(dlogits)                       # (B, d)
        return self.backward_features(dx)

    def attention_maps(self):
        """Attention of every block from the last forward: list of (B, K, N, N)."""
        return [block.attn.last_attention for block in self.blocks]

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
