"""A3 part 3: the network's reverse walk, a small training run, per-layer compression."""
import numpy as np
import pytest

from course_helpers import assert_close, describe, rng
from module_checks import check_module_gradients
from whitebox.losses import cross_entropy
from whitebox.models import CRATE
from whitebox.models.crate import Transformer
from whitebox.optim import Adam
from whitebox.rate import measure_compression


def test_transformer_forward():
    T = Transformer(6, depth=2, heads=2, dim_head=3, dtype="float64", seed=1)
    x = rng(1).standard_normal((2, 4, 6))
    expected = x
    for layer in T.layers:
        expected = layer(expected)
    assert_close("LayerStack.forward (through Transformer)", T(x), expected, describe(x=x, depth=2), 1e-12)


def test_transformer_backward():
    T = Transformer(6, depth=2, heads=2, dim_head=3, dtype="float64", seed=2)
    x = rng(2).standard_normal((2, 3, 6))
    check_module_gradients("LayerStack.backward (through Transformer)", T, x,
                           names=["layers.0.0.fn.qkv.weight", "layers.0.1.fn.weight",
                                  "layers.1.0.norm.weight"],
                           hint="walk the layers in reverse, each backward feeding the next")


def direct_measure(Z, U, eps2):
    total = []
    for z in Z:
        rc = 0.0
        for k in range(U.shape[0]):
            W = z @ U[k]
            W = W / np.linalg.norm(W, axis=1, keepdims=True)
            N, p = W.shape
            rc += 0.5 * np.linalg.slogdet(np.eye(N) + p / (N * eps2) * W @ W.T)[1]
        total.append(rc)
    return np.mean(total)


@pytest.mark.parametrize("eps2", [0.01, 0.5])
def test_measure_compression(eps2):
    r = rng(3)
    Z, U = r.standard_normal((3, 5, 8)), r.standard_normal((2, 8, 3))
    assert_close("measure_compression", measure_compression(Z, U, eps2),
                 direct_measure(Z, U, eps2), describe(Z=Z, U=U, eps2=eps2), 1e-9)


def test_small_crate_trains():
    # two classes told apart by where the bright square sits
    r = rng(4)
    labels = np.arange(32) % 2
    images = r.standard_normal((32, 1, 8, 8)).astype(np.float32) * 0.3
    images[labels == 0, :, :4, :4] += 1.5
    images[labels == 1, :, 4:, 4:] += 1.5
    model = CRATE(image_size=8, patch_size=4, num_classes=2, dim=16, depth=2, heads=2,
                  dim_head=8, channels=1, seed=0)
    opt = Adam(model, lr=1e-2)
    first = None
    for step in range(30):
        model.zero_grad()
        loss, dlogits = cross_entropy(model(images), labels)
        model.backward(dlogits)
        opt.step()
        first = float(loss) if first is None else first
    assert float(loss) < 0.3 * first, (
        f"training a 2-layer CRATE for 30 Adam steps took the loss from {first:.3f} only to "
        f"{float(loss):.3f} (expected below 30% of it): the network's backward is wrong")
