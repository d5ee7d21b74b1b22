"""l2_normalize and weight_norm pairs, DINO's and SimDINO's heads: finite differences, torch."""
import numpy as np
import pytest

from whitebox.functional import (l2_normalize_backward, l2_normalize_forward,
                                 weight_norm_backward, weight_norm_forward)
from whitebox.gradcheck import check_backward, check_module
from whitebox.nn import DINOHead, SimDINOHead, WeightNormLinear


def test_l2_normalize_forward_is_unit_rows_and_floors_tiny_norms(rng):
    x = rng.standard_normal((3, 4, 5))
    x[0, 0] = 1e-14
    y, _ = l2_normalize_forward(x, eps=1e-12)
    np.testing.assert_allclose(np.linalg.norm(y[1:], axis=-1), 1.0, rtol=1e-14)
    np.testing.assert_allclose(y[0, 0], x[0, 0] / 1e-12)
    np.testing.assert_allclose(y[0, 1], x[0, 1] / np.linalg.norm(x[0, 1]), rtol=1e-15)


def test_l2_normalize_backward_matches_finite_differences(rng):
    x = rng.standard_normal((4, 6))
    # seed 1: check_backward's dout from seed 0 would equal x, radial, with gradient 0
    check_backward(l2_normalize_forward, l2_normalize_backward, [x], seed=1)
    tiny = 1e-3 * rng.standard_normal((2, 3))           # every row below the floor
    check_backward(lambda a: l2_normalize_forward(a, eps=1.0), l2_normalize_backward, [tiny])


def test_weight_norm_rows_have_length_g(rng):
    v, g = rng.standard_normal((5, 4)), rng.uniform(0.5, 2, (5, 1))
    W, _ = weight_norm_forward(v, g)
    np.testing.assert_allclose(np.linalg.norm(W, axis=1, keepdims=True), g, rtol=1e-14)
    with pytest.raises(ValueError, match="g has shape"):
        weight_norm_forward(v, g[:4])
    v[2] = 0
    with pytest.raises(ValueError, match="zero row"):
        weight_norm_forward(v, g)


def test_weight_norm_backward_matches_finite_differences(rng):
    v, g = rng.standard_normal((5, 4)), rng.uniform(0.5, 2, (5, 1))
    check_backward(weight_norm_forward, weight_norm_backward, [v, g], seed=1)  # dout != v


@pytest.mark.parametrize("norm_last_layer", [True, False])
def test_weight_norm_linear_gradients_and_frozen_gain(rng, norm_last_layer):
    layer = WeightNormLinear(4, 6, norm_last_layer, dtype="float64", seed=1)
    errs = check_module(layer, [rng.standard_normal((3, 4))])
    assert ("weight_g" in errs) is (not norm_last_layer)
    assert "weight_g" in layer.state_dict()


def _unit_scale(head, rng):
    # weights of std 0.02 give features of norm ~1e-3, where the normalisation's
    # curvature makes central differences inexact: check at unit scale
    head.load_state_dict({k: rng.standard_normal(v.shape) for k, v in head.state_dict().items()})
    return head


def test_heads_gradients_match_finite_differences(rng):
    x = rng.standard_normal((2, 3, 5))
    check_module(_unit_scale(DINOHead(5, 7, hidden_dim=6, bottleneck_dim=4, dtype="float64",
                                      seed=2), rng), [x], floor=1e-6)
    head = _unit_scale(SimDINOHead(5, hidden_dim=6, bottleneck_dim=4, dtype="float64", seed=2),
                       rng)
    check_module(head, [x], floor=1e-6)
    np.testing.assert_allclose(np.linalg.norm(head(x), axis=-1), 1.0, rtol=1e-14)


def test_head_names_init_and_shapes():
    head = DINOHead(8, 16, hidden_dim=12, bottleneck_dim=6, seed=0)
    assert set(head.state_dict()) == {"mlp.0.weight", "mlp.0.bias", "mlp.2.weight",
                                      "mlp.2.bias", "mlp.4.weight", "mlp.4.bias",
                                      "last_layer.weight_g", "last_layer.weight_v"}
    assert "last_layer.weight_g" not in head.trainable_parameters()
    w = head.state_dict()["mlp.0.weight"]
    assert np.abs(w).max() <= 2.0 and 0.01 < w.std() < 0.03
    assert not head.state_dict()["mlp.0.bias"].any()
    assert head(np.ones((3, 8), dtype=np.float32)).shape == (3, 16)


@pytest.mark.torch
@pytest.mark.parametrize("prototypes", [True, False])
def test_heads_match_torch(rng, prototypes):
    torch = pytest.importorskip("torch")
    from torch_ssl import DINOHeadTorch
    kw = dict(hidden_dim=7, bottleneck_dim=4, dtype="float64", seed=3)
    head = DINOHead(5, 6, **kw) if prototypes else SimDINOHead(5, **kw)
    twin = DINOHeadTorch(5, 6, 7, 4, prototypes)
    sd = {k: torch.tensor(v) for k, v in head.state_dict().items()}
    with torch.no_grad():
        for i in (0, 2, 4):
            twin.mlp[i].weight.copy_(sd[f"mlp.{i}.weight"])
            twin.mlp[i].bias.copy_(sd[f"mlp.{i}.bias"])
        if prototypes:
            twin.last_layer.parametrizations.weight.original1.copy_(sd["last_layer.weight_v"])
    x = rng.standard_normal((4, 5))
    xt = torch.tensor(x, requires_grad=True)
    out_t = twin(xt)
    dout = rng.standard_normal(tuple(out_t.shape))
    out_t.backward(torch.tensor(dout))
    out = head(x)
    np.testing.assert_allclose(out, out_t.detach().numpy(), rtol=1e-12, atol=1e-14)
    dx = head.backward(dout)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-10, atol=1e-14)
    grads = head.grads()
    np.testing.assert_allclose(grads["mlp.0.weight"], twin.mlp[0].weight.grad.numpy(),
                               rtol=1e-10, atol=1e-14)
    if prototypes:
        np.testing.assert_allclose(
            grads["last_layer.weight_v"],
            twin.last_layer.parametrizations.weight.original1.grad.numpy(),
            rtol=1e-10, atol=1e-14)
