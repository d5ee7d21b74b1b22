"""The CRATE-alpha pieces as Modules, named as the official torch state dict names them.

    AlphaLayer -> "0.<PreNorm(MSSA)>", "1.<PreNorm(OvercompleteISTA)>"

The second half is the official OvercompleteISTABlock: whitebox.nn.OvercompleteISTA
with ``tied=False``, parameters "D" and "D1" (d, m), m = expansion d, the
Module the language models use with a tied decoder. The patch convolution
``conv1`` is whitebox.nn.PatchConv (shared with CRATE-MAE).

(UCSC-VLAA/CRATE-alpha, torch_inference/model/crate_alpha.py.)
"""
from .crate_layers import MSSA, OvercompleteISTA, PreNorm, TwoHalves, attention_options
from .layers import _rng


class AlphaLayer(TwoHalves):
    """One CRATE-alpha layer, both halves with a residual:

        Z^{l+1/2} = Z^l + MSSA(LN1(Z^l))               (output projection without bias)
        Z^{l+1}   = Z^{l+1/2} + c2(LN2(Z^{l+1/2})) D1^T

    Children "0" and "1" as in the official ModuleList (also ``attn``, ``ista``);
    LayerNorm eps 1e-6 as the official PreNorm. ``attention``: the MSSA
    options of whitebox.nn.MSSA (None: the official attention).
    """

    ista_residual = True

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

    def code(self, ista_out):
        """The sparse code c2 (B, N, m) of the last forward, whose sparsity the per-layer
        measures read (captured under "code"; "z" is Z^{l+1} = Z^{l+1/2} + c2 D1^T)."""
        return self.ista.fn.last_codes
