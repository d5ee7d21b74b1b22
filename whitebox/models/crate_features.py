"""A CRATE model's class-token features at any image size: the position table resampled.

    images (B, C, H', W'), H' and W' multiples of the patch size
      -> to_patch_embedding -> (B, n', d),  n' = (H'/ph)(W'/pw)
      -> prepend cls_token, add interpolate_pos_embed(pos_embedding, grid -> grid')
      -> transformer -> LayerNorm of the class token (mlp_head.0)  -> (B, d)

At the model's own image size the table is used as stored and the features
are what the classifier's last Linear (mlp_head.1) reads. At another size
(DINO's local crops) the stored table is resampled bilinearly
(:mod:`whitebox.functional.pos_interp`) and its gradient flows back to the
stored table through the resampling's transpose. The wrapper holds the
model as its child ``crate`` and runs the model's own layers: nothing of
the model's code is repeated but the order of its embedding steps.
"""
from ..functional._checks import check_array, check_dout, check_finite
from ..functional.pos_interp import interpolate_pos_embed_backward, interpolate_pos_embed_forward
from ..nn import Module


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


class CRATEFeatures(Module):
    """features = CRATEFeatures(crate)(images): (B, C, H', W') -> (B, dim)."""

    def __init__(self, crate):
        super().__init__(crate.dtype)
        self.crate = crate
        ih, iw = _pair(crate.config["image_size"])
        self.patch_hw = _pair(crate.config["patch_size"])
        self.grid = (ih // self.patch_hw[0], iw // self.patch_hw[1])
        self.channels = crate.config["channels"]
        self.dim = crate.config["dim"]

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
        crate = self.crate
        x = crate.to_patch_embedding(images.astype(self.dtype, copy=False))   # (B, n', d)
        d = x.shape[2]
        pos, pos_cache = interpolate_pos_embed_forward(crate.param("pos_embedding"), self.grid,
                                                       (H // ph, W // pw))    # (1, N', d)
        cls = xp.broadcast_to(crate.param("cls_token"), (B, 1, d))
        x = xp.concatenate([cls, x], axis=1) + pos                            # (B, N', d)
        x = crate.dropout(x)
        x = crate.transformer(x)
        features = crate.mlp_head[0](x[:, 0])                                 # (B, d)
        self._cache = (pos_cache, x.shape)
        return features

    def backward(self, dfeatures):
        """Accumulate the model's gradients (the stored table's included); return dimages."""
        pos_cache, (B, N, d) = self._take_cache()
        check_dout("CRATEFeatures", dfeatures, (B, d))
        crate = self.crate
        dx = self.xp.zeros((B, N, d), dtype=dfeatures.dtype)
        dx[:, 0] = crate.mlp_head[0].backward(dfeatures)
        dx = crate.dropout.backward(crate.transformer.backward(dx))           # (B, N', d)
        crate._accumulate("pos_embedding",
                          interpolate_pos_embed_backward(dx.sum(axis=0, keepdims=True),
                                                         pos_cache))
        crate._accumulate("cls_token", dx[:, :1].sum(axis=0, keepdims=True))
        return crate.to_patch_embedding.backward(dx[:, 1:])
