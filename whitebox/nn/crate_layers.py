"""The two CRATE operators as Modules, named as the official state dict names them.

    PreNorm(norm, fn)          -> "norm.weight", "norm.bias", "fn...."
    MSSA (official Attention)  -> "qkv.weight", "to_out.0.weight", "to_out.0.bias"
                                  (no "to_out" when out="tied")
    ISTA (official FeedForward)-> "weight"
    OvercompleteISTA           -> "weight" (m, d) tied (crate-lm), or "D", "D1" (d, m) (CRATE-alpha)
    CRATELayer                 -> "0.<PreNorm(MSSA)>", "1.<PreNorm(ISTA)>"
"""
import math


from .. import functional as F
from ..functional._blas import matmul_rows
from ..functional._checks import (check_dout, check_positive_int, check_probability,
                                 check_real)
from ..functional.mssa_variants import UPDATES
from .block import CAPTURE_KEYS, ResidualBlock  # noqa: F401 (CAPTURE_KEYS: re-exported)
from .layers import LayerNorm, Linear, _rng, uniform_init
from .module import Module, Sequential


class PreNorm(Module):
    """y = fn(LayerNorm(x)), with children named ``norm`` and ``fn``."""

    def __init__(self, dim, fn, eps=1e-5, dtype="float32"):
        super().__init__(dtype)
        self.norm = LayerNorm(dim, eps=eps, dtype=dtype)
        self.fn = fn

    def forward(self, x):
        return self.fn(self.norm(x))

    def backward(self, dout):
        return self.norm.backward(self.fn.backward(dout))


OUTS = ("learned", "tied")
SCALES = ("sqrt", "rate")
ATTENTION_OPTIONS = ("out", "scale", "update", "eps", "kappa")


def _choice(name, value, allowed):
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"attention {name} must be one of {allowed}, got {value!r}")
    return value


class MSSA(Module):
    """Multi-head subspace self-attention (the official ``Attention``), and its theory-faithful variants.

    The children ``qkv`` (bias-free, rows = the stacked subspaces U_k^T) and
    ``to_out`` hold the parameters under the official names. The official
    computation runs whitebox.functional.mssa_fast_forward / mssa_fast_backward
    (the fast path of the graded mssa_forward / mssa_backward); any variant
    runs whitebox.functional.mssa_variant_forward / _backward. As in the
    official code there is no output projection when heads == 1 and dim_head == dim.

    Each departure of the official code from the derivation can be switched
    off alone (defaults = official):
      out="learned"     separate ``to_out`` Linear (with bias unless out_bias=False)
      out="tied"        the output projection is U itself: `[O_1 .. O_K] [U_1 .. U_K]^T`
      scale="sqrt"      softmax(p^{-1/2} w_k w_k^T), output coefficient 1
      scale="rate"      softmax(b w_k w_k^T), b = p/(N eps^2) (eps the papers' epsilon),
                        and the step of size kappa:  y = kappa b ([SSA_k] P - x),
                        so x + y = (1 - kappa b) x + kappa b [SSA_k] P
      update="softmax"  the official softmax weighting
      update="exact"    O_k = -(I + s w_k w_k^T)^{-1} w_k, the exact gradient of the
                        compression rate (s = b with scale="rate", p^{-1/2} with "sqrt");
                        with out="tied" and scale="rate", x + y is exactly
                        x - kappa dRc(x | U)/dx  (whitebox.rate.compression_step).
                        It has no attention map, so ``dropout`` acts on the output only.
      softmax=False     A_k = s w_k w_k^T itself, unnormalised (the CRATE-MAE decoder's
                        official ``use_softmax=False``).
    The number s for N tokens is ``coefficients(N)[0]``.
    """

    def __init__(self, dim, heads=8, dim_head=64, dropout=0.0, causal=False,
                 dtype="float32", seed=0, out="learned", scale="sqrt", update="softmax",
                 eps=None, kappa=1.0, out_bias=True, softmax=True):
        super().__init__(dtype)
        for name, v in (("dim", dim), ("heads", heads), ("dim_head", dim_head)):
            check_positive_int(name, v)
        self.out = _choice("out", out, OUTS)
        self.scale = _choice("scale", scale, SCALES)
        self.update = _choice("update", update, UPDATES)
        self.softmax = bool(softmax)     # False: the CRATE-MAE decoder's use_softmax=False
        if scale == "rate":
            if eps is None:
                raise ValueError("attention scale='rate' needs a positive eps (the papers' "
                                 "epsilon in b = p/(N eps^2)), got eps=None")
            self.eps = check_real("attention eps", eps, 0.0, low_open=True)
            self.kappa = check_real("attention kappa", kappa, 0.0, low_open=True)
        elif eps is not None:
            raise ValueError(f"attention eps={eps!r} is used only with scale='rate' "
                             f"(scale={scale!r})")
        else:
            self.eps, self.kappa = None, 1.0
        if update == "exact" and causal:
            raise ValueError("attention update='exact' has no causal form (causal=True)")
        if update == "exact" and not softmax:
            raise ValueError("attention update='exact' has no softmax to switch off "
                             "(softmax=False)")
        rng = _rng(seed)
        self.heads, self.dim_head, self.causal = int(heads), int(dim_head), bool(causal)
        inner = heads * dim_head
        self.qkv = Linear(dim, inner, bias=False, dtype=dtype, seed=rng)
        self.project_out = out == "learned" and not (heads == 1 and dim_head == dim)
        if self.project_out:
            # "to_out.0" as in the official Sequential(Linear, Dropout); the
            # dropouts themselves run inside the functional forward, with self.rng
            self.to_out = Sequential(Linear(inner, dim, bias=out_bias, dtype=dtype, seed=rng),
                                     dtype=dtype)
        self.dropout = check_probability("dropout", dropout)
        self.rng = rng

    def _draws(self):
        return self.dropout > 0

    def _out_params(self):
        """(W_out, b_out) of the output projection: to_out's, W_qkv^T (tied) or (None, None)."""
        if self.out == "tied":
            return self.qkv.param("weight").T, None
        if not self.project_out:
            return None, None
        lin = self.to_out[0]
        return lin.param("weight"), lin._params.get("bias")

    def official(self):
        """True when the head update is the official softmax at scale p^{-1/2}
        (then forward runs the fast path, else the variants' composition)."""
        return self.scale == "sqrt" and self.update == "softmax" and self.softmax

    def coefficients(self, num_tokens):
        """(s, c, r): softmax scale, output gain and shrink of x for N = num_tokens."""
        if self.scale == "sqrt":
            return self.dim_head ** -0.5, 1.0, 0.0
        b = self.dim_head / (num_tokens * self.eps ** 2)
        return b, self.kappa * b, (self.kappa * b if self.update == "softmax" else 0.0)

    def forward(self, x):
        W_qkv = self.qkv.param("weight")
        W_out, b_out = self._out_params()
        s, gain, shrink = self.coefficients(x.shape[1])
        if self.official():
            y, self._cache = F.mssa_fast_forward(x, W_qkv, W_out, b_out, self.heads, s,
                                                 self.causal, self.dropout, self.rng,
                                                 self.training)
        else:
            y, self._cache = F.mssa_variant_forward(
                x, W_qkv, W_out, b_out, self.heads, s, update=self.update,
                softmax=self.softmax, gain=gain, shrink=shrink, causal=self.causal,
                dropout=self.dropout, rng=self.rng, training=self.training)
        self.last_attention = self._cache["attn"]   # (B, K, N, N), for figures
        return y

    def backward(self, dout):
        backward = F.mssa_fast_backward if self.official() else F.mssa_variant_backward
        dx, dW_qkv, dW_out, db_out = backward(dout, self._take_cache())
        if self.out == "tied":                      # W_out = W_qkv^T
            dW_qkv += dW_out.T
        self.qkv._accumulate("weight", dW_qkv)
        if self.project_out:
            self.to_out[0]._accumulate("weight", dW_out)
            if db_out is not None:
                self.to_out[0]._accumulate("bias", db_out)
        return dx

    def subspaces(self):
        """U of shape (K, d, p): U_k = W_qkv[k p:(k+1) p, :]^T."""
        W = self.qkv.param("weight")                              # (K p, d)
        K, p = self.heads, self.dim_head
        return W.reshape(K, p, -1).transpose(0, 2, 1)             # (K, d, p)

    def extra_repr(self):
        extra = ""
        if (self.out, self.scale, self.update) != ("learned", "sqrt", "softmax"):
            extra = f", out={self.out!r}, scale={self.scale!r}, update={self.update!r}"
            if self.eps is not None:
                extra += f", eps={self.eps}, kappa={self.kappa}"
        if not self.softmax:
            extra += ", softmax=False"
        return f"heads={self.heads}, dim_head={self.dim_head}, causal={self.causal}{extra}"


def attention_options(attention):
    """Validate ``attention=dict(out=, scale=, update=, eps=, kappa=)``; None -> {}."""
    if attention is None:
        return {}
    if not isinstance(attention, dict):
        raise TypeError(f"attention must be a dict of MSSA options {ATTENTION_OPTIONS} or "
                        f"None, got {type(attention).__name__}")
    unknown = sorted(set(attention) - set(ATTENTION_OPTIONS))
    if "step" in unknown:
        raise ValueError("attention option 'step' is now called 'update' "
                         f"(update={attention['step']!r}); expected some of {ATTENTION_OPTIONS}")
    if unknown:
        raise ValueError(f"unknown attention option(s) {unknown}; expected some of "
                         f"{ATTENTION_OPTIONS}")
    return dict(attention)


class ISTA(Module):
    """One ISTA sparse-coding step (the official ``FeedForward``), parameter ``weight``.

    Initialised kaiming_uniform as the official code: U(-sqrt(6/d), sqrt(6/d)).
    """

    def __init__(self, dim, ista_step=0.1, ista_lambda=0.1, dtype="float32", seed=0):
        super().__init__(dtype)
        check_positive_int("dim", dim)
        self.ista_step = check_real("ista_step", ista_step, 0.0, low_open=True)
        self.ista_lambda = check_real("ista_lambda", ista_lambda, 0.0)
        bound = math.sqrt(6.0 / dim)
        self.add_param("weight", uniform_init(_rng(seed), (dim, dim), bound))

    def forward(self, x):
        y, self._cache = F.ista_forward(x, self._params["weight"], self.ista_step, self.ista_lambda)
        return y

    def backward(self, dout):
        dx, dW = F.ista_backward(dout, self._take_cache())
        self._accumulate("weight", dW)
        return dx

    def extra_repr(self):
        return f"ista_step={self.ista_step}, ista_lambda={self.ista_lambda}"


class OvercompleteISTA(Module):
    """Two ISTA steps from zero against an overcomplete dictionary D (d, m), decoded to width d.

        a = x D;  c1 = ReLU(eta a - eta lambda)
        c2 = ReLU(c1 + eta (a - c1 D^T D) - eta lambda)      (..., m), m = expansion d
        y  = c2 E^T                                          (..., d)

    The codes come from whitebox.functional.overcomplete_ista (one pair for
    both models); the decoder E is the only difference, and each model keeps
    its official parameters:

    - ``tied=True`` (the causal and masked language models, crate-lm's MLP):
      E = D = W^T, one parameter "weight" W of shape (m, d) whose rows are
      the atoms; dW = c2^T dout + dD^T.
    - ``tied=False`` (CRATE-alpha's OvercompleteISTABlock): "D" codes and
      "D1" decodes, both (d, m).

    Every weight is initialised kaiming-uniform as the official code, by
    torch's fan-in of the stored tensor (its second axis): U(-sqrt(6/d),
    sqrt(6/d)) for W, U(-sqrt(6/m), sqrt(6/m)) for D and D1. The codes c2 of
    the last forward are kept as ``last_codes`` for sparsity measurements.
    """

    def __init__(self, dim, expansion=4, ista_step=0.1, ista_lambda=0.1, tied=True,
                 dtype="float32", seed=0):
        super().__init__(dtype)
        dim, expansion = check_positive_int("dim", dim), check_positive_int("expansion", expansion)
        self.ista_step = check_real("ista_step", ista_step, 0.0, low_open=True)
        self.ista_lambda = check_real("ista_lambda", ista_lambda, 0.0)
        if not isinstance(tied, bool):
            raise TypeError(f"tied must be True or False, got {tied!r}")
        self.tied = tied
        m, rng = expansion * dim, _rng(seed)
        if self.tied:
            self.add_param("weight", uniform_init(rng, (m, dim), math.sqrt(6.0 / dim)))
        else:
            self.add_param("D", uniform_init(rng, (dim, m), math.sqrt(6.0 / m)))
            self.add_param("D1", uniform_init(rng, (dim, m), math.sqrt(6.0 / m)))
        self.last_codes = None

    def _dictionary_and_decoder(self):
        """D (d, m) that codes, and the (m, d) matrix that decodes: W^T and W, or D and D1^T."""
        if self.tied:
            W = self._params["weight"]
            return W.T, W
        return self._params["D"], self._params["D1"].T

    def forward(self, x):
        D, decoder = self._dictionary_and_decoder()
        codes, ista_cache = F.overcomplete_ista_forward(x, D, self.ista_step, self.ista_lambda)
        self.last_codes = codes                                      # (..., m)
        self._cache = (codes, ista_cache)
        return matmul_rows(codes, decoder)                           # (..., d)

    def backward(self, dout):
        codes, ista_cache = self._take_cache()
        D, decoder = self._dictionary_and_decoder()
        m, d = decoder.shape
        check_dout("OvercompleteISTA", dout, codes.shape[:-1] + (d,))
        dx, dD = F.overcomplete_ista_backward(matmul_rows(dout, decoder.T), ista_cache)
        codes2, dout2 = codes.reshape(-1, m), dout.reshape(-1, d)
        if self.tied:                                   # W is both the decoder and D^T
            dW = codes2.T @ dout2                                    # (m, d) through c2 W
            dW += dD.T
            self._accumulate("weight", dW)
        else:
            self._accumulate("D1", dout2.T @ codes2)                 # (d, m) through c2 D1^T
            self._accumulate("D", dD)
        return dx

    def extra_repr(self):
        d, m = self._dictionary_and_decoder()[0].shape
        return (f"{d}, {m}, ista_step={self.ista_step}, ista_lambda={self.ista_lambda}, "
                f"tied={self.tied}")


class TwoHalves(ResidualBlock):
    """A layer of two PreNorm halves named "0" (the MSSA half, ``attn``) and "1" (the
    sparse-coding half, ``ista``), as in the official ModuleList [attn, ff]."""

    def parts(self):
        return self.attn.norm, self.attn.fn, self.ista.norm, self.ista.fn

    @property
    def attn(self):
        return self._modules["0"]

    @property
    def ista(self):
        return self._modules["1"]

    def __getitem__(self, i):
        if i not in (0, 1, -1, -2):
            raise IndexError(f"a {type(self).__name__} has two children (0: MSSA, 1: ISTA), "
                             f"got index {i}")
        return self._modules[str(i % 2)]

    def __iter__(self):
        return iter((self.attn, self.ista))

    def __len__(self):
        return 2


class CRATELayer(TwoHalves):
    """One CRATE layer: Z^{l+1/2} = Z^l + MSSA(LN1(Z^l));  Z^{l+1} = ISTA(LN2(Z^{l+1/2})).

    Children are named "0" (PreNorm(MSSA)) and "1" (PreNorm(ISTA)) as in the
    official ModuleList, and are also reachable as ``attn`` and ``ista``.
    Note the residual around MSSA only: the ISTA step has none.
    """

    def __init__(self, dim, heads, dim_head, dropout=0.0, ista_step=0.1, ista_lambda=0.1,
                 causal=False, dtype="float32", seed=0, attention=None):
        super().__init__(dtype)
        rng = _rng(seed)
        setattr(self, "0", PreNorm(dim, MSSA(dim, heads, dim_head, dropout, causal,
                                             dtype=dtype, seed=rng,
                                             **attention_options(attention)), dtype=dtype))
        setattr(self, "1", PreNorm(dim, ISTA(dim, ista_step, ista_lambda, dtype=dtype,
                                             seed=rng), dtype=dtype))

    # written out on the layer (not only inherited) so that CRATELayer.forward and
    # .backward are the names the course grades; the computation is ResidualBlock's
    def forward(self, x, capture=None):
        """x (B, N, d) -> (B, N, d); ``capture``: dict of lists for this layer's features."""
        return super().forward(x, capture)

    def backward(self, dout):
        """dZ^{l+1/2} = LN2'(ISTA'(dout));  dZ^l = dZ^{l+1/2} + LN1'(MSSA'(dZ^{l+1/2}))."""
        return super().backward(dout)
