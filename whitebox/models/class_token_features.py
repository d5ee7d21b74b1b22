"""A CRATE's or a ViT's class-token features at any image size: the position table resampled.

    images (B, C, H', W'), H' and W' multiples of the patch size
      -> the model's patch embedding -> (B, n', d),  n' = (H'/ph)(W'/pw)
      -> prepend cls_token, add interpolate_pos_embed(table, grid -> grid')
      -> the model's embedding dropout -> its layers in order
      -> a LayerNorm of the class token                                   -> (B, d)

The LayerNorm is the one the model's classifier reads: CRATE's
``mlp_head.0`` (before the last Linear ``mlp_head.1``), the ViT's final
``norm`` (before ``head``; DINO's features). At the model's own image size
the table is used as stored and the features are what that last Linear
reads. At another size (DINO's local crops) the stored table is resampled
bilinearly (:mod:`whitebox.functional.pos_interp`) and its gradient flows
back to the stored table through the resampling's transpose. The wrapper
holds the model as its one child (``crate`` or ``vit``) and runs the
model's own modules: nothing of the model's code is repeated but the order
of its embedding steps. :class:`ClassTokenFeatures` holds that order; a
subclass names the model's parts (:meth:`ClassTokenFeatures.parts`).
"""
from ..functional._checks import check_array, check_dout, check_finite
from ..functional.pos_interp import interpolate_pos_embed_backward, interpolate_pos_embed_forward
from ..nn import Module


class ClassTokenFeatures(Module):
    """features = Subclass(model)(images): (B, C, H', W') -> (B, dim).

    A subclass sets ``child`` (the attribute that holds the model), ``pos``
    (the name of its position table (1, 1 + n, d)) and :meth:`parts`. The
    model must carry ``image_hw``, ``patch_hw``, ``channels`` (as
    whitebox.models._image.ImageModel does), ``config["dim"]`` and a
    ``cls_token`` (1, 1, d) parameter.
    """
    child = None
    pos = None

    def __init__(self, model):
        super().__init__(model.dtype)
        setattr(self, self.child, model)
        (ih, iw), self.patch_hw = model.image_hw, model.patch_hw
        self.grid = (ih // self.patch_hw[0], iw // self.patch_hw[1])
        self.channels = model.channels
        self.dim = model.config["dim"]

    @property
    def model(self):
        return getattr(self, self.child)

    def parts(self):
        """(embed, drop, layers, norm): the patch embedding (B, C, H, W) -> (B, n, d), the
        dropout after the positions, the list of token layers (B, N, d) -> (B, N, d) run in
        order, and the LayerNorm applied to the class token (B, d)."""
        raise NotImplementedError

    def attention_maps(self):
        """Attention of every layer of the model from the last forward: list of (B, K, N', N')."""
        return self.model.attention_maps()

    def forward(self, images):
        xp = check_array("images", images, ndim=4)
        B, C, H, W = images.shape
        ph, pw = self.patch_hw
        if C != self.channels or H % ph or W % pw or H == 0 or W == 0:
            raise ValueError(f"images must be (B, {self.channels}, H, W) with H a positive "
                             f"multiple of {ph} and W of {pw}, got shape {tuple(images.shape)}")
        if xp is not self.xp:
            raise TypeError(f"images live on another backend than the model ({self.backend})")
        check_finite("images", images)
        model = self.model
        embed, drop, layers, norm = self.parts()
        x = embed(images.astype(self.dtype, copy=False))                     # (B, n', d)
        d = x.shape[2]
        pos, pos_cache = interpolate_pos_embed_forward(model.param(self.pos), self.grid,
                                                       (H // ph, W // pw))    # (1, N', d)
        cls = xp.broadcast_to(model.param("cls_token"), (B, 1, d))
        x = drop(xp.concatenate([cls, x], axis=1) + pos)                     # (B, N', d)
        for layer in layers:
            x = layer(x)
        features = norm(x[:, 0])                                              # (B, d)
        self._cache = (pos_cache, x.shape)
        return features

    def backward(self, dfeatures):
        """Accumulate the model's gradients (the stored table's included); return dimages."""
        pos_cache, (B, N, d) = self._take_cache()
        check_dout(type(self).__name__, dfeatures, (B, d))
        model = self.model
        embed, drop, layers, norm = self.parts()
        dx = self.xp.zeros((B, N, d), dtype=dfeatures.dtype)
        dx[:, 0] = norm.backward(dfeatures)
        for layer in reversed(layers):
            dx = layer.backward(dx)
        dx = drop.backward(dx)                                                # (B, N', d)
        model._accumulate(self.pos, interpolate_pos_embed_backward(
            dx.sum(axis=0, keepdims=True), pos_cache))
        model._accumulate("cls_token", dx[:, :1].sum(axis=0, keepdims=True))
        return embed.backward(dx[:, 1:])


class CRATEFeatures(ClassTokenFeatures):
    """features = CRATEFeatures(crate)(images): (B, C, H', W') -> (B, dim), the LayerNorm
    ``mlp_head.0`` of the class token."""
    child = "crate"
    pos = "pos_embedding"

    def parts(self):
        c = self.crate
        return c.to_patch_embedding, c.dropout, [c.transformer], c.mlp_head[0]


class ViTFeatures(ClassTokenFeatures):
    """features = ViTFeatures(vit)(images): (B, C, H', W') -> (B, dim), the final LayerNorm
    ``norm`` of the class token (DINO's backbone output)."""
    child = "vit"
    pos = "pos_embed"

    def parts(self):
        v = self.vit
        return v.patch_embed, v.pos_drop, list(v.blocks), v.norm
