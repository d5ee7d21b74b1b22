"""The CRATE classifier, computed exactly as the official model/crate.py computes it.

    images (B, C, H, W)
      -> patches (B, n, p1 p2 C) -> LayerNorm -> Linear -> LayerNorm      to_patch_embedding
      -> prepend cls_token, add pos_embedding                             (B, N, d), N = n + 1
      -> L layers:  Z^{l+1/2} = Z^l + MSSA(LN1(Z^l))                      compression
                    Z^{l+1}   = ISTA(LN2(Z^{l+1/2}))                      sparsification
      -> pool (cls token or mean) -> LayerNorm -> Linear                  mlp_head

Parameter names and shapes are the official state-dict names, so official
weights load as they are (see whitebox.interop for .pth files).
"""

from ..backend import backend_name
from ..functional._checks import check_array, check_dout, check_finite, check_positive_int
from ..nn import CRATELayer, Dropout, LayerNorm, Linear, Module, ModuleList, Patchify, \
    Sequential
from ..nn.crate_layers import CAPTURE_KEYS, attention_options
from ..nn.layers import _rng



def _pair(name, v):
    """An int n means (n, n); a pair stays; anything else names the argument."""
    if isinstance(v, (tuple, list)):
        if len(v) != 2:
            raise ValueError(f"{name} must be an int or a (height, width) pair, got {v!r}")
        return tuple(v)
    return (v, v)


class LayerStack(Module):
    """Layers named ``layers.i``, run in order; backward is the explicit reverse walk."""

    def forward(self, x, capture=None):
        """x (B, N, d) -> (B, N, d). ``capture``: a dict of lists to append per-layer features to."""
        for layer in self.layers:
            x = layer(x, capture)
        self._cache = True
        return x

    def backward(self, dout):
        """The explicit reverse walk over the layers."""
        self._take_cache()
        for layer in reversed(list(self.layers)):
            dout = layer.backward(dout)
        return dout


class Transformer(LayerStack):
    """``depth`` CRATE layers named ``layers.i``, each [PreNorm(MSSA), PreNorm(ISTA)]."""

    def __init__(self, dim, depth, heads, dim_head, dropout=0.0, ista_step=0.1,
                 ista_lambda=0.1, causal=False, dtype="float32", seed=0, attention=None):
        super().__init__(dtype)
        rng = _rng(seed)
        self.layers = ModuleList([CRATELayer(dim, heads, dim_head, dropout, ista_step,
                                             ista_lambda, causal, dtype=dtype, seed=rng,
                                             attention=attention)
                                  for _ in range(depth)], dtype=dtype)


class CRATE(Module):
    """The CRATE vision classifier (Yu et al.), official architecture and names.

    Inputs of forward: images (B, channels, H, W) with (H, W) = image_size.
    Returns: logits (B, num_classes).
    attention: None (official MSSA) or a dict of the theory-faithful options
    of whitebox.nn.MSSA, e.g. dict(out="tied", scale="rate", eps=1.0,
    kappa=1.0, update="exact"); each departure can be switched off alone.
    """

    def __init__(self, image_size, patch_size, num_classes, dim, depth, heads, dim_head=64,
                 channels=3, pool="cls", ista_step=0.1, ista_lambda=0.1, dropout=0.0,
                 emb_dropout=0.0, dtype="float32", seed=0, attention=None):
        super().__init__(dtype)
        attention = attention_options(attention)
        ih, iw = (check_positive_int("image_size", v) for v in _pair("image_size", image_size))
        ph, pw = (check_positive_int("patch_size", v) for v in _pair("patch_size", patch_size))
        if ih % ph or iw % pw:
            raise ValueError(f"image_size {ih}x{iw} is not divisible by patch_size {ph}x{pw}")
        for name, v in (("num_classes", num_classes), ("dim", dim), ("depth", depth),
                        ("heads", heads), ("dim_head", dim_head), ("channels", channels)):
            check_positive_int(name, v)
        if pool not in ("cls", "mean"):
            raise ValueError(f"pool must be 'cls' or 'mean', got {pool!r}")
        self.config = dict(image_size=image_size, patch_size=patch_size,
                           num_classes=num_classes, dim=dim, depth=depth, heads=heads,
                           dim_head=dim_head, channels=channels, pool=pool,
                           ista_step=ista_step, ista_lambda=ista_lambda, dropout=dropout,
                           emb_dropout=emb_dropout, dtype=self.dtype, seed=seed)
        if attention:
            self.config["attention"] = attention
        self.image_hw, self.patch_hw = (ih, iw), (ph, pw)
        self.channels, self.pool, self.dim = channels, pool, dim
        num_patches = (ih // ph) * (iw // pw)
        patch_dim = channels * ph * pw
        rng = _rng(seed)

        self.to_patch_embedding = Sequential(
            Patchify((ph, pw)), LayerNorm(patch_dim, dtype=dtype),
            Linear(patch_dim, dim, dtype=dtype, seed=rng), LayerNorm(dim, dtype=dtype),
            dtype=dtype)
        self.add_param("pos_embedding", rng.standard_normal((1, num_patches + 1, dim)))
        self.add_param("cls_token", rng.standard_normal((1, 1, dim)))
        self.dropout = Dropout(emb_dropout, dtype=dtype, seed=rng)
        self.transformer = Transformer(dim, depth, heads, dim_head, dropout, ista_step,
                                       ista_lambda, dtype=dtype, seed=rng, attention=attention)
        self.mlp_head = Sequential(LayerNorm(dim, dtype=dtype),
                                   Linear(dim, num_classes, dtype=dtype, seed=rng), dtype=dtype)
        self.captured = None

    def _check_images(self, images):
        xp = check_array("images", images)
        if images.ndim != 4:
            raise ValueError(f"images must be a 4-dimensional batch (B, C, H, W), "
                             f"got shape {tuple(images.shape)}")
        B, C, H, W = images.shape
        if C != self.channels:
            raise ValueError(f"images have {C} channels (shape {tuple(images.shape)}), "
                             f"expected {self.channels}")
        if (H, W) != self.image_hw:
            raise ValueError(f"images are {H}x{W} (shape {tuple(images.shape)}), expected "
                             f"{self.image_hw[0]}x{self.image_hw[1]} (image_size)")
        if xp is not self.xp:
            raise TypeError(f"images are {backend_name(images)} arrays but the model lives on "
                            f"{self.backend}: move them with whitebox.to_device(images, "
                            f"{self.backend!r})")
        check_finite("images", images)
        return xp

    def forward(self, images, capture=False):
        """images (B, C, H, W) -> logits (B, num_classes).

        With capture=True, ``self.captured`` holds per-layer lists of LN1(Z^l)
        ("mssa_in"), attention maps ("attention", (B, K, N, N)), Z^{l+1/2}
        ("z_half"), LN2(Z^{l+1/2}) ("ista_in") and Z^{l+1} ("z").
        """
        xp = self._check_images(images)
        images = images.astype(self.dtype, copy=False)
        x = self.to_patch_embedding(images)                        # (B, n, d)
        B, n, d = x.shape
        cls = xp.broadcast_to(self._params["cls_token"], (B, 1, d))
        x = xp.concatenate([cls, x], axis=1)                       # (B, N, d)
        x += self._params["pos_embedding"]
        x = self.dropout(x)
        self.captured = {k: [] for k in CAPTURE_KEYS} if capture else None
        x = self.transformer(x, self.captured)
        pooled = x[:, 0] if self.pool == "cls" else x.mean(axis=1)  # (B, d)
        logits = self.mlp_head(pooled)
        self._cache = (x.shape, logits.shape)
        return logits

    def backward(self, dlogits):
        """Accumulate every parameter gradient; return the gradient w.r.t. the images."""
        (B, N, d), logits_shape = self._take_cache()
        check_dout("CRATE", dlogits, logits_shape)
        dpooled = self.mlp_head.backward(dlogits)                  # (B, d)
        xp = self.xp
        if self.pool == "cls":
            dx = xp.zeros((B, N, d), dtype=dpooled.dtype)
            dx[:, 0] = dpooled
        else:
            dx = xp.broadcast_to(dpooled[:, None, :] / N, (B, N, d)).copy()
        dx = self.transformer.backward(dx)
        dx = self.dropout.backward(dx)
        self._accumulate("pos_embedding", dx.sum(axis=0, keepdims=True))
        self._accumulate("cls_token", dx[:, :1].sum(axis=0, keepdims=True))
        return self.to_patch_embedding.backward(dx[:, 1:])

    def subspaces(self, layer):
        """U of layer ``layer``, shape (K, d, p), for whitebox.rate.measure_compression."""
        return self.transformer.layers[layer].attn.fn.subspaces()

    def attention_maps(self):
        """Attention of every layer from the last forward: list of (B, K, N, N)."""
        return [layer.attn.fn.last_attention for layer in self.transformer.layers]

    def extra_repr(self):
        c = self.config
        return (f"image_size={c['image_size']}, patch_size={c['patch_size']}, "
                f"dim={c['dim']}, depth={c['depth']}, heads={c['heads']}, "
                f"dim_head={c['dim_head']}, pool={c['pool']!r}")


def _imagenet_config(dim, depth, heads, num_classes, kw):
    cfg = dict(image_size=224, patch_size=16, num_classes=num_classes, dim=dim, depth=depth,
               heads=heads, dim_head=dim // heads)
    cfg.update(kw)
    return CRATE(**cfg)


def crate_tiny(num_classes=1000, **kw):
    """CRATE-T: d 384, depth 12, 6 heads of 64 (6,090,856 parameters at 1000 classes)."""
    return _imagenet_config(384, 12, 6, num_classes, kw)


def crate_small(num_classes=1000, **kw):
    """CRATE-S: d 576, depth 12, 12 heads of 48 (13,116,328 parameters)."""
    return _imagenet_config(576, 12, 12, num_classes, kw)


def crate_base(num_classes=1000, **kw):
    """CRATE-B: d 768, depth 12, 12 heads of 64 (22,796,008 parameters)."""
    return _imagenet_config(768, 12, 12, num_classes, kw)


def crate_large(num_classes=1000, **kw):
    """CRATE-L: d 1024, depth 24, 16 heads of 64 (77,641,192 parameters)."""
    return _imagenet_config(1024, 24, 16, num_classes, kw)
