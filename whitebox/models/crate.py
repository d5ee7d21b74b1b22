"""The CRATE classifier, computed exactly as the official model/crate.py computes it.

    images (B, C, H, W)
      -> patches (B, n, p1 p2 C) -> LayerNorm -> Linear -> LayerNorm      to_patch_embedding
      -> prepend cls_token, add pos_embedding                             (B, N, d), N = n + 1
      -> L layers:  Z^{l+1/2} = Z^l + MSSA(LN1(Z^l))                      compression
                    Z^{l+1}   = ISTA(LN2(Z^{l+1/2}))                      sparsification
      -> pool (cls token or mean) -> LayerNorm -> Linear                  mlp_head

Parameter names and shapes are the official state-dict names, so official
weights load as they are (see whitebox.interop for .pth files).

The paper's ablation swaps one half of every layer for the standard
transformer's (``attention_kind="mhsa"``: MultiHeadAttention instead of MSSA;
``mlp="mlp"``: the GELU MLP with its residual instead of the ISTA step), the
same shared ResidualBlock with other children (:class:`HybridLayer`); the
defaults build CRATE itself, layer for layer and name for name.

``patch_shift=s`` > 0 departs from the official input: shifted patch tokens
(Lee et al. 2021, functional/shifted_patches.py) stack the images with four
diagonal shifts of themselves by s pixels before the patches are cut, so the
embedding reads 5 p1 p2 C numbers per patch; every name stays the same.
"""

from ..functional._checks import check_positive_int, is_int
from ..functional.shifted_patches import COPIES
from ..nn import CRATELayer, Dropout, LayerNorm, Linear, Module, ModuleList, Patchify, \
    Sequential, ShiftedPatches
from ..nn.crate_layers import CAPTURE_KEYS, ISTA, MSSA, PreNorm, TwoHalves, \
    attention_options
from ..nn.layers import _rng
from ..nn.transformer import MLP, MultiHeadAttention
from ._image import POOLS, ImageModel, classifier_head


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


# The ablation's choices for the two halves of a layer (first: CRATE's own)
ATTENTION_KINDS = ("mssa", "mhsa")
MLP_KINDS = ("ista", "mlp")


def _kind(name, value, allowed):
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
    return value


class HybridLayer(TwoHalves):
    """A CRATE layer with one or both halves swapped for the standard transformer's.

        Z^{l+1/2} = Z^l + A(LN1(Z^l))        A = MSSA, or MHSA (attention_kind="mhsa")
        Z^{l+1}   = ISTA(LN2(Z^{l+1/2}))     (mlp="ista")
        Z^{l+1}   = Z^{l+1/2} + MLP(LN2(Z^{l+1/2}))   (mlp="mlp": the standard residual MLP)

    MHSA is whitebox.nn.MultiHeadAttention (fused qkv with bias, heads of width
    dim // heads, so ``dim_head`` is unused); the MLP is whitebox.nn.MLP with hidden
    width 4 dim, its GELU activations captured under "code". Children "0" and "1"
    as CRATELayer's; the forward and backward are the shared ResidualBlock's.
    """

    def __init__(self, dim, heads, dim_head, dropout=0.0, ista_step=0.1, ista_lambda=0.1,
                 causal=False, dtype="float32", seed=0, attention=None, attention_kind="mssa",
                 mlp="ista"):
        super().__init__(dtype)
        _kind("attention_kind", attention_kind, ATTENTION_KINDS)
        _kind("mlp", mlp, MLP_KINDS)
        rng = _rng(seed)
        if attention_kind == "mhsa":
            if attention:
                raise ValueError("attention (MSSA's options) must be None with "
                                 f"attention_kind='mhsa', got {attention!r}")
            mixer = MultiHeadAttention(dim, heads, causal=causal, attn_drop=dropout,
                                       proj_drop=dropout, dtype=dtype, seed=rng)
        else:
            mixer = MSSA(dim, heads, dim_head, dropout, causal, dtype=dtype, seed=rng,
                         **attention_options(attention))
        setattr(self, "0", PreNorm(dim, mixer, dtype=dtype))
        if mlp == "mlp":
            coder = MLP(dim, 4 * dim, dropout=dropout, dtype=dtype, seed=rng)
        else:
            coder = ISTA(dim, ista_step, ista_lambda, dtype=dtype, seed=rng)
        setattr(self, "1", PreNorm(dim, coder, dtype=dtype))
        self.ista_residual = mlp == "mlp"
        self.kinds = (attention_kind, mlp)

    def code(self, ista_out):
        """The ISTA output, or the MLP's hidden GELU activations (mlp="mlp")."""
        return self.ista.fn.last_hidden if self.kinds[1] == "mlp" else ista_out


class Transformer(LayerStack):
    """``depth`` CRATE layers named ``layers.i``, each [PreNorm(MSSA), PreNorm(ISTA)]
    (HybridLayer when ``attention_kind`` or ``mlp`` is not CRATE's own)."""

    def __init__(self, dim, depth, heads, dim_head, dropout=0.0, ista_step=0.1,
                 ista_lambda=0.1, causal=False, dtype="float32", seed=0, attention=None,
                 attention_kind="mssa", mlp="ista"):
        super().__init__(dtype)
        rng = _rng(seed)
        _kind("attention_kind", attention_kind, ATTENTION_KINDS)
        _kind("mlp", mlp, MLP_KINDS)
        if (attention_kind, mlp) == (ATTENTION_KINDS[0], MLP_KINDS[0]):
            layers = [CRATELayer(dim, heads, dim_head, dropout, ista_step, ista_lambda, causal,
                                 dtype=dtype, seed=rng, attention=attention)
                      for _ in range(depth)]
        else:
            layers = [HybridLayer(dim, heads, dim_head, dropout, ista_step, ista_lambda, causal,
                                  dtype=dtype, seed=rng, attention=attention,
                                  attention_kind=attention_kind, mlp=mlp)
                      for _ in range(depth)]
        self.layers = ModuleList(layers, dtype=dtype)


class CRATE(ImageModel):
    """The CRATE vision classifier (Yu et al.), official architecture and names.

    Inputs of forward: images (B, channels, H, W) with (H, W) = image_size.
    Returns: logits (B, num_classes).
    attention: None (official MSSA) or a dict of the theory-faithful options
    of whitebox.nn.MSSA, e.g. dict(out="tied", scale="rate", eps=1.0,
    kappa=1.0, update="exact"); each departure can be switched off alone.
    attention_kind ("mssa" | "mhsa") and mlp ("ista" | "mlp"): the ablation's
    hybrids (HybridLayer); the defaults are CRATE. patch_shift: 0 (official)
    or the shift in pixels of shifted patch tokens (module docstring).
    """

    def __init__(self, image_size, patch_size, num_classes, dim, depth, heads, dim_head=64,
                 channels=3, pool="cls", ista_step=0.1, ista_lambda=0.1, dropout=0.0,
                 emb_dropout=0.0, dtype="float32", seed=0, attention=None,
                 attention_kind="mssa", mlp="ista", patch_shift=0):
        super().__init__(dtype)
        attention = attention_options(attention)
        self._set_geometry(image_size, patch_size, channels)
        for name, v in (("num_classes", num_classes), ("dim", dim), ("depth", depth),
                        ("heads", heads), ("dim_head", dim_head)):
            check_positive_int(name, v)
        if pool not in POOLS:
            raise ValueError(f"pool must be 'cls' or 'mean', got {pool!r}")
        if not is_int(patch_shift) or not 0 <= patch_shift < min(self.image_hw):
            raise ValueError(f"patch_shift must be an integer number of pixels in [0, "
                             f"{min(self.image_hw)}) (the image side), got {patch_shift!r}")
        self.config = dict(image_size=image_size, patch_size=patch_size,
                           num_classes=num_classes, dim=dim, depth=depth, heads=heads,
                           dim_head=dim_head, channels=channels, pool=pool,
                           ista_step=ista_step, ista_lambda=ista_lambda, dropout=dropout,
                           emb_dropout=emb_dropout, dtype=self.dtype, seed=seed)
        if attention:
            self.config["attention"] = attention
        if attention_kind != ATTENTION_KINDS[0]:
            self.config["attention_kind"] = attention_kind
        if mlp != MLP_KINDS[0]:
            self.config["mlp"] = mlp
        if patch_shift:
            self.config["patch_shift"] = int(patch_shift)
        if (attention_kind, mlp) != (ATTENTION_KINDS[0], MLP_KINDS[0]):
            self.ATTENTION = f"ablation {attention_kind.upper()} + {mlp.upper()}"  # the header
        self.pool, self.dim = pool, dim
        self.shifted = ShiftedPatches(int(patch_shift), dtype=dtype) if patch_shift else None
        patch_dim = self.patch_dim * (COPIES if patch_shift else 1)
        rng = _rng(seed)

        self.to_patch_embedding = Sequential(
            Patchify(self.patch_hw), LayerNorm(patch_dim, dtype=dtype),
            Linear(patch_dim, dim, dtype=dtype, seed=rng), LayerNorm(dim, dtype=dtype),
            dtype=dtype)
        self.add_param("pos_embedding", rng.standard_normal((1, self.num_patches + 1, dim)))
        self.add_param("cls_token", rng.standard_normal((1, 1, dim)))
        self.dropout = Dropout(emb_dropout, dtype=dtype, seed=rng)
        self.transformer = Transformer(dim, depth, heads, dim_head, dropout, ista_step,
                                       ista_lambda, dtype=dtype, seed=rng, attention=attention,
                                       attention_kind=attention_kind, mlp=mlp)
        self.mlp_head = classifier_head(dim, num_classes, dtype, rng)
        self.captured = None

    def forward(self, images, capture=False):
        """images (B, C, H, W) -> logits (B, num_classes).

        With capture=True, ``self.captured`` holds per-layer lists of LN1(Z^l)
        ("mssa_in"), attention maps ("attention", (B, K, N, N)), Z^{l+1/2}
        ("z_half"), LN2(Z^{l+1/2}) ("ista_in") and Z^{l+1} ("z").
        """
        images = self._images(images)
        if self.shifted is not None:
            images = self.shifted(images)                          # (B, 5C, H, W)
        x = self.dropout(self._tokens(self.to_patch_embedding(images)))  # (B, N, d)
        self.captured = {k: [] for k in CAPTURE_KEYS} if capture else None
        x = self.transformer(x, self.captured)
        return self._classify(x, self.pool)                        # (B, num_classes)

    def backward(self, dlogits):
        """Accumulate every parameter gradient; return the gradient w.r.t. the images."""
        dx = self.transformer.backward(self._classify_backward(dlogits, self.pool))
        dx = self._tokens_backward(self.dropout.backward(dx))      # (B, n, d)
        dx = self.to_patch_embedding.backward(dx)
        return dx if self.shifted is None else self.shifted.backward(dx)

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
