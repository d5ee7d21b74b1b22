"""What the image models share: patch geometry, input checks, the cls token, pooling, the head.

    images (B, C, H, W) -> patch embedding (B, n, d)       the model's own (Patchify + Linear, conv)
      -> prepend cls_token, add positions                  (B, N, d), N = n + 1
      -> the model's layers
      -> pool (the cls row or the mean) -> head            LayerNorm -> Linear (mlp_head)

A model subclasses :class:`ImageModel`, calls ``_set_geometry`` in its
constructor and keeps its patch embedding, positions and layers under its own
(official) names; the base adds no parameter of its own.
"""
import numpy as np

from ..backend import backend_name
from ..functional._checks import (check_array, check_dout, check_finite, check_positive_int)
from ..nn import LayerNorm, Linear, Module, Sequential

POOLS = ("cls", "mean")


def _pair(name, v):
    """An int n means (n, n); a pair stays; anything else names the argument."""
    if isinstance(v, (tuple, list)):
        if len(v) != 2:
            raise ValueError(f"{name} must be an int or a (height, width) pair, got {v!r}")
        return tuple(v)
    return (v, v)


def image_geometry(image_size, patch_size):
    """((H, W), (p1, p2)): positive ints, the image cut into whole patches."""
    ih, iw = (check_positive_int("image_size", v) for v in _pair("image_size", image_size))
    ph, pw = (check_positive_int("patch_size", v) for v in _pair("patch_size", patch_size))
    if ih % ph or iw % pw:
        raise ValueError(f"image_size {ih}x{iw} is not divisible by patch_size {ph}x{pw}")
    return (ih, iw), (ph, pw)


def classifier_head(dim, num_classes, dtype, rng, eps=1e-5):
    """The official ``mlp_head``: LayerNorm(dim) -> Linear(dim, num_classes)."""
    return Sequential(LayerNorm(dim, eps=eps, dtype=dtype),
                      Linear(dim, num_classes, dtype=dtype, seed=rng), dtype=dtype)


class ImageModel(Module):
    """Base of the models that read (B, channels, H, W) images cut into patches.

    Sets (through ``_set_geometry``): image_hw, patch_hw, channels,
    num_patches, patch_dim. Offers: ``_images`` (checks, cast to the model's
    dtype, finite after the cast), ``_check_upstream`` (shape and finiteness
    of an upstream gradient), ``_tokens`` / ``_tokens_backward`` (the
    ``cls_token`` parameter (1, 1, d) and a position table (1, N, d)),
    ``_classify`` / ``_classify_backward`` (pooling and the ``mlp_head``).
    """

    def _set_geometry(self, image_size, patch_size, channels):
        self.image_hw, self.patch_hw = image_geometry(image_size, patch_size)
        self.channels = check_positive_int("channels", channels)
        (ih, iw), (ph, pw) = self.image_hw, self.patch_hw
        self.num_patches = (ih // ph) * (iw // pw)
        self.patch_dim = channels * ph * pw

    def _images(self, images):
        """images (B, C, H, W) on the model's backend -> the same in the model's dtype.

        Finiteness is checked after the cast: a finite float64 image past the
        largest float32 (3.4e38) would otherwise enter a float32 model as inf.
        """
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
        with np.errstate(over="ignore"):                      # overflow is reported below
            cast = images.astype(self.dtype, copy=False)
        check_finite("images" if cast is images else f"images cast to the model's dtype "
                     f"{self.dtype} (finite values past its range overflow)", cast)
        return cast

    def _check_upstream(self, name, dout, shape, op=None):
        """An upstream gradient ``name`` of the forward's output: its shape, and finite."""
        check_dout(op or type(self).__name__, dout, shape)
        check_finite(name, dout)

    def _tokens(self, patches, pos="pos_embedding"):
        """patches (B, n, d) -> tokens (B, N, d): the cls_token prepended, the table ``pos``
        (1, N, d) added."""
        xp = self.xp
        B, n, d = patches.shape
        cls = xp.broadcast_to(self._params["cls_token"], (B, 1, d))
        x = xp.concatenate([cls, patches], axis=1)                  # (B, N, d)
        x += self._params[pos]
        return x

    def _tokens_backward(self, dx, pos="pos_embedding"):
        """dx (B, N, d) -> d(patches) (B, n, d); adds the gradients of cls_token and of the
        table ``pos`` (None: a frozen table, no gradient)."""
        if pos is not None:
            self._accumulate(pos, dx.sum(axis=0, keepdims=True))
        self._accumulate("cls_token", dx[:, :1].sum(axis=0, keepdims=True))
        return dx[:, 1:]

    def _classify(self, x, pool="cls"):
        """x (B, N, d) -> logits (B, num_classes) through pooling and ``mlp_head``; keeps the
        shapes for ``_classify_backward``."""
        pooled = x[:, 0] if pool == "cls" else x.mean(axis=1)       # (B, d)
        logits = self.mlp_head(pooled)
        self._cache = (x.shape, logits.shape)
        return logits

    def _classify_backward(self, dlogits, pool="cls"):
        """dlogits (B, num_classes), checked -> dx (B, N, d) of the pooled tokens."""
        (B, N, d), logits_shape = self._take_cache()
        self._check_upstream("dlogits", dlogits, logits_shape)
        dpooled = self.mlp_head.backward(dlogits)                   # (B, d)
        if pool == "cls":
            dx = self.xp.zeros((B, N, d), dtype=dpooled.dtype)
            dx[:, 0] = dpooled
            return dx
        return self.xp.broadcast_to(dpooled[:, None, :] / N, (B, N, d)).copy()

    # ------------------------------------------------ models with CRATE-style layers
    def subspaces(self, layer):
        """U of layer ``layer`` of ``self.transformer``, (K, d, p), for
        whitebox.rate.measure_compression."""
        return self.transformer.layers[layer].attn.fn.subspaces()

    def attention_maps(self):
        """Attention of every layer of ``self.transformer`` from the last forward:
        list of (B, K, N, N)."""
        return [layer.attn.fn.last_attention for layer in self.transformer.layers]
