"""l2_normalize and weight_norm pairs, DINO's and SimDINO's heads: finite differences, torch."""
import numpy as np
import pytest

from whitebox.functional import (l2_normalize_backward, l2_normalize_forward,
                                 weight_norm_backward, weight_norm_forward)
from whitebox.functional.batch_norm import (batch_norm_backward, batch_norm_eval_backward,
                                            batch_norm_eval_forward, batch_norm_forward)
from whitebox.gradcheck import check_backward, check_module
from whitebox.nn import DINOHead, SimDINOHead, WeightNormLinear
from whitebox.nn.ssl_heads import BatchNorm1d


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


def test_batch_norm_backward_matches_finite_differences(rng):
    x = 3 + 2 * rng.standard_normal((5, 4))
    gamma, beta = rng.uniform(0.5, 2, 4), rng.standard_normal(4)
    # seed 1: check_backward's dout from seed 0 would be affine in x, with gradient 0 in x
    errs = check_backward(batch_norm_forward, batch_norm_backward, [x, gamma, beta], seed=1)
    assert set(errs) == {0, 1, 2}
    stats = rng.standard_normal(4), rng.uniform(0.5, 2, 4)
    check_backward(lambda a, g, b: batch_norm_eval_forward(a, g, b, *stats),
                   batch_norm_eval_backward, [x, gamma, beta], seed=1)
    y, _ = batch_norm_forward(x, np.ones(4), np.zeros(4))
    np.testing.assert_allclose(y.mean(0), 0, atol=1e-14)
    np.testing.assert_allclose(y.var(0), 1 / (1 + 1e-5 / x.var(0)), rtol=1e-12)
    with pytest.raises(ValueError, match="at least 2 rows"):
        batch_norm_forward(x[:1], gamma, beta)
    with pytest.raises(ValueError, match="x has 4 features"):
        batch_norm_forward(x, gamma[:3], beta[:3])


@pytest.mark.torch
def test_batch_norm1d_matches_torch_in_training_and_eval(rng):
    torch = pytest.importorskip("torch")
    bn = BatchNorm1d(4, dtype="float64")
    bn.load_state_dict({"weight": rng.uniform(0.5, 2, 4), "bias": rng.standard_normal(4),
                        "running_mean": np.zeros(4), "running_var": np.ones(4)})
    twin = torch.nn.BatchNorm1d(4).double()
    with torch.no_grad():
        twin.weight.copy_(torch.tensor(bn.param("weight")))
        twin.bias.copy_(torch.tensor(bn.param("bias")))
    for mode in ("train", "train", "eval"):
        bn.train(mode == "train"), twin.train(mode == "train")
        x = 1 + 3 * rng.standard_normal((6, 4))
        xt = torch.tensor(x, requires_grad=True)
        out_t = twin(xt)
        dout = rng.standard_normal((6, 4))
        out_t.backward(torch.tensor(dout))
        np.testing.assert_allclose(bn(x), out_t.detach().numpy(), rtol=1e-12, atol=1e-14)
        bn.zero_grad()
        np.testing.assert_allclose(bn.backward(dout), xt.grad.numpy(), rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(bn.grads()["weight"], twin.weight.grad.numpy(), rtol=1e-10)
        np.testing.assert_allclose(bn.grads()["bias"], twin.bias.grad.numpy(), rtol=1e-10)
        twin.zero_grad()
        for name in ("running_mean", "running_var"):
            np.testing.assert_allclose(bn.param(name), getattr(twin, name).numpy(), rtol=1e-13)
    assert set(bn.trainable_parameters()) == {"weight", "bias"}


def test_bn_heads_names_and_gradients(rng):
    head = DINOHead(5, 7, hidden_dim=6, bottleneck_dim=4, dtype="float64", seed=2, use_bn=True)
    assert set(head.state_dict()) == {
        "mlp.0.weight", "mlp.0.bias", "mlp.1.weight", "mlp.1.bias", "mlp.1.running_mean",
        "mlp.1.running_var", "mlp.3.weight", "mlp.3.bias", "mlp.4.weight", "mlp.4.bias",
        "mlp.4.running_mean", "mlp.4.running_var", "mlp.6.weight", "mlp.6.bias",
        "last_layer.weight_g", "last_layer.weight_v"}
    plain = DINOHead(5, 7, hidden_dim=6, bottleneck_dim=4, dtype="float64", seed=2)
    mine, theirs = head.state_dict(), plain.state_dict()
    for a, b in (("mlp.0.weight", "mlp.0.weight"), ("mlp.3.weight", "mlp.2.weight"),
                 ("mlp.6.weight", "mlp.4.weight"), ("last_layer.weight_v",) * 2):
        np.testing.assert_array_equal(mine[a], theirs[b])   # the draws of the head without BN
    x = rng.standard_normal((6, 5))
    # BN makes mlp.0's gradient small (~1e-5) beside the loss: judge it on an absolute floor
    errs = check_module(_unit_scale(head, rng), [x], floor=1e-3)
    assert "mlp.1.weight" in errs and "mlp.1.running_mean" not in errs
    # batch norm takes out what the rows share: rows that differ by 1e-3 give spread outputs
    z = SimDINOHead(5, hidden_dim=64, bottleneck_dim=8, dtype="float64", seed=0, use_bn=True)
    nobn = SimDINOHead(5, hidden_dim=64, bottleneck_dim=8, dtype="float64", seed=0)
    near = np.ones((16, 5)) + 1e-3 * rng.standard_normal((16, 5))
    mean_cos = lambda f: ((f @ f.T).sum() - len(f)) / (len(f) ** 2 - len(f))
    assert mean_cos(nobn(near)) > 0.999 and mean_cos(z(near)) < 0.5
