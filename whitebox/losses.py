"""Losses that return (loss, gradient of the loss w.r.t. their input).

Each takes predictions from a model and returns the loss as a 0-d array on
the predictions' backend (a NumPy scalar, or a 0-d CuPy array that stays on
the GPU until someone logs it with ``float(loss)``) and the gradient with the
predictions' shape, ready for ``model.backward``.
"""
from .backend import backend_name, get_array_module
from .functional._checks import check_array, check_finite, check_real
from .functional.embedding import check_ids


def check_labels(labels, num_classes, batch, like=None):
    """Integer labels of shape (batch,) in [0, num_classes), on the backend of ``like``."""
    xp = get_array_module(labels)
    if not isinstance(labels, xp.ndarray):
        raise TypeError(f"labels must be an integer array, got {type(labels).__name__}")
    if like is not None and get_array_module(like) is not xp:
        raise TypeError(f"labels live on {backend_name(labels)} but logits on "
                        f"{backend_name(like)}; move them with whitebox.to_device")
    if labels.ndim != 1 or labels.shape[0] != batch:
        raise ValueError(f"labels must have shape ({batch},) to match the batch of logits, "
                         f"got {tuple(labels.shape)}")
    check_ids("labels", labels, num_classes)


def cross_entropy(logits, labels, label_smoothing=0.0):
    """Mean softmax cross-entropy, as torch.nn.functional.cross_entropy.

    With smoothing s the target is (1 - s) onehot + s / C.
    loss = mean_i [ logsumexp(z_i) - sum_c t_ic z_ic ];  dlogits = (softmax(z) - t) / B.
    Inputs: logits (B, C) float; labels (B,) ints in [0, C).
    Returns: loss (0-d array), dlogits (B, C).
    """
    xp = check_array("logits", logits, ndim=2)
    B, C = logits.shape
    if B == 0:
        raise ValueError("cross_entropy: logits hold no rows (shape "
                         f"{tuple(logits.shape)}); a mean over an empty batch is undefined")
    check_labels(labels, C, B, like=logits)
    label_smoothing = check_real("label_smoothing", label_smoothing, 0.0, 1.0, high_open=True)
    check_finite("logits", logits)
    shifted = logits - logits.max(axis=1, keepdims=True)
    logz = xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))
    logp = shifted - logz                                # (B, C) log-probabilities
    rows = xp.arange(B)
    nll = -logp[rows, labels]                            # (B,)
    if label_smoothing:
        loss_i = (1 - label_smoothing) * nll - label_smoothing * logp.mean(axis=1)
    else:
        loss_i = nll
    target = xp.full_like(logits, label_smoothing / C)
    target[rows, labels] += 1.0 - label_smoothing
    dlogits = (xp.exp(logp) - target) / B
    return loss_i.mean(), dlogits


def mse(pred, target):
    """loss = mean((pred - target)^2) over every element;  dpred = 2 (pred - target) / n.

    Returns: loss (0-d array), dpred (pred's shape). An empty pred has no mean: ValueError.
    """
    check_array("pred", pred)
    check_array("target", target)
    if pred.shape != target.shape:
        raise ValueError(f"mse: pred has shape {tuple(pred.shape)} but target has "
                         f"{tuple(target.shape)}")
    if pred.size == 0:
        raise ValueError(f"mse: pred is empty (shape {tuple(pred.shape)}); a mean over no "
                         "elements is undefined")
    check_finite("pred", pred)
    check_finite("target", target)
    diff = pred - target
    return (diff * diff).mean(), diff * (2.0 / diff.size)


def accuracy(logits, labels):
    """Fraction of rows whose arg-max equals the label (a 0-d array, like the losses).

    Inputs as cross_entropy's: logits (B, C), labels (B,) integers in [0, C).
    """
    check_array("logits", logits, ndim=2)
    if logits.shape[0] == 0:
        raise ValueError("accuracy: logits hold no rows (shape "
                         f"{tuple(logits.shape)}); a mean over an empty batch is undefined")
    check_labels(labels, logits.shape[1], logits.shape[0], like=logits)
    return (logits.argmax(axis=1) == labels).mean()


from .ssl_losses import DINOLoss, simdino_loss  # noqa: E402,F401  (self-supervised losses)
