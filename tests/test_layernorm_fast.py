"""LayerNorm: the fast path against the readable reference, and both against finite differences."""
import numpy as np
import pytest

from whitebox.functional.layernorm import (layernorm_backward, layernorm_forward,
                                           layernorm_reference_backward,
                                           layernorm_reference_forward)
from whitebox.gradcheck import check_backward

SHAPES = [(6,), (3, 6), (2, 3, 6), (2, 5, 17)]


def inputs(rng, shape, dtype="float64"):
    d = shape[-1]
    x = rng.standard_normal(shape) * 2 + 0.5
    gamma = 1 + 0.3 * rng.standard_normal(d)
    beta = rng.standard_normal(d)
    return [a.astype(dtype) for a in (x, gamma, beta)]


def textbook(x, gamma, beta, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * gamma + beta


@pytest.mark.parametrize("shape", SHAPES)
def test_fast_path_equals_reference_float64(rng, shape):
    x, gamma, beta = inputs(rng, shape)
    y_ref, c_ref = layernorm_reference_forward(x, gamma, beta)
    y, c = layernorm_forward(x, gamma, beta)
    np.testing.assert_allclose(y, y_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(y, textbook(x, gamma, beta), rtol=1e-12, atol=1e-12)
    dout = rng.standard_normal(shape)
    for fast, ref in zip(layernorm_backward(dout, c), layernorm_reference_backward(dout, c_ref)):
        assert fast.shape == ref.shape
        np.testing.assert_allclose(fast, ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("pair", [(layernorm_forward, layernorm_backward),
                                  (layernorm_reference_forward, layernorm_reference_backward)],
                         ids=["fast", "reference"])
@pytest.mark.parametrize("shape", [(3, 6), (2, 3, 5)])
def test_finite_differences(rng, pair, shape):
    errors = check_backward(*pair, inputs(rng, shape))
    assert set(errors) == {0, 1, 2}
    assert max(errors.values()) < 1e-7


def test_fast_path_float32_on_every_backend(xp, rng):
    x, gamma, beta = (xp.asarray(a) for a in inputs(rng, (4, 9, 32), "float32"))
    y, c = layernorm_forward(x, gamma, beta)
    y_ref, c_ref = layernorm_reference_forward(x, gamma, beta)
    assert y.dtype == xp.float32
    dout = xp.asarray(rng.standard_normal((4, 9, 32)).astype("float32"))
    pairs = [(y, y_ref)] + list(zip(layernorm_backward(dout, c),
                                    layernorm_reference_backward(dout, c_ref)))
    for fast, ref in pairs:
        assert fast.dtype == xp.float32
        assert float(xp.max(xp.abs(fast - ref))) < 1e-4


def test_fast_path_leaves_its_inputs_alone(rng):
    x, gamma, beta = inputs(rng, (2, 3, 6))
    copies = [a.copy() for a in (x, gamma, beta)]
    y, c = layernorm_forward(x, gamma, beta)
    dout = rng.standard_normal(y.shape)
    dout_copy = dout.copy()
    layernorm_backward(dout, c)
    for a, b in zip((x, gamma, beta, dout), copies + [dout_copy]):
        np.testing.assert_array_equal(a, b)


def test_fast_path_on_a_strided_view(rng):
    x, gamma, beta = inputs(rng, (4, 6, 8))
    view = x.transpose(1, 0, 2)[:, ::2]                  # (6, 2, 8), not contiguous
    np.testing.assert_allclose(layernorm_forward(view, gamma, beta)[0],
                               textbook(view, gamma, beta), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("forward", [layernorm_forward, layernorm_reference_forward])
def test_bad_shapes_are_named(rng, forward):
    with pytest.raises(ValueError, match="last dimension"):
        forward(rng.standard_normal((2, 5)), np.ones(6), np.zeros(6))
    with pytest.raises(ValueError, match="beta"):
        forward(rng.standard_normal((2, 6)), np.ones(6), np.zeros(5))


@pytest.mark.parametrize("backward", [layernorm_backward, layernorm_reference_backward])
def test_wrong_dout_shape_is_named(rng, backward):
    x, gamma, beta = inputs(rng, (2, 3, 6))
    _, cache = layernorm_forward(x, gamma, beta)
    with pytest.raises(ValueError, match="dout has shape"):
        backward(np.ones((2, 3, 5)), cache)
