"""Cross-entropy over token positions, skipping positions whose target is ``ignore_index``.

One loss serves both language models: the causal model counts every
position (target = the next token), the masked model only the positions
``mask_tokens`` chose (every other target is ignore_index):

    loss = (1 / n) sum_{(b,t): y_bt != ignore} [ logsumexp(z_bt) - z_bt[y_bt] ],
    n = number of counted positions.
"""
from ..backend import checks_values
from ._checks import check_array, check_dout, check_finite, check_ignore_index


def token_cross_entropy_forward(logits, targets, ignore_index=-1):
    """Mean cross-entropy of logits (..., V) against integer targets (...).

    Positions with target == ignore_index count for nothing; at least one
    must count. Returns: loss (0-d array), cache.
    """
    xp = check_array("logits", logits, ndim_min=2)
    if not isinstance(targets, xp.ndarray) or targets.dtype.kind not in "iu":
        raise TypeError(f"targets must be an integer array on the logits' backend, got "
                        f"{getattr(targets, 'dtype', type(targets).__name__)}")
    if tuple(targets.shape) != tuple(logits.shape[:-1]):
        raise ValueError(f"targets have shape {tuple(targets.shape)}, expected "
                         f"{tuple(logits.shape[:-1])} to match logits {tuple(logits.shape)}")
    V = logits.shape[-1]
    check_ignore_index(ignore_index, V)
    y = targets.reshape(-1)
    keep = y != ignore_index                              # (n_all,) counted positions
    n = keep.sum()                                        # stays on the device
    if checks_values(targets):                            # host values, or device debug mode
        if int(n) == 0:
            raise ValueError("token_cross_entropy: every target is ignore_index; nothing to "
                             "count")
        bad = keep & ((y < 0) | (y >= V))
        if bool(bad.any()):
            raise ValueError(f"targets must lie in [0, {V}) or equal "
                             f"ignore_index={ignore_index}, found {int(y[bad][0])}")
    check_finite("logits", logits)
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
