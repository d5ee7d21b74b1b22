"""The CRATE-alpha pieces as Modules, named as the official torch state dict names them.

    AlphaLayer -> "0.<PreNorm(MSSA)>", "1.<PreNorm(OvercompleteISTA)>"

The second half is the official OvercompleteISTABlock: whitebox.nn.OvercompleteISTA
with ``tied=False``, parameters "D" and "D1" (d, m), m = expansion d, the
Module the language models use with a tied decoder. The patch convolution
``conv1`` is whitebox.nn.PatchConv (shared with CRATE-MAE).

(UCSC-VLAA/CRATE-alpha, torch_inference/model/crate_alpha.py.)
"""
from .crate_layers import (CAPTURE_KEYS, MSSA, OvercompleteISTA, PreNorm, TwoHalves,
                           attention_options)
from .layers import _rng


class AlphaLayer(TwoHalves):
    """One CRATE-alpha layer, both halves with a residual:

        Z^{l+1/2} = Z^l + MSSA(LN1(Z^l))               (output projection without bias)
        Z^{l+1}   = Z^{l+1/2} + c2(LN2(Z^{l+1/2})) D1^T

    Children "0" and "1" as in the official ModuleList (also ``attn``, ``ista``);
    LayerNorm eps 1e-6 as the official PreNorm. ``attention``: the MSSA
    options of whitebox.nn.MSSA (None: the official attention).
    """

    def __init__(self, dim, heads, dim_head, expansion=4, ista_step=0.1, ista_lambda=0.1,
                 dtype="float32", seed=0, attention=None):
        super().__init__(dtype)
        rng = _rng(seed)
        opts = {"out_bias": False, **attention_options(attention)}
        setattr(self, "0", PreNorm(dim, MSSA(dim, heads, dim_head, dtype=dtype, seed=rng,
                                             **opts), eps=1e-6, dtype=dtype))
        setattr(self, "1", PreNorm(dim, OvercompleteISTA(dim, expansion, ista_step, ista_lambda,
                                                         tied=False, dtype=dtype, seed=rng),
                                   eps=1e-6, dtype=dtype))

    def forward(self, x, capture=None):
        """x (B, N, d) -> (B, N, d); ``capture``: dict of lists to append this layer's features to.

        Captured under CRATE's keys: "mssa_in", "attention", "z_half",
        "ista_in", "code" = the sparse code c2 (B, N, m), whose sparsity the
        per-layer measures read, and "z" = the layer output
        Z^{l+1} = Z^{l+1/2} + c2 D1^T.
        """
        h = self.attn.norm(x)                      # LN1(Z^l)
        x_half = x + self.attn.fn(h)               # Z^{l+1/2}
        h2 = self.ista.norm(x_half)                # LN2(Z^{l+1/2})
        out = x_half + self.ista.fn(h2)            # Z^{l+1}
        if capture is not None:
            for key, value in zip(CAPTURE_KEYS, (h, self.attn.fn.last_attention, x_half, h2,
                                                 self.ista.fn.last_codes, out)):
                capture[key].append(value)
        self._cache = True
        return out

    def backward(self, dout):
        self._take_cache()
        dx_half = dout + self.ista.backward(dout)          # residual + the ISTA branch
        return dx_half + self.attn.backward(dx_half)       # residual + the MSSA branch
