"""Supervised maximal coding rate reduction (MCR^2, Yu et al. 2020) with its exact gradient.

Given features Z (N, d) (tokens/samples as rows) and labels, class j holding
the N_j rows Z_j:

    R(Z)          = 1/2 logdet(I + d/(N eps^2) Z^T Z)                    (expand all)
    Rc(Z | labels) = sum_j N_j/(2N) logdet(I + d/(N_j eps^2) Z_j^T Z_j)   (compress each class)
    loss          = -R(Z) + Rc(Z | labels) = -(R - Rc),   minimised.

The gradient of each class term lands only on that class's rows:

    dRc/dZ_j = (N_j / N) a_j Z_j (I + a_j Z_j^T Z_j)^{-1},   a_j = d / (N_j eps^2).

Features are usually normalised to unit rows first: R grows without bound
with the feature scale. A negative loss is expected (R > Rc). ``eps`` is the
papers' epsilon; the official mcr2 code's ``eps`` is epsilon squared: its
supervised training script's default ``--eps 0.5`` is eps = sqrt(0.5) here,
and its loss class's own default ``eps=0.01`` is eps = 0.1 here. Precision
follows the one rule of :mod:`whitebox.rate.gram` for R and for every class term.
"""
from ..backend import get_array_module, to_numpy
from ..functional._checks import check_accumulate, check_labels, check_real, check_tokens
from .coding import coding_rate_backward, coding_rate_forward
from .gram import gram_logdet_backward, gram_logdet_forward, rate_scale


def _check_features(Z):
    xp = check_tokens("Z", Z)
    if Z.ndim != 2:
        raise ValueError(f"Z must have shape (N, d) (one feature vector per row) for a "
                         f"labelled rate, got shape {tuple(Z.shape)}")
    return xp


def class_compression_forward(Z, labels, eps, accumulate=None):
    """Rc = sum_j N_j/(2N) logdet(I + d/(N_j eps^2) Z_j^T Z_j) over the classes present.

    Inputs: Z (N, d); labels (N,) non-negative ints; eps > 0; accumulate None,
    'float32' or 'float64' (the precision rule of :mod:`whitebox.rate.gram`,
    applied to each class).
    Returns: Rc (0-d, in Z's dtype or the accumulate dtype); cache.
    """
    xp = _check_features(Z)
    check_labels(labels, Z.shape[0], xp)
    eps = check_real("eps", eps, 0.0, low_open=True)
    acc = check_accumulate(accumulate)
    N, d = Z.shape
    Rc = xp.zeros((), dtype=acc or Z.dtype)
    parts = []
    for j in to_numpy(xp.unique(labels)).tolist():      # one small Python loop over classes
        rows = xp.nonzero(labels == j)[0]
        N_j = int(rows.shape[0])
        h_j, cache_j = gram_logdet_forward(Z[rows], rate_scale(d, N_j, eps), "auto", acc,
                                           eps=eps)
        Rc = Rc + (N_j / N) * h_j
        parts.append((rows, N_j / N, cache_j))
    return Rc, (Z, parts, Rc.dtype)


def class_compression_backward(dout, cache):
    """dZ_j = dout (N_j/N) a_j (I + a_j Z_j Z_j^T)^{-1} Z_j on each class's rows."""
    Z, parts, acc_dtype = cache
    xp = get_array_module(Z)
    dZ = xp.zeros(Z.shape, dtype=acc_dtype)
    for rows, weight, cache_j in parts:
        dZ[rows] = weight * gram_logdet_backward(None, cache_j)   # rows are disjoint
    if dout is not None:
        dZ *= dout
    return dZ.astype(Z.dtype, copy=False)


def class_compression_rate(Z, labels, eps, accumulate=None):
    """Rc(Z | labels) = sum_j N_j/(2N) logdet(I + d/(N_j eps^2) Z_j^T Z_j); a 0-d value."""
    return class_compression_forward(Z, labels, eps, accumulate)[0]


def mcr2_loss(Z, labels, eps, accumulate=None):
    """MCR^2 loss = -R(Z) + Rc(Z | labels) and its gradient (minimise it).

    Inputs: Z (N, d) features (usually unit rows); labels (N,) non-negative
    integer class indices (any subset of classes may be present); eps the
    papers' epsilon (official ``eps`` = epsilon squared); accumulate None,
    'float32' or 'float64' (see :mod:`whitebox.rate.gram`).
    Returns: loss (Python float; -loss is the rate reduction R - Rc),
    dZ (N, d) with Z's dtype.
    """
    Rc, c_cache = class_compression_forward(Z, labels, eps, accumulate)
    R, r_cache = coding_rate_forward(Z, eps, accumulate)
    dZ = class_compression_backward(None, c_cache) - coding_rate_backward(None, r_cache)
    return float(Rc - R), dZ
