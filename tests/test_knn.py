"""Weighted k-NN against a direct loop, and its edge cases."""
import numpy as np
import pytest

from whitebox.knn import knn_accuracy, knn_predict


def _loop(train, labels, test, k, T, C):
    train = train / np.linalg.norm(train, axis=1, keepdims=True)
    preds = []
    for q in test:
        q = q / np.linalg.norm(q)
        sims = [(float(q @ t), int(y)) for t, y in zip(train, labels)]
        sims.sort(key=lambda p: -p[0])
        score = [0.0] * C
        for s, y in sims[:k]:
            score[y] += np.exp(s / T)
        preds.append(int(np.argmax(score)))
    return np.array(preds)


@pytest.mark.parametrize("k,T", [(20, 0.07), (5, 0.5), (1, 0.07), (100, 1.0)])
def test_knn_matches_a_direct_loop(rng, k, T):
    train, test = rng.standard_normal((60, 7)), rng.standard_normal((25, 7))
    labels = rng.integers(0, 4, 60)
    pred = knn_predict(train, labels, test, k, T, num_classes=4, batch_size=7)
    np.testing.assert_array_equal(pred, _loop(train, labels, test, k, T, 4))


def test_knn_accuracy_on_separable_clusters(rng):
    centers = 5 * rng.standard_normal((3, 6))
    y, yq = rng.integers(0, 3, 90), rng.integers(0, 3, 30)
    x = centers[y] + 0.1 * rng.standard_normal((90, 6))
    q = centers[yq] + 0.1 * rng.standard_normal((30, 6))
    assert knn_accuracy(x, y, q, yq) == 1.0
    assert knn_accuracy(x, y, q, (yq + 1) % 3) == 0.0


def test_knn_bad_inputs():
    x = np.ones((4, 3))
    with pytest.raises(ValueError, match="share d"):
        knn_predict(x, np.zeros(4, int), np.ones((2, 2)))
    with pytest.raises(ValueError, match="train_labels"):
        knn_predict(x, np.zeros(4), x)
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        knn_predict(x, np.array([0, 1, 2, 1]), x, num_classes=2)
