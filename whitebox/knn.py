"""Weighted k-nearest-neighbour classification of features, as DINO evaluates them.

Features are L2-normalised; for a query q the k training features of largest
cosine similarity s_j vote for their labels with weight exp(s_j / T):

    score_c(q) = sum_{j in top-k(q)} exp(s_j / T) [y_j = c],   prediction = argmax_c score_c

DINO's evaluation uses k = 20 and T = 0.07. With fewer than k training
features, all of them vote.
"""
import numpy as np

from .backend import get_array_module, to_numpy
from .functional._checks import check_array, check_positive_int, check_real
from .functional.l2_normalize import l2_normalize_forward


def knn_predict(train_features, train_labels, test_features, k=20, temperature=0.07,
                num_classes=None, batch_size=1024):
    """Inputs: train_features (n, d), train_labels (n,) ints in [0, C), test_features
    (q, d), on one backend; k, temperature > 0; num_classes C (default max label + 1);
    batch_size test rows per similarity block.
    Returns: predictions (q,) int64 on the features' backend."""
    xp = check_array("train_features", train_features, ndim=2)
    check_array("test_features", test_features, ndim=2)
    n, d = train_features.shape
    if n == 0 or test_features.shape[1] != d:
        raise ValueError(f"train_features (n >= 1, d) and test_features (q, d) must share d, "
                         f"got {tuple(train_features.shape)} and {tuple(test_features.shape)}")
    labels = xp.asarray(train_labels)
    if labels.shape != (n,) or labels.dtype.kind not in "iu":
        raise ValueError(f"train_labels must be ({n},) integers, got shape {tuple(labels.shape)} "
                         f"dtype {labels.dtype}")
    k = min(check_positive_int("k", k), n)
    temperature = check_real("temperature", temperature, 0.0, low_open=True)
    C = int(to_numpy(labels).max()) + 1 if num_classes is None else \
        check_positive_int("num_classes", num_classes)
    if int(to_numpy(labels).min()) < 0 or int(to_numpy(labels).max()) >= C:
        raise ValueError(f"train_labels must lie in [0, {C}), got range "
                         f"[{int(to_numpy(labels).min())}, {int(to_numpy(labels).max())}]")
    train = l2_normalize_forward(train_features)[0]
    test = l2_normalize_forward(test_features)[0]
    out = []
    for start in range(0, test.shape[0], check_positive_int("batch_size", batch_size)):
        sim = test[start:start + batch_size] @ train.T                         # (b, n)
        top = xp.argpartition(-sim, k - 1, axis=1)[:, :k]                      # (b, k)
        s = xp.take_along_axis(sim, top, axis=1)                               # (b, k)
        w = xp.exp((s - 1) / temperature)        # exp(s/T) up to a common factor e^(1/T)
        scores = xp.zeros((sim.shape[0], C), dtype=sim.dtype)
        rows = xp.broadcast_to(xp.arange(sim.shape[0])[:, None], top.shape)
        xp.add.at(scores, (rows, labels[top]), w)                              # (b, C)
        out.append(scores.argmax(axis=1))
    return xp.concatenate(out) if out else xp.zeros((0,), dtype=np.int64)


def knn_accuracy(train_features, train_labels, test_features, test_labels, k=20,
                 temperature=0.07, num_classes=None):
    """Fraction of test rows whose weighted k-NN prediction equals their label (a float)."""
    pred = knn_predict(train_features, train_labels, test_features, k, temperature,
                       num_classes)
    test_labels = get_array_module(pred).asarray(test_labels)
    if test_labels.shape != pred.shape or pred.size == 0:
        raise ValueError(f"test_labels must have shape {tuple(pred.shape)} (q >= 1), got "
                         f"{tuple(test_labels.shape)}")
    return float((pred == test_labels).mean())
