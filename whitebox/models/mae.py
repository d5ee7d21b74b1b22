"""The masked autoencoder (He et al. 2022) as facebookresearch/mae's models_mae.py computes it.

L patches; the encoder sees only the kept ones, the decoder every position:

    images (B, C, H, W)
      -> patch_embed.proj (conv as a product) + pos_embed[1:]          (B, L, d)
      -> keep the int(L (1 - mask_ratio)) patches of smallest noise    (B, n, d)
      -> prepend cls_token + pos_embed[0]; blocks; norm                (B, 1 + n, d)
      -> decoder_embed                                                 (B, 1 + n, D)
      -> mask_token at every removed position, kept ones in place,
         + decoder_pos_embed; decoder_blocks; decoder_norm             (B, 1 + L, D)
      -> decoder_pred, drop the cls row                                pred (B, L, p p C)
    loss = mean squared error per patch, averaged over the removed patches

Blocks are timm's pre-norm transformer blocks (whitebox.nn.TransformerBlock);
``pos_embed`` and ``decoder_pos_embed`` are the fixed 2-D sin-cos tables,
frozen but in the state dict as in the official file. The call is
CRATEMAE's: ``loss, pred, mask = model.forward(images, mask=None, noise=None)``,
``model.backward()``; the input checks and the masking rule are CRATEMAE's (their
shared base, whitebox.models._masked).
"""
import numpy as np

from ..functional._checks import check_dout, check_positive_int, check_real
from ..functional.masked_mse import masked_mse_backward, masked_mse_forward
from ..functional.patches import patchify_backward, patchify_forward
from ..functional.pos_embed import sincos_pos_embed_2d
from ..nn import LayerNorm, Linear, ModuleList, TransformerBlock
from ..nn.block import CAPTURE_KEYS
from ..nn.layers import _rng
from ..nn.patch_embed import PatchEmbed
from ._masked import MaskedImageModel
from .crate_mae import _xavier


class MAE(MaskedImageModel):
    """facebookresearch/mae's MaskedAutoencoderViT: official names, shapes and masking.

    forward(images, mask=None, noise=None) -> (loss, pred, mask); backward(dloss=1.0,
    dpred=None) -> dimages. A given mask must remove the same number of patches
    from every image (the encoder's input is one (B, n, d) array). ``eps`` of
    every LayerNorm: 1e-5 is the class's default norm layer; the official
    factories (mae_vit_base) pass 1e-6.
    """
    ATTENTION = "standard attention"           # the training header's word for it

    def __init__(self, image_size, patch_size, dim, depth, heads, decoder_dim, decoder_depth,
                 decoder_heads, channels=3, mask_ratio=0.75, norm_pix_loss=False, mlp_ratio=4.0,
                 eps=1e-5, dtype="float32", seed=0):
        super().__init__(dtype)
        for name, v in (("dim", dim), ("depth", depth), ("heads", heads),
                        ("decoder_dim", decoder_dim), ("decoder_depth", decoder_depth),
                        ("decoder_heads", decoder_heads)):
            check_positive_int(name, v)
        self._set_geometry(image_size, patch_size, channels)
        self.mask_ratio = check_real("mask_ratio", mask_ratio, 0.0, 1.0, high_open=True)
        self.config = dict(image_size=image_size, patch_size=patch_size, dim=dim, depth=depth,
                           heads=heads, decoder_dim=decoder_dim, decoder_depth=decoder_depth,
                           decoder_heads=decoder_heads, channels=channels,
                           mask_ratio=self.mask_ratio, norm_pix_loss=bool(norm_pix_loss),
                           mlp_ratio=mlp_ratio, eps=eps, dtype=self.dtype, seed=seed)
        self.dim, self.norm_pix_loss = dim, bool(norm_pix_loss)
        grid = (self.image_hw[0] // self.patch_hw[0], self.image_hw[1] // self.patch_hw[1])
        self.captured = None
        rng = _rng(seed)

        self.patch_embed = PatchEmbed(channels, dim, patch_size, dtype=dtype, seed=rng)
        self.add_param("cls_token", 0.02 * rng.standard_normal((1, 1, dim)))
        self.add_param("pos_embed", sincos_pos_embed_2d(dim, grid)[None], trainable=False)
        self.blocks = ModuleList([TransformerBlock(dim, heads, mlp_ratio, eps=eps, dtype=dtype,
                                                   seed=rng) for _ in range(depth)], dtype=dtype)
        self.norm = LayerNorm(dim, eps, dtype=dtype)
        self.decoder_embed = Linear(dim, decoder_dim, dtype=dtype, seed=rng)
        self.add_param("mask_token", 0.02 * rng.standard_normal((1, 1, decoder_dim)))
        self.add_param("decoder_pos_embed", sincos_pos_embed_2d(decoder_dim, grid)[None],
                       trainable=False)
        self.decoder_blocks = ModuleList([TransformerBlock(decoder_dim, decoder_heads, mlp_ratio,
                                                           eps=eps, dtype=dtype, seed=rng)
                                          for _ in range(decoder_depth)], dtype=dtype)
        self.decoder_norm = LayerNorm(decoder_dim, eps, dtype=dtype)
        self.decoder_pred = Linear(decoder_dim, self.patch_dim, dtype=dtype,
                                   seed=rng)
        # the official initialize_weights: xavier-uniform Linears with zero bias, and the
        # patch kernel xavier-uniform on its (d, C p p) view
        for _, m in self.named_modules():
            if isinstance(m, Linear):
                _xavier(rng, m)
        W = self.patch_embed.proj.param("weight")
        W[...] = rng.uniform(-1, 1, W.shape) * np.sqrt(6.0 / (W.shape[0] + W[0].size))
        # the masking noise has a generator of its own, saved with model.generators()
        self.rng = np.random.default_rng(int(rng.integers(2 ** 63)))

    def _kept_ids(self, mask):
        """(B, n) positions of the kept patches, ascending; n must be the same in every row."""
        xp = self.xp
        kept = (mask == 0).sum(axis=1)
        n = int(kept[0])
        if not bool((kept == n).all()):
            raise ValueError(f"mask must keep the same number of patches in every image (the "
                             f"encoder reads them as one array), got {kept.tolist()}")
        order = xp.argsort(mask, axis=1, **({"kind": "stable"} if xp is np else {}))
        return order[:, :n]

    # ------------------------------------------------------------ compute
    def encode(self, images):
        """Encoder features of whole images (every patch seen), (B, 1 + L, d) after ``norm``,
        cls token first; no loss and no backward (for probes and figures)."""
        images = self._images(images)
        x = self._tokens(self.patch_embed(images), pos="pos_embed")      # (B, 1 + L, d)
        for blk in self.blocks:
            x = blk(x)
        x = self.norm(x)
        for _, m in self.named_modules():                                # nothing to backward
            m._cache = None
        return x

    def forward(self, images, mask=None, noise=None, capture=False):
        """images (B, C, H, W) -> (loss, pred (B, L, p p C) in patchify order, mask (B, L)).

        mask (B, L) of 0/1 (1 = removed), or noise (B, L) (keep the patches of
        smallest noise), or neither (noise drawn from ``self.rng``). With
        capture=True, ``self.captured`` = {"encoder": ..., "decoder": ...},
        each per-block lists under CRATE's keys (whitebox.nn.transformer).
        """
        xp = self.xp
        images = self._images(images)
        B = images.shape[0]
        if mask is not None and noise is not None:
            raise ValueError("give either mask or noise, not both")
        mask = self._check_mask(mask, B) if mask is not None else self._draw_mask(noise, B)
        ids = self._kept_ids(mask)                                      # (B, n)
        rows = xp.arange(B)[:, None]
        pos = self._params["pos_embed"]
        x = self.patch_embed(images) + pos[:, 1:]                        # (B, L, d)
        x = x[rows, ids]                                                 # (B, n, d) kept
        cls = xp.broadcast_to(self._params["cls_token"] + pos[:, :1], (B, 1, self.dim))
        x = xp.concatenate([cls, x], axis=1)                             # (B, 1 + n, d)
        self.captured = {part: {k: [] for k in CAPTURE_KEYS} for part in ("encoder", "decoder")} \
            if capture else None
        enc, dec = (self.captured["encoder"], self.captured["decoder"]) if capture else (None,) * 2
        for blk in self.blocks:
            x = blk(x, enc)
        z = self.decoder_embed(self.norm(x))                             # (B, 1 + n, D)
        D = z.shape[-1]
        y = xp.empty((B, 1 + self.num_patches, D), dtype=z.dtype)        # (B, 1 + L, D)
        y[:, 1:] = self._params["mask_token"]
        y[:, :1] = z[:, :1]
        y[rows, 1 + ids] = z[:, 1:]                                      # kept tokens in place
        y += self._params["decoder_pos_embed"]
        for blk in self.decoder_blocks:
            y = blk(y, dec)
        pred = xp.ascontiguousarray(self.decoder_pred(self.decoder_norm(y))[:, 1:])  # (B, L, P)
        target, pcache = patchify_forward(images, self.patch_hw)         # (B, L, P)
        loss, lcache = masked_mse_forward(pred, target, mask, self.norm_pix_loss)
        self._cache = (lcache, pcache, ids, mask, x.shape, pred.shape)
        return loss, pred, mask

    def backward(self, dloss=1.0, dpred=None):
        """Accumulate every trainable gradient (the position tables are frozen); return d images.

        dloss: the upstream gradient of the loss; dpred: an optional extra one on pred.
        """
        lcache, pcache, ids, mask, x_shape, pred_shape = self._take_cache()
        if hasattr(dloss, "shape"):
            check_dout("MAE (dloss)", dloss, ())
        else:
            dloss = check_real("dloss", dloss)
        dpred_total, dpatches = masked_mse_backward(dloss, lcache)
        if dpred is not None:
            check_dout("MAE (dpred)", dpred, pred_shape)
            dpred_total = dpred_total + dpred
        xp = self.xp
        B, L, P = pred_shape
        rows = xp.arange(B)[:, None]
        dy = xp.zeros((B, L + 1, P), dtype=dpred_total.dtype)
        dy[:, 1:] = dpred_total                                          # the cls row had none
        dy = self.decoder_norm.backward(self.decoder_pred.backward(dy))  # (B, 1 + L, D)
        for blk in reversed(list(self.decoder_blocks)):
            dy = blk.backward(dy)
        self._accumulate("mask_token", (dy[:, 1:] * mask[:, :, None]).sum(axis=(0, 1))
                         .reshape(1, 1, -1))
        dz = xp.concatenate([dy[:, :1], dy[rows, 1 + ids]], axis=1)      # (B, 1 + n, D)
        dx = self.norm.backward(self.decoder_embed.backward(dz))         # (B, 1 + n, d)
        for blk in reversed(list(self.blocks)):
            dx = blk.backward(dx)
        dkept = self._tokens_backward(dx, pos=None)                      # frozen table
        dtokens = xp.zeros((B, L, self.dim), dtype=dx.dtype)
        dtokens[rows, ids] = dkept                                       # removed patches: 0
        dimages = self.patch_embed.backward(dtokens)
        dimages += patchify_backward(dpatches, pcache)                   # the target is the images
        return dimages

    def encoder_subspaces(self, layer, part="v"):
        """U (K, d, p) of encoder block ``layer``'s ``part`` of qkv, for Rc measures."""
        return self.blocks[layer].subspaces(part)

    def decoder_subspaces(self, layer, part="v"):
        """U (K, D, p) of decoder block ``layer``'s ``part`` of qkv."""
        return self.decoder_blocks[layer].subspaces(part)

    def extra_repr(self):
        c = self.config
        return (f"image_size={c['image_size']}, patch_size={c['patch_size']}, dim={c['dim']}, "
                f"depth={c['depth']}, decoder_dim={c['decoder_dim']}, "
                f"decoder_depth={c['decoder_depth']}, mask_ratio={c['mask_ratio']}")


def mae_vit_base(**kw):
    """MAE ViT-B/16 with the 512 x 8 decoder of 16 heads, LayerNorm eps 1e-6 as the official
    mae_vit_base_patch16_dec512d8b (111,907,840 numbers, both frozen tables counted)."""
    cfg = dict(image_size=224, patch_size=16, dim=768, depth=12, heads=12, decoder_dim=512,
               decoder_depth=8, decoder_heads=16, eps=1e-6)
    cfg.update(kw)
    return MAE(**cfg)
