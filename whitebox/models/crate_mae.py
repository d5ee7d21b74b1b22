"""CRATE-MAE: a CRATE encoder, a CRATE decoder that inverts it, trained as a masked autoencoder.

Computed exactly as the official model/crate_ae/ (Ma-Lab-Berkeley/CRATE) computes it,
L patches, N = L + 1 tokens, tokens as rows:

    images (B, C, H, W)
      -> patch_embed: conv with kernel = stride = patch          (B, L, d)
      -> removed patches (mask = 1) replaced by mask_token, in place
      -> prepend cls_token, add the fixed 2-D sin-cos decoder_pos_embed   (B, N, d)
      -> encoder layers:  Z^{l+1/2} = Z^l + MSSA(LN(Z^l))        compression
                          Z^{l+1}   = ISTA(LN(Z^{l+1/2}))        sparsification (lambda 0.5)
      -> norm (LayerNorm, eps 1e-6)
      -> decoder layers:  Y = LN(X) W^T                           the inverse of ISTA
                          X' = Y - MSSA(LN(Y))                    compression run backwards
      -> decoder_norm (eps 1e-6) -> decoder_pred -> drop the cls row   pred (B, L, p p C)
    loss = mean squared error per patch, averaged over the removed patches

Every name and shape is the official state dict's, including the two
parameters the official forward never reads (``pos_embed``, ``decoder_embed``);
``pos_embed``, ``decoder_pos_embed`` and ``decoder_embed`` are frozen
(Module.add_param(..., trainable=False), Module.freeze()): they stay in
state_dict() and checkpoints, grads() and the optimizers skip them. (The
official ``decoder_embed`` is trainable but receives no gradient, so
torch's AdamW never touches it; freezing it keeps weight decay off it here.)
"""
import math

import numpy as np

from ..functional._checks import check_flag, check_positive_int, check_real
from ..functional.masked_mse import masked_mse_backward, masked_mse_forward
from ..functional.masking import mask_tokens_backward, mask_tokens_forward
from ..functional.patches import patchify_backward, patchify_forward
from ..functional.pos_embed import sincos_pos_embed_2d
from ..nn import CRATELayer, LayerNorm, Linear, ModuleList
from ..nn.crate_layers import CAPTURE_KEYS
from ..nn.decoder_layers import DECODER_CAPTURE_KEYS, DecoderLayer
from ..nn.layers import _rng, uniform_init
from ..nn.patch_embed import PatchEmbed
from ._masked import MaskedImageModel
from .crate import LayerStack


class Block(LayerStack):
    """The official ``Block_CRATE``: a stack ``layers`` of ONE layer.

    It exists only so that names read ``blocks.{i}.layers.0.…`` as in the
    official state dict.
    """

    def __init__(self, layer, dtype="float32"):
        super().__init__(dtype)
        self.layers = ModuleList([layer], dtype=dtype)


def _xavier(rng, linear):
    """xavier_uniform on the weight, zero bias (the official _init_weights for nn.Linear)."""
    out_f, in_f = linear.param("weight").shape
    linear.add_param("weight", uniform_init(rng, (out_f, in_f), math.sqrt(6.0 / (in_f + out_f))))
    if linear.has_bias:
        linear.add_param("bias", np.zeros(out_f))


class CRATEMAE(MaskedImageModel):
    """The CRATE masked autoencoder (official CRATE-MAE), official architecture and names.

    forward(images, mask=None, noise=None) -> (loss, pred, mask); backward(dloss=1.0,
    dpred=None) -> dimages. Decoder width equals the encoder's (the official code
    requires it); decoder_heads=None means heads; dim_head = dim // heads, rounded
    down as the official code does: with dim = 36 and 8 heads the heads span 32 of
    the 36 features (the attention projects to K p = 32, then back to 36).
    """

    def __init__(self, image_size, patch_size, dim, depth, heads, decoder_depth, channels=3,
                 decoder_heads=None, mask_ratio=0.75, norm_pix_loss=False, ista_step=0.1,
                 ista_lambda=0.5, decoder_softmax=True, dtype="float32", seed=0):
        super().__init__(dtype)
        self._set_geometry(image_size, patch_size, channels)
        decoder_heads = heads if decoder_heads is None else decoder_heads
        for name, v in (("dim", dim), ("depth", depth), ("heads", heads),
                        ("decoder_depth", decoder_depth), ("decoder_heads", decoder_heads)):
            check_positive_int(name, v)
        if dim % 4:
            raise ValueError(f"dim must be a multiple of 4 (the 2-D sin-cos position table "
                             f"gives each axis sin and cos halves), got {dim}")
        for name, k in (("heads", heads), ("decoder_heads", decoder_heads)):
            if k > dim:
                raise ValueError(f"{name} = {k} exceeds dim = {dim}: dim_head = dim // "
                                 f"{name} would be 0")
        self.mask_ratio = check_real("mask_ratio", mask_ratio, 0.0, 1.0, high_open=True)
        norm_pix_loss = check_flag("norm_pix_loss", norm_pix_loss)
        decoder_softmax = check_flag("decoder_softmax", decoder_softmax)
        patch_dim = self.patch_dim
        if norm_pix_loss and patch_dim < 2:
            raise ValueError("norm_pix_loss needs at least 2 numbers per patch (the unbiased "
                             f"variance divides by p p C - 1), got patch_size {patch_size} and "
                             f"{channels} channel")
        self.config = dict(image_size=image_size, patch_size=patch_size, dim=dim, depth=depth,
                           heads=heads, decoder_depth=decoder_depth, channels=channels,
                           decoder_heads=decoder_heads, mask_ratio=self.mask_ratio,
                           norm_pix_loss=norm_pix_loss, ista_step=ista_step,
                           ista_lambda=ista_lambda, decoder_softmax=decoder_softmax,
                           dtype=self.dtype, seed=seed)
        self.dim, self.norm_pix_loss = dim, norm_pix_loss
        ph, pw = self.patch_hw
        grid = (self.image_hw[0] // ph, self.image_hw[1] // pw)
        rng = _rng(seed)

        table = sincos_pos_embed_2d(dim, grid)[None]                    # (1, N, d)
        self.add_param("cls_token", 0.02 * rng.standard_normal((1, 1, dim)))
        self.add_param("pos_embed", table, trainable=False)             # never read
        self.add_param("mask_token", 0.02 * rng.standard_normal((1, 1, dim)))
        self.add_param("decoder_pos_embed", table, trainable=False)
        self.patch_embed = PatchEmbed(channels, dim, (ph, pw), dtype=dtype, seed=rng)
        self.blocks = ModuleList([
            Block(CRATELayer(dim, heads, dim // heads, 0.0, ista_step, ista_lambda, dtype=dtype,
                             seed=rng), dtype=dtype) for _ in range(depth)], dtype=dtype)
        self.norm = LayerNorm(dim, eps=1e-6, dtype=dtype)
        self.decoder_embed = Linear(dim, dim, dtype=dtype, seed=rng)    # never read: frozen
        self.decoder_blocks = ModuleList([
            Block(DecoderLayer(dim, decoder_heads, dim // decoder_heads, decoder_softmax,
                               dtype=dtype, seed=rng), dtype=dtype)
            for _ in range(decoder_depth)], dtype=dtype)
        self.decoder_norm = LayerNorm(dim, eps=1e-6, dtype=dtype)
        self.decoder_pred = Linear(dim, patch_dim, dtype=dtype, seed=rng)
        self._official_init(rng)
        # the masking noise has a generator of its own, saved with model.generators()
        self.rng = np.random.default_rng(int(rng.integers(2 ** 63)))
        self.captured = None

    def _official_init(self, rng):
        """xavier-uniform Linears (zero bias) and patch kernel; ISTA and decoder squares
        keep kaiming-uniform; LayerNorms 1 and 0; cls and mask tokens N(0, 0.02^2)."""
        conv = self.patch_embed.proj
        d, C, p1, p2 = conv.param("weight").shape
        conv.add_param("weight", uniform_init(rng, (d, C, p1, p2),
                                              math.sqrt(6.0 / (d + C * p1 * p2))))
        for layer in self.encoder_layers() + self.decoder_layers():
            mssa = layer.attn.fn
            _xavier(rng, mssa.qkv)
            if mssa.project_out:
                _xavier(rng, mssa.to_out[0])
        _xavier(rng, self.decoder_embed)
        self.decoder_embed.freeze()
        _xavier(rng, self.decoder_pred)

    # ------------------------------------------------------------ structure
    def encoder_layers(self):
        return [blk.layers[0] for blk in self.blocks]

    def decoder_layers(self):
        return [blk.layers[0] for blk in self.decoder_blocks]

    def encoder_subspaces(self, layer):
        """U (K, d, p) of encoder layer ``layer``, for whitebox.rate.measure_compression."""
        return self.blocks[layer].layers[0].attn.fn.subspaces()

    def decoder_subspaces(self, layer):
        """U (K, d, p) of decoder layer ``layer``."""
        return self.decoder_blocks[layer].layers[0].attn.fn.subspaces()

    # ------------------------------------------------------------ compute
    def _encode(self, images, mask, capture):
        """images (B, C, H, W), mask (B, L) -> latent (B, N, d); keeps the mask cache."""
        x = self.patch_embed(images)                                # (B, L, d)
        x, self._mask_cache = mask_tokens_forward(x, mask, self._params["mask_token"])
        x = self._tokens(x, "decoder_pos_embed")                    # (B, N, d)
        for blk in self.blocks:
            x = blk(x, capture)
        return self.norm(x)

    def encode(self, images, mask=None):
        """Encoder features (B, N, d) after ``norm`` (cls token first), no loss and no
        backward: with mask=None every patch is seen (for probes and figures)."""
        images = self._images(images)
        B = images.shape[0]
        mask = (self.xp.zeros((B, self.num_patches), dtype=self.dtype) if mask is None
                else self._check_mask(mask, B, for_loss=False))
        latent = self._encode(images, mask, None)
        self._cache = None
        return latent

    def forward(self, images, mask=None, noise=None, capture=False):
        """images (B, C, H, W) -> (loss, pred, mask).

        mask (B, L) of 0/1 (1 = removed), or noise (B, L) (keep the patches with
        the smallest noise), or neither (noise drawn from ``self.rng``).
        loss: a 0-d array; pred (B, L, p p C) in patchify order; mask (B, L).
        capture=True keeps per-layer features in ``self.captured["encoder"]``
        (the classifier's keys) and ``self.captured["decoder"]`` ("y", "mssa_in",
        "attention", "z").
        """
        images = self._images(images)
        B = images.shape[0]
        if mask is not None and noise is not None:
            raise ValueError("give either mask or noise, not both")
        mask = self._check_mask(mask, B) if mask is not None else self._draw_mask(noise, B)
        self.captured = ({"encoder": {k: [] for k in CAPTURE_KEYS},
                          "decoder": {k: [] for k in DECODER_CAPTURE_KEYS}} if capture else None)
        x = self._encode(images, mask, self.captured and self.captured["encoder"])
        for blk in self.decoder_blocks:
            x = blk(x, self.captured and self.captured["decoder"])
        x = self.decoder_norm(x)
        pred = self.xp.ascontiguousarray(self.decoder_pred(x)[:, 1:])   # (B, L, p p C)
        target, pcache = patchify_forward(images, self.patch_hw)         # (B, L, p p C)
        loss, lcache = masked_mse_forward(pred, target, mask, self.norm_pix_loss)
        self._cache = (lcache, pcache, self._mask_cache, pred.shape)
        return loss, pred, mask

    def backward(self, dloss=1.0, dpred=None):
        """Accumulate every trainable parameter's gradient; return d(images).

        dloss: the upstream gradient of the loss (a number or a 0-d array);
        dpred: an optional extra upstream gradient on pred (B, L, p p C).
        """
        lcache, pcache, mcache, pred_shape = self._take_cache()
        if hasattr(dloss, "shape"):
            self._check_upstream("dloss", dloss, (), "CRATEMAE (dloss)")
        else:
            dloss = check_real("dloss", dloss)
        dpred_total, dpatches = masked_mse_backward(dloss, lcache)
        if dpred is not None:
            self._check_upstream("dpred", dpred, pred_shape, "CRATEMAE (dpred)")
            dpred_total = dpred_total + dpred
        B, L, P = pred_shape
        dx = self.xp.zeros((B, L + 1, P), dtype=dpred_total.dtype)
        dx[:, 1:] = dpred_total                                      # the cls row had none
        dx = self.decoder_norm.backward(self.decoder_pred.backward(dx))
        for blk in reversed(list(self.decoder_blocks)):
            dx = blk.backward(dx)
        dx = self.norm.backward(dx)
        for blk in reversed(list(self.blocks)):
            dx = blk.backward(dx)
        dx = self._tokens_backward(dx, None)         # decoder_pos_embed is frozen: no gradient
        dtokens, dmask_token = mask_tokens_backward(dx, mcache)
        self._accumulate("mask_token", dmask_token)
        dimages = self.patch_embed.backward(dtokens)
        dimages += patchify_backward(dpatches, pcache)   # the target is the images too
        return dimages

    def extra_repr(self):
        c = self.config
        return (f"image_size={c['image_size']}, patch_size={c['patch_size']}, dim={c['dim']}, "
                f"depth={c['depth']}, heads={c['heads']}, decoder_depth={c['decoder_depth']}, "
                f"decoder_heads={c['decoder_heads']}, mask_ratio={c['mask_ratio']}")


def _official(dim, depth, heads, decoder_depth, kw):
    cfg = dict(image_size=224, patch_size=16, dim=dim, depth=depth, heads=heads,
               decoder_depth=decoder_depth)
    cfg.update(kw)
    return CRATEMAE(**cfg)


def mae_crate_tiny(**kw):
    """CRATE-MAE-T: d 384, 12 + 12 layers, 6 heads (11,555,328 numbers in the state dict)."""
    return _official(384, 12, 6, 12, kw)


def mae_crate_small(**kw):
    """CRATE-MAE-S: d 576, 12 + 12 layers, 12 heads (25,405,824)."""
    return _official(576, 12, 12, 12, kw)


def mae_crate_base(**kw):
    """CRATE-MAE-B: d 768, 12 + 12 layers, 12 heads (44,638,464)."""
    return _official(768, 12, 12, 12, kw)


def mae_crate_large(**kw):
    """CRATE-MAE-L: d 1024, 24 + 24 layers, 16 heads (154,274,560)."""
    return _official(1024, 24, 16, 24, kw)
