"""The coding rate R(Z) of a set of tokens and its exact gradient.

    R(Z) = 1/2 logdet(I_d + a Z^T Z),   a = d / (N eps^2),   Z (N, d), tokens as rows.

R(Z) is (up to lower-order terms) the average number of nats per token
needed to code the N tokens up to a mean squared distortion eps^2 per token
(coding all N costs about N times R): the log of how many eps-balls it takes
to pack the ellipsoid the tokens span.

    dR/dZ = a Z (I_d + a Z^T Z)^{-1} = a (I_N + a Z Z^T)^{-1} Z.

About eps. Here ``eps`` is the papers' epsilon, a distortion. The official
codes (mcr2, ReduNet, CRATE's vis_utils) pass a number they call ``eps`` that
stands for epsilon SQUARED (their scale is d / (N eps)). To reproduce a
result computed with their ``eps=e2``, call these functions with
``eps=math.sqrt(e2)``; for example their ``eps=0.5`` is ``eps=0.7071...`` here.

Precision: never silently wrong. float32 input is computed in float32 only
where float32 holds the answer to 0.1%, otherwise in float64 (or refused with
``accumulate='float32'``); an eps too small even for float64 is refused with
the smallest usable eps. The rule and its bound are in :mod:`whitebox.rate.gram`.
"""
from ..backend import get_array_module
from ..functional._checks import check_accumulate, check_rate_dout, check_real, check_tokens
from .gram import gram_logdet_backward, gram_logdet_forward, rate_scale


def coding_rate_forward(Z, eps, accumulate=None, side="auto"):
    """R = 1/2 logdet(I + d/(N eps^2) Z^T Z) per item, with a cache for the gradient.

    Inputs: Z (N, d) or (B, N, d) (any leading axes), tokens as rows; eps the
    distortion (> 0); accumulate None (Z's dtype, promoted to float64 where
    float32 cannot hold the answer), 'float32' (refuse instead) or 'float64'
    (Gram matrix, Cholesky and inverse in float64): see :mod:`whitebox.rate.gram`;
    side 'auto' (the smaller Gram matrix), 'rows' (N x N) or 'cols' (d x d).
    Returns: R of shape Z.shape[:-2] (a 0-d value for a single (N, d) matrix)
    in Z's dtype (accumulate None) or the accumulate dtype; cache.
    """
    check_tokens("Z", Z)
    eps = check_real("eps", eps, 0.0, low_open=True)
    acc = check_accumulate(accumulate)
    N, d = Z.shape[-2:]
    R, cache = gram_logdet_forward(Z, rate_scale(d, N, eps), side, acc, eps=eps)
    return R, (cache, Z.dtype)


def coding_rate_backward(dout, cache):
    """dZ = dout * a Z (I + a Z^T Z)^{-1}, with the inverse of the smaller Gram side's matrix.

    Inputs: dout of shape R.shape (None: ones); cache from :func:`coding_rate_forward`.
    Returns: dZ, shape and dtype of Z.
    """
    gram_cache, dtype = cache
    X = gram_cache[0]
    dout = check_rate_dout(dout, X.shape[:-2], get_array_module(X))
    return gram_logdet_backward(dout, gram_cache).astype(dtype, copy=False)


def coding_rate(Z, eps, accumulate=None):
    """R(Z) = 1/2 logdet(I_d + d/(N eps^2) Z^T Z), tokens as rows.

    Inputs: Z (N, d) or (B, N, d); eps the papers' epsilon (the official code's
    ``eps`` is epsilon squared: pass ``math.sqrt(their_eps)``); accumulate None,
    'float32' or 'float64' (the precision rule of :mod:`whitebox.rate.gram`).
    Returns: a 0-d value for (N, d) input, shape (B,) for (B, N, d).
    """
    return coding_rate_forward(Z, eps, accumulate)[0]


def coding_rate_grad(Z, eps, dout=None, accumulate=None):
    """dR/dZ = d/(N eps^2) Z (I_d + d/(N eps^2) Z^T Z)^{-1}, same shape as Z.

    For batched Z each item's gradient is that of its own rate (the gradient of
    sum(dout * R); dout of shape (B,) defaults to ones).
    """
    R, cache = coding_rate_forward(Z, eps, accumulate)
    return coding_rate_backward(dout, cache)
