"""The CRATE-alpha pieces as Modules, named as the official torch state dict names them.

    OvercompleteISTABlock -> "D" (d, m), "D1" (d, m), m = expansion d (official name)
    AlphaLayer            -> "0.<PreNorm(MSSA)>", "1.<PreNorm(OvercompleteISTABlock)>"

The patch convolution ``conv1`` is whitebox.nn.PatchConv (shared with CRATE-MAE).
The language model's ``OvercompleteISTA`` (whitebox.nn.lm_layers) is the same
map with D1 = D and no residual, stored as one (m, d) weight.

(UCSC-VLAA/CRATE-alpha, torch_inference/model/crate_alpha.py.)
"""
import math

from .. import functional as F
from ..functional._blas import matmul_rows
from ..functional._checks import check_real
from .crate_layers import CAPTURE_KEYS, MSSA, PreNorm, TwoHalves, attention_options
from .layers import _rng, uniform_init
from .module import Module


class OvercompleteISTABlock(Module):
    """Two ISTA steps from zero against D, decoded by D1:  y = c2 D1^T.

        c1 = ReLU(eta x D - eta lambda)
        c2 = ReLU(c1 + eta (x D - c1 D^T D) - eta lambda)     (..., m)

    The codes come from whitebox.functional.overcomplete_ista (shared with the
    overcomplete causal language model); the decoder is the plain product
    c2 D1^T. D and D1 (d, m) are initialised kaiming-uniform as the official
    code: U(-sqrt(6/m), sqrt(6/m)) (torch's fan-in of a (d, m) tensor is m).
    The last codes c2 are kept as ``last_codes`` for sparsity measurements.
    """

    def __init__(self, dim, expansion=4, ista_step=0.1, ista_lambda=0.1, dtype="float32", seed=0):
        super().__init__(dtype)
        self.ista_step = check_real("ista_step", ista_step, 0.0, low_open=True)
        self.ista_lambda = check_real("ista_lambda", ista_lambda, 0.0)
        m = dim * expansion
        rng = _rng(seed)
        bound = math.sqrt(6.0 / m)
        self.add_param("D", uniform_init(rng, (dim, m), bound))
        self.add_param("D1", uniform_init(rng, (dim, m), bound))
        self.last_codes = None

    def forward(self, x):
        codes, icache = F.overcomplete_ista_forward(x, self._params["D"], self.ista_step,
                                                    self.ista_lambda)        # (..., m)
        self.last_codes = codes
        self._cache = (icache, codes)
        return matmul_rows(codes, self._params["D1"].T)                # (..., d)

    def backward(self, dout):
        icache, codes = self._take_cache()
        d, m = self._params["D1"].shape
        self._accumulate("D1", dout.reshape(-1, d).T @ codes.reshape(-1, m))   # (d, m)
        dx, dD = F.overcomplete_ista_backward(matmul_rows(dout, self._params["D1"]), icache)
        self._accumulate("D", dD)
        return dx

    def extra_repr(self):
        d, m = self._params["D"].shape
        return f"{d}, {m}, ista_step={self.ista_step}, ista_lambda={self.ista_lambda}"


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
        setattr(self, "1", PreNorm(dim, OvercompleteISTABlock(dim, expansion, ista_step,
                                                              ista_lambda, dtype=dtype,
                                                              seed=rng),
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
