"""A1 part 3: MCR^2, the per-class compression and its gradient."""
import numpy as np
import pytest

from course_helpers import assert_close, assert_gradient, describe, rng
from whitebox.rate import class_compression_rate, mcr2_loss
from whitebox.rate.mcr2 import class_compression_backward, class_compression_forward


def direct_class_rc(Z, labels, eps):
    N, d = Z.shape
    total = 0.0
    for j in np.unique(labels):
        Zj = Z[labels == j]
        Nj = len(Zj)
        total += Nj / (2 * N) * np.linalg.slogdet(np.eye(d) + d / (Nj * eps ** 2) * Zj.T @ Zj)[1]
    return total


def direct_rate(Z, eps):
    N, d = Z.shape
    return 0.5 * np.linalg.slogdet(np.eye(d) + d / (N * eps ** 2) * Z.T @ Z)[1]


LABELS = np.array([0, 2, 2, 0, 1, 2, 0, 2, 1, 2])


@pytest.mark.parametrize("labels", [LABELS, np.where(LABELS == 1, 2, LABELS)],
                         ids=["three classes", "class 1 absent"])
def test_class_compression_value(labels):
    Z = rng(1).standard_normal((10, 4))
    assert_close("class_compression_rate", class_compression_rate(Z, labels, 0.5),
                 direct_class_rc(Z, labels, 0.5), describe(Z=Z, labels=labels, eps=0.5), 1e-9)


def test_class_compression_gradient():
    Z = rng(2).standard_normal((10, 4))
    _, cache = class_compression_forward(Z, LABELS, 0.5)
    dZ = class_compression_backward(np.asarray(1.7), cache)
    assert_gradient("class_compression_backward", "Z", dZ,
                    lambda: class_compression_forward(Z, LABELS, 0.5)[0], Z, np.asarray(1.7),
                    describe(Z=Z, labels=LABELS, eps=0.5, dout=1.7),
                    hint="each class's term lands on its own rows, weighted N_j / N")


def test_mcr2_loss_value_and_gradient():
    Z = rng(3).standard_normal((10, 5))
    Z /= np.linalg.norm(Z, axis=1, keepdims=True)
    loss, dZ = mcr2_loss(Z, LABELS, 0.5)
    expected = direct_class_rc(Z, LABELS, 0.5) - direct_rate(Z, 0.5)
    assert_close("mcr2_loss (value)", loss, expected, describe(Z=Z, eps=0.5), 1e-9)
    assert_gradient("mcr2_loss", "Z", dZ, lambda: mcr2_loss(Z, LABELS, 0.5)[0], Z,
                    np.ones(()), describe(Z=Z, labels=LABELS, eps=0.5),
                    hint="the loss is -R + Rc, so its gradient is dRc/dZ - dR/dZ")
