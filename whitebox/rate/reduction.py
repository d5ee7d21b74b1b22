"""Rate reduction and sparse rate reduction: the objective CRATE's layers climb.

    DeltaR(Z | U) = R(Z) - Rc(Z | U)
    SRR(Z | U)    = R(Z) - Rc(Z | U) - lam ||Z||_1,   ||Z||_1 = sum_{i, j} |Z_ij|

over the N x d token matrix of each item (the papers' ||Z||_0, relaxed to l1,
NOT divided by N: pass lam / N for a per-token penalty). Maximising DeltaR expands
the whole set while compressing each subspace's share; the l1 term asks for
sparse (axis-aligned) codes. ``eps`` is the papers' epsilon (official ``eps``
= epsilon squared). R and Rc follow the one precision rule of
:mod:`whitebox.rate.gram` (``accumulate`` None, 'float32' or 'float64'): never
silently wrong.
"""
from ..backend import get_array_module
from ..functional._checks import check_real
from .coding import coding_rate_backward, coding_rate_forward
from .compression import _select, compression_rate_backward, compression_rate_forward


def rate_reduction(Z, U, eps, accumulate=None):
    """DeltaR = R(Z) - Rc(Z | U). Z (N, d) or (B, N, d); U (K, d, p). Returns shape Z.shape[:-2]."""
    R = coding_rate_forward(Z, eps, accumulate)[0]
    Rc = compression_rate_forward(Z, U, eps, accumulate)[0]
    return R - Rc


def rate_reduction_grad(Z, U, eps, wrt="Z", dout=None, accumulate=None):
    """Gradient of sum(dout * DeltaR): wrt 'Z' -> dR/dZ - dRc/dZ; 'U' -> -dRc/dU; 'both'."""
    _, r_cache = coding_rate_forward(Z, eps, accumulate)
    _, c_cache = compression_rate_forward(Z, U, eps, accumulate)
    dZ_c, dU_c = compression_rate_backward(dout, c_cache)
    dZ = coding_rate_backward(dout, r_cache) - dZ_c
    return _select((dZ, -dU_c), wrt)


def sparse_rate_reduction(Z, U, eps, lam, accumulate=None):
    """SRR = R(Z) - Rc(Z | U) - lam sum_ij |Z_ij| (l1 over each item's N x d matrix)."""
    lam = check_real("lam", lam, 0.0)
    dR = rate_reduction(Z, U, eps, accumulate)
    l1 = abs(Z).sum(axis=(-2, -1))                      # (...,)
    return dR - lam * l1.astype(dR.dtype, copy=False)


def sparse_rate_reduction_grad(Z, U, eps, lam, wrt="Z", dout=None, accumulate=None):
    """Gradient of sum(dout * SRR): dZ = dR/dZ - dRc/dZ - lam sign(Z); dU = -dRc/dU.

    sign(0) = 0 is the subgradient chosen at a kink (keep checks away from 0).
    """
    lam = check_real("lam", lam, 0.0)
    xp = get_array_module(Z)
    dZ, dU = rate_reduction_grad(Z, U, eps, wrt="both", dout=dout, accumulate=accumulate)
    dl1 = lam * xp.sign(Z)                              # (..., N, d)
    if dout is not None:
        dl1 = dl1 * xp.asarray(dout)[..., None, None]
    dZ = dZ - dl1.astype(dZ.dtype, copy=False)
    return _select((dZ, dU), wrt)
