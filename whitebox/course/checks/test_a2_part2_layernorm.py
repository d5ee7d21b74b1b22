"""A2 part 2: LayerNorm backward (the forward is given)."""
import pytest

from course_helpers import assert_gradient, describe, rng
from whitebox.functional import layernorm_backward, layernorm_forward


@pytest.mark.parametrize("shape", [(4, 6), (2, 3, 5)])
@pytest.mark.parametrize("wrt", ["x", "gamma", "beta"])
def test_layernorm_backward(shape, wrt):
    r = rng(len(shape))
    x = r.standard_normal(shape) * 2 + 0.5
    gamma = r.standard_normal(shape[-1])
    beta = r.standard_normal(shape[-1])
    dout = r.standard_normal(shape)
    _, cache = layernorm_forward(x, gamma, beta)
    grads = dict(zip(("x", "gamma", "beta"), layernorm_backward(dout, cache)))
    arrays = {"x": x, "gamma": gamma, "beta": beta}
    assert_gradient("layernorm_backward", wrt, grads[wrt],
                    lambda: layernorm_forward(x, gamma, beta)[0], arrays[wrt], dout,
                    describe(x=x, gamma=gamma, beta=beta),
                    hint="returns (dx, dgamma, dbeta); dgamma and dbeta sum over every "
                         "leading axis" if wrt != "x" else "")
