"""The official CRATE-MAE patch embedding as Modules: ``patch_embed.proj.{weight,bias}``.

``PatchConv`` is the convolution with kernel = stride = patch, weight
(d, C, p1, p2) and bias (d,), computed by whitebox.functional.patch_embed
as one matrix product on patch vectors; ``PatchEmbed`` only names it
``proj`` as timm's PatchEmbed does.
"""
import math

from ..functional.patch_embed import patch_embed_backward, patch_embed_forward
from ..functional.patches import _patch_pair
from .layers import _rng, uniform_init
from .module import Module


class PatchConv(Module):
    """(B, C, H, W) -> (B, L, d): Conv2d(C, d, kernel=stride=patch) with the tokens as rows.

    Initialised as PyTorch's Conv2d: weight and bias U(+-1/sqrt(C p1 p2));
    CRATE-MAE then re-draws the weight xavier-uniform on its (d, C p1 p2) view.
    """

    def __init__(self, channels, dim, patch_size, dtype="float32", seed=0):
        super().__init__(dtype)
        p1, p2 = _patch_pair(patch_size)
        rng = _rng(seed)
        bound = 1.0 / math.sqrt(channels * p1 * p2)
        self.add_param("weight", uniform_init(rng, (dim, channels, p1, p2), bound))
        self.add_param("bias", uniform_init(rng, (dim,), bound))

    def forward(self, images):
        out, self._cache = patch_embed_forward(images, self._params["weight"],
                                               self._params["bias"])
        return out

    def backward(self, dout):
        dimages, dW, db = patch_embed_backward(dout, self._take_cache())
        self._accumulate("weight", dW)
        self._accumulate("bias", db)
        return dimages

    def extra_repr(self):
        d, C, p1, p2 = self._params["weight"].shape
        return f"{C}, {d}, kernel_size=stride={p1}x{p2}"


class PatchEmbed(Module):
    """timm's PatchEmbed without a norm: one child ``proj``."""

    def __init__(self, channels, dim, patch_size, dtype="float32", seed=0):
        super().__init__(dtype)
        self.proj = PatchConv(channels, dim, patch_size, dtype=dtype, seed=seed)

    def forward(self, images):
        return self.proj(images)

    def backward(self, dout):
        return self.proj.backward(dout)
