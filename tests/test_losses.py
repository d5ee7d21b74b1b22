"""Losses: values, gradients, PyTorch agreement and clear errors on bad labels.

(The forward-against-a-loop and finite-difference checks of cross_entropy
and mse live in the operator table of test_functional.py.)
"""
import math

import numpy as np
import pytest

from whitebox.backend import to_numpy
from whitebox.losses import accuracy, cross_entropy, mse


def test_cross_entropy_of_uniform_logits_is_log_classes(xp):
    loss, dlogits = cross_entropy(xp.zeros((6, 10)), xp.asarray(np.arange(6)))
    assert loss == pytest.approx(math.log(10), rel=1e-12)
    # softmax is 1/10 everywhere, the target 1 at the label; mean over a batch of 6
    expected = np.full((6, 10), 0.1)
    expected[np.arange(6), np.arange(6)] -= 1.0
    np.testing.assert_allclose(to_numpy(dlogits), expected / 6, atol=1e-15)


def test_cross_entropy_is_a_mean_over_the_batch(rng):
    z, y = rng.standard_normal((3, 4)), np.array([0, 3, 1])
    loss, dz = cross_entropy(z, y)
    loss2, dz2 = cross_entropy(np.concatenate([z, z]), np.concatenate([y, y]))
    assert loss2 == pytest.approx(loss, rel=1e-14)
    np.testing.assert_allclose(dz2[:3], dz / 2, rtol=1e-14)


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.5])
def test_cross_entropy_gradient_rows_sum_to_zero(rng, smoothing):
    _, dz = cross_entropy(rng.standard_normal((5, 7)), np.array([0, 6, 3, 3, 1]), smoothing)
    np.testing.assert_allclose(dz.sum(axis=1), 0.0, atol=1e-15)


def test_cross_entropy_survives_large_logits():
    loss, dz = cross_entropy(np.array([[1000.0, 0.0], [0.0, -1000.0]]), np.array([0, 1]))
    assert loss == pytest.approx(500.0)
    assert np.all(np.isfinite(dz))


def test_cross_entropy_keeps_float32(rng):
    _, dz = cross_entropy(rng.standard_normal((3, 4)).astype(np.float32), np.array([0, 1, 2]),
                          label_smoothing=0.1)
    assert dz.dtype == np.float32


@pytest.mark.torch
@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
def test_cross_entropy_matches_torch(rng, smoothing):
    torch = pytest.importorskip("torch")
    z, y = 3 * rng.standard_normal((6, 5)), np.array([0, 4, 2, 2, 1, 3])
    zt = torch.tensor(z, requires_grad=True)
    lt = torch.nn.functional.cross_entropy(zt, torch.tensor(y), label_smoothing=smoothing)
    lt.backward()
    loss, dz = cross_entropy(z, y, label_smoothing=smoothing)
    assert loss == pytest.approx(lt.item(), rel=1e-12)
    np.testing.assert_allclose(dz, zt.grad.numpy(), rtol=1e-10, atol=1e-15)


@pytest.mark.torch
def test_mse_matches_torch(rng):
    torch = pytest.importorskip("torch")
    p, t = rng.standard_normal((3, 4, 2)), rng.standard_normal((3, 4, 2))
    pt = torch.tensor(p, requires_grad=True)
    lt = torch.nn.functional.mse_loss(pt, torch.tensor(t))
    lt.backward()
    loss, dp = mse(p, t)
    assert loss == pytest.approx(lt.item(), rel=1e-12)
    np.testing.assert_allclose(dp, pt.grad.numpy(), rtol=1e-12)


def test_mse_value_and_gradient_by_hand():
    loss, dp = mse(np.array([1.0, 2.0, 4.0, 0.0]), np.array([0.0, 2.0, 2.0, 0.0]))
    assert loss == pytest.approx((1 + 0 + 4 + 0) / 4)
    np.testing.assert_allclose(dp, [2 * 1 / 4, 0.0, 2 * 2 / 4, 0.0])


def test_accuracy():
    logits = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    assert accuracy(logits, np.array([1, 0, 0, 1])) == 0.5


# ------------------------------------------------------------------ errors

Z = np.zeros((3, 4))


def test_labels_out_of_range():
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\), found 4"):
        cross_entropy(Z, np.array([0, 4, 1]))


def test_labels_negative():
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\), found -1"):
        cross_entropy(Z, np.array([0, -1, 1]))


def test_labels_float():
    with pytest.raises(TypeError, match=r"labels must be an integer array, got float64"):
        cross_entropy(Z, np.array([0.0, 1.0, 2.0]))


def test_labels_not_an_array():
    with pytest.raises(TypeError, match=r"labels must be an integer array, got list"):
        cross_entropy(Z, [0, 1, 2])


def test_labels_wrong_batch_size():
    with pytest.raises(ValueError, match=r"labels must have shape \(3,\) .* got \(2,\)"):
        cross_entropy(Z, np.array([0, 1]))
    with pytest.raises(ValueError, match=r"labels must have shape \(3,\) .* got \(3, 1\)"):
        cross_entropy(Z, np.array([[0], [1], [2]]))


def test_bad_logits_and_smoothing():
    with pytest.raises(ValueError, match=r"logits must be 2-dimensional, got shape \(3,\)"):
        cross_entropy(np.zeros(3), np.array([0, 1, 2]))
    with pytest.raises(ValueError, match=r"label_smoothing must be in \[0, 1\), got 1.5"):
        cross_entropy(Z, np.array([0, 1, 2]), label_smoothing=1.5)
    with pytest.raises(ValueError, match=r"logits contains NaN"):
        cross_entropy(np.full((3, 4), np.nan), np.array([0, 1, 2]))


def test_mse_shape_mismatch():
    with pytest.raises(ValueError, match=r"pred has shape \(3, 4\) but target has \(4, 3\)"):
        mse(np.zeros((3, 4)), np.zeros((4, 3)))


def test_mse_refuses_nan():
    with pytest.raises(ValueError, match="pred contains NaN or infinite values"):
        mse(np.full((2, 2), np.nan), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="target contains NaN or infinite values"):
        mse(np.zeros((2, 2)), np.full((2, 2), np.inf))


def test_accuracy_checks_its_labels_as_the_loss_does():
    logits = np.eye(4)
    with pytest.raises(ValueError, match=r"labels must have shape \(4,\)"):
        accuracy(logits, np.arange(4)[:, None])        # would broadcast to (4, 4) unchecked
    with pytest.raises(ValueError, match=r"labels must have shape \(4,\)"):
        accuracy(logits, np.arange(3))
    with pytest.raises(ValueError, match="labels"):
        accuracy(logits, np.array([0, 1, 2, 4]))
    with pytest.raises(TypeError, match="labels"):
        accuracy(logits, np.arange(4.0))
    with pytest.raises(ValueError, match="logits"):
        accuracy(np.zeros(4), np.arange(4))
    with pytest.raises(ValueError, match="accuracy: logits hold no rows"):
        accuracy(np.zeros((0, 3)), np.zeros(0, int))
