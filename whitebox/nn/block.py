"""The residual block every CRATE family shares: forward, backward and feature capture, once.

    Z^{l+1/2} = Z^l + MSSA(LN1(Z^l))
    Z^{l+1}   = ISTA(LN2(Z^{l+1/2}))                 (CRATE, the language models)
    Z^{l+1}   = Z^{l+1/2} + ISTA(LN2(Z^{l+1/2}))     (CRATE-alpha: ``ista_residual``)

Backward is the reverse walk: the ISTA half (plus the identity when it has a
residual), then dZ^l = dZ^{l+1/2} + LN1'(MSSA'(dZ^{l+1/2})).
"""
from .module import Module

# Per-layer features a forward with capture appends, the same keys for every
# model: "code" is always the sparse code the ISTA step produces (for CRATE
# the layer output itself), "z" always the layer's output Z^{l+1}.
CAPTURE_KEYS = ("mssa_in", "attention", "z_half", "ista_in", "code", "z")


class ResidualBlock(Module):
    """A block of two pre-norm halves, MSSA with a residual, then ISTA (see the module docstring).

    Subclasses give ``parts()`` -> (LN1, MSSA, LN2, ISTA), the four child
    Modules; ``ista_residual`` says whether the ISTA half has a residual;
    ``code(ista_out)`` is the sparse code captured under "code" (by default the
    ISTA half's output).
    """

    ista_residual = False

    def parts(self):
        raise NotImplementedError(f"{type(self).__name__} must define parts()")

    def code(self, ista_out):
        return ista_out

    def forward(self, x, capture=None):
        """x (B, N, d) -> (B, N, d); ``capture``: dict of lists to append this block's
        features to, under CAPTURE_KEYS."""
        norm1, attn, norm2, ista = self.parts()
        h = norm1(x)                               # LN1(Z^l)
        x_half = x + attn(h)                       # Z^{l+1/2}
        h2 = norm2(x_half)                         # LN2(Z^{l+1/2})
        ista_out = ista(h2)
        out = x_half + ista_out if self.ista_residual else ista_out   # Z^{l+1}
        if capture is not None:
            for key, value in zip(CAPTURE_KEYS, (h, attn.last_attention, x_half, h2,
                                                 self.code(ista_out), out)):
                capture[key].append(value)
        self._cache = True
        return out

    def backward(self, dout):
        self._take_cache()
        norm1, attn, norm2, ista = self.parts()
        dx_half = norm2.backward(ista.backward(dout))          # through ISTA and LN2
        if self.ista_residual:
            dx_half = dout + dx_half                           # residual + the ISTA branch
        return dx_half + norm1.backward(attn.backward(dx_half))   # residual + the MSSA branch
