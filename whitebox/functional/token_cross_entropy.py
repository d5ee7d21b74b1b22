"""Cross-entropy over token positions, skipping positions whose target is ``ignore_index``.

One loss serves both language models: the causal model counts every
position (target = the next token), the masked model only the positions
``mask_tokens`` chose (every other target is ignore_index):

    loss = (1 / n) sum_{(b,t): y_bt != ignore} [ logsumexp(z_bt) - z_bt[y_bt] ],
    n = number of counted positions.
"""
from ._checks import check_array, check_dout, check_finite, check_targets


def token_cross_entropy_forward(logits, targets, ignore_index=-1):
    """Mean cross-entropy of logits (..., V) against integer targets (...).

    Positions with target == ignore_index count for nothing; at least one
    must count. Returns: loss (0-d array), cache.
    """
    xp = check_array("logits", logits, ndim_min=2)
    check_targets(targets, logits, ignore_index), check_finite("logits", logits)
    V = logits.shape[-1]
    y = targets.reshape(-1)
    keep = y != ignore_index                              # (n_all,) counted positions
    n = keep.sum()                                        # stays on the device
    z = logits.reshape(-1, V)
    shifted = z - z.max(axis=1, keepdims=True)
    logz = xp.log(xp.exp(shifted).sum(axis=1))            # (n_all,)
    rows = xp.arange(y.shape[0])
    y_safe = xp.where(keep, y, 0)
    nll = logz - shifted[rows, y_safe]                    # (n_all,)
    loss = (nll * keep).sum() / n.astype(nll.dtype)
    return loss, (shifted, logz, y_safe, keep, n, logits.shape)


def token_cross_entropy_backward(dout, cache):
    """dlogits_bt = dout (softmax(z_bt) - onehot(y_bt)) / n at counted positions, 0 elsewhere.

    Returns: dlogits shaped like the logits.
    """
    shifted, logz, y_safe, keep, n, shape = cache
    check_dout("token_cross_entropy", dout, ())
    xp = check_array("shifted", shifted)
    d = xp.exp(shifted - logz[:, None])                   # (n_all, V) softmax
    d[xp.arange(d.shape[0]), y_safe] -= 1
    d *= (keep * (dout / n.astype(d.dtype)))[:, None]
    return d.reshape(shape)


def token_cross_entropy(logits, targets, ignore_index=-1):
    """(loss as a 0-d array, dlogits) for a training step, like whitebox.losses."""
    loss, cache = token_cross_entropy_forward(logits, targets, ignore_index)
    return loss, token_cross_entropy_backward(loss.dtype.type(1.0), cache)
