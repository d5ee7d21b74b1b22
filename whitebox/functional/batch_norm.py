"""Batch normalisation of features over the rows of a batch (torch.nn.BatchNorm1d on (N, d)).

Training (batch statistics, biased variance, as PyTorch normalises):

    mu = mean_i x_i,   var = mean_i (x_i - mu)^2,   s = 1 / sqrt(var + eps)
    xhat_i = (x_i - mu) s,   y_i = gamma * xhat_i + beta               (per feature)

Every row's output depends on the whole batch, so the gradient in x is

    dxhat = dy * gamma
    dx_i  = s / N (N dxhat_i - sum_j dxhat_j - xhat_i sum_j dxhat_j xhat_j),
    dgamma = sum_i dy_i xhat_i,   dbeta = sum_i dy_i.

Evaluation uses fixed statistics (running_mean, running_var) instead: an
affine map per feature, y = (x - m) / sqrt(v + eps) gamma + beta, see
:func:`batch_norm_eval_forward`.
"""
from ._checks import check_array, check_dout, check_shape


def _check(x, gamma, beta):
    xp = check_array("x", x, ndim=2)
    check_array("gamma", gamma, ndim=1)
    check_shape("batch_norm: beta", beta, gamma.shape)
    if x.shape[1] != gamma.shape[0]:
        raise ValueError(f"batch_norm: x has {x.shape[1]} features (shape {tuple(x.shape)}), "
                         f"gamma has {gamma.shape[0]}")
    return xp


def batch_norm_forward(x, gamma, beta, eps=1e-5):
    """y = (x - mean) / sqrt(var + eps) * gamma + beta with the batch's statistics.

    Inputs: x (N, d), N >= 2; gamma, beta (d,).
    Returns: y (N, d), cache; the cache's ``mean`` and ``var`` (d,) are the batch's
    (biased variance), for a caller that keeps running statistics.
    """
    xp = _check(x, gamma, beta)
    if x.shape[0] < 2:
        raise ValueError(f"batch_norm needs at least 2 rows to estimate a variance, got x of "
                         f"shape {tuple(x.shape)}")
    mean = x.mean(axis=0)                                   # (d,)
    xc = x - mean                                           # (N, d)
    var = (xc * xc).mean(axis=0)                            # (d,) biased
    inv = 1.0 / xp.sqrt(var + eps)                          # (d,)
    xhat = xc * inv                                         # (N, d)
    return xhat * gamma + beta, {"xhat": xhat, "inv": inv, "gamma": gamma, "mean": mean,
                                 "var": var}


def batch_norm_backward(dout, cache):
    """Gradients of batch_norm_forward (batch statistics).

    Inputs: dout (N, d); cache.
    Returns: dx (N, d), dgamma (d,), dbeta (d,).
    """
    xhat, inv, gamma = cache["xhat"], cache["inv"], cache["gamma"]
    check_dout("batch_norm", dout, xhat.shape)
    n = xhat.shape[0]
    dbeta = dout.sum(axis=0)
    dgamma = (dout * xhat).sum(axis=0)
    dxhat = dout * gamma                                    # (N, d)
    dx = (inv / n) * (n * dxhat - dxhat.sum(axis=0) - xhat * (dxhat * xhat).sum(axis=0))
    return dx, dgamma, dbeta


def batch_norm_eval_forward(x, gamma, beta, running_mean, running_var, eps=1e-5):
    """y = (x - running_mean) / sqrt(running_var + eps) * gamma + beta (fixed statistics).

    Inputs: x (N, d); gamma, beta, running_mean, running_var (d,).
    Returns: y (N, d), cache.
    """
    xp = _check(x, gamma, beta)
    check_shape("batch_norm: running_mean", running_mean, gamma.shape)
    check_shape("batch_norm: running_var", running_var, gamma.shape)
    inv = 1.0 / xp.sqrt(running_var + eps)
    xhat = (x - running_mean) * inv
    return xhat * gamma + beta, {"xhat": xhat, "inv": inv, "gamma": gamma}


def batch_norm_eval_backward(dout, cache):
    """Gradients of batch_norm_eval_forward. Returns: dx (N, d), dgamma (d,), dbeta (d,)."""
    xhat, inv, gamma = cache["xhat"], cache["inv"], cache["gamma"]
    check_dout("batch_norm", dout, xhat.shape)
    return dout * (gamma * inv), (dout * xhat).sum(axis=0), dout.sum(axis=0)
