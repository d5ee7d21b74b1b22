"""CRATE-alpha, computed as the official torch inference model computes it.

(Yang et al., "Scaling White-Box Transformers for Vision", 2024;
UCSC-VLAA/CRATE-alpha, torch_inference/model/crate_alpha.py.)

    images (B, C, H, W)
      -> conv1 (kernel = stride = patch, with bias)           (B, n, d), no stem LayerNorm
      -> prepend cls_token, add pos_embedding                 (B, N, d), N = n + 1
      -> L layers:  Z^{l+1/2} = Z^l + MSSA(LN1(Z^l))          to_out without bias
                    z = LN2(Z^{l+1/2})
                    c1 = ReLU(eta z D - eta lambda)
                    c2 = ReLU(c1 + eta (z D - c1 D^T D) - eta lambda)
                    Z^{l+1} = Z^{l+1/2} + c2 D1^T             residual round the ISTA too
      -> LayerNorm(x[:, 0]) -> Linear                         mlp_head (cls pooling)

Against CRATE: an overcomplete dictionary D (d, expansion d) with two ISTA
steps from zero, a separate decoder D1, a residual round the sparse coding,
no bias on the attention's output projection, no LayerNorms round the patch
embedding. LayerNorm eps 1e-6 in the blocks, 1e-5 in mlp_head.0.
"""
from ..functional._checks import check_positive_int
from ..nn import ModuleList
from ..nn.alpha_layers import AlphaLayer
from ..nn.patch_embed import PatchConv
from ..nn.crate_layers import CAPTURE_KEYS, attention_options
from ..nn.layers import _rng
from ._image import ImageModel, classifier_head
from .crate import LayerStack


class AlphaTransformer(LayerStack):
    """``depth`` CRATE-alpha layers named ``layers.i``."""

    def __init__(self, dim, depth, heads, dim_head, expansion=4, ista_step=0.1,
                 ista_lambda=0.1, dtype="float32", seed=0, attention=None):
        super().__init__(dtype)
        rng = _rng(seed)
        self.layers = ModuleList([AlphaLayer(dim, heads, dim_head, expansion, ista_step,
                                             ista_lambda, dtype=dtype, seed=rng,
                                             attention=attention)
                                  for _ in range(depth)], dtype=dtype)


class CRATEAlpha(ImageModel):
    """The CRATE-alpha vision classifier, official architecture and state-dict names.

    Inputs of forward: images (B, channels, H, W) with (H, W) = image_size.
    Returns: logits (B, num_classes). dim_head None means dim // heads.
    expansion: the dictionary has expansion * dim atoms (official 4).
    attention: None (the official MSSA) or the options of whitebox.nn.MSSA.
    """

    def __init__(self, image_size, patch_size, num_classes, dim, depth, heads, dim_head=None,
                 channels=3, expansion=4, ista_step=0.1, ista_lambda=0.1, dtype="float32",
                 seed=0, attention=None):
        super().__init__(dtype)
        self._set_geometry(image_size, patch_size, channels)
        for name, v in (("num_classes", num_classes), ("dim", dim), ("depth", depth),
                        ("heads", heads)):
            check_positive_int(name, v)
        if dim_head is None:
            if dim % heads:
                raise ValueError(f"dim={dim} is not divisible by heads={heads}: pass dim_head")
            dim_head = dim // heads
        check_positive_int("dim_head", dim_head)
        expansion = check_positive_int("expansion", expansion, " (atoms per dimension of the "
                                       "dictionary D, official 4)")
        attention = attention_options(attention)
        self.config = dict(image_size=image_size, patch_size=patch_size,
                           num_classes=num_classes, dim=dim, depth=depth, heads=heads,
                           dim_head=dim_head, channels=channels, expansion=expansion,
                           ista_step=ista_step, ista_lambda=ista_lambda, dtype=self.dtype,
                           seed=seed)
        if attention:
            self.config["attention"] = attention
        self.dim = dim
        rng = _rng(seed)

        self.conv1 = PatchConv(channels, dim, self.patch_hw, dtype=dtype, seed=rng)
        self.add_param("pos_embedding", rng.standard_normal((1, self.num_patches + 1, dim)))
        self.add_param("cls_token", rng.standard_normal((1, 1, dim)))
        self.transformer = AlphaTransformer(dim, depth, heads, dim_head, expansion,
                                            ista_step, ista_lambda, dtype=dtype, seed=rng,
                                            attention=attention)
        self.mlp_head = classifier_head(dim, num_classes, dtype, rng, eps=1e-5)
        self.captured = None

    def forward(self, images, capture=False):
        """images (B, C, H, W) -> logits (B, num_classes).

        With capture=True, ``self.captured`` holds per-layer lists under CRATE's
        keys: "mssa_in", "attention", "z_half", "ista_in", "code" (the sparse
        code c2, (B, N, expansion d), whose sparsity whitebox.rate.layer_measures
        reads) and "z" (the layer output Z^{l+1} = Z^{l+1/2} + c2 D1^T).
        """
        images = self._images(images)
        x = self._tokens(self.conv1(images))                       # (B, N, d)
        self.captured = {k: [] for k in CAPTURE_KEYS} if capture else None
        return self._classify(self.transformer(x, self.captured))  # cls pooling

    def backward(self, dlogits):
        """Accumulate every parameter gradient; return the gradient w.r.t. the images."""
        dx = self.transformer.backward(self._classify_backward(dlogits))
        return self.conv1.backward(self._tokens_backward(dx))

    def extra_repr(self):
        c = self.config
        return (f"image_size={c['image_size']}, patch_size={c['patch_size']}, "
                f"dim={c['dim']}, depth={c['depth']}, heads={c['heads']}, "
                f"dim_head={c['dim_head']}, expansion={c['expansion']}")


def _config(image_size, patch_size, dim, depth, heads, num_classes, kw):
    cfg = dict(image_size=image_size, patch_size=patch_size, num_classes=num_classes, dim=dim,
               depth=depth, heads=heads, dim_head=dim // heads)
    cfg.update(kw)
    return CRATEAlpha(**cfg)


def crate_alpha_tiny(num_classes=10, **kw):
    """A laptop size for 28 x 28 single-channel images: d 64, depth 4, 4 heads, patch 4
    (169,994 parameters at 10 classes)."""
    kw.setdefault("channels", 1)
    return _config(28, 4, 64, 4, 4, num_classes, kw)


def crate_alpha_small(num_classes=10, **kw):
    """A laptop size for 32 x 32 colour images: d 192, depth 6, 6 heads, patch 4
    (2,240,842 parameters at 10 classes)."""
    return _config(32, 4, 192, 6, 6, num_classes, kw)


def crate_alpha_base16(num_classes=1000, **kw):
    """CRATE-alpha-B/16: d 768, depth 12, 12 heads, patch 16, 224 px (72,328,936 parameters)."""
    return _config(224, 16, 768, 12, 12, num_classes, kw)


def crate_alpha_large14(num_classes=1000, **kw):
    """CRATE-alpha-L/14: d 1024, depth 24, 16 heads, patch 14, 224 px (253,650,920 parameters)."""
    return _config(224, 14, 1024, 24, 16, num_classes, kw)
