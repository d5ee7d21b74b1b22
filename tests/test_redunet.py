"""ReduNet: operators against whitebox.rate's gradients, MCR^2 rising layer by layer."""
import numpy as np
import pytest

from whitebox import rate
from whitebox.data import subspace_mixture
from whitebox.gradcheck import numerical_gradient, rel_error
from whitebox.models import ReduNet
from whitebox.models.redunet import (compression_operators, expansion_operator,
                                     rate_reduction_gradient, soft_membership)

EPS = 0.5


@pytest.fixture(scope="module")
def mixture():
    Z, y, _ = subspace_mixture(240, 16, 3, 3, noise=0.3, rng=0, normalize=True)
    return Z, y


def test_expansion_operator_is_the_coding_rate_gradient(mixture):
    Z, _ = mixture
    E = expansion_operator(Z, EPS)
    assert np.allclose(E, E.T)
    assert rel_error(Z @ E, rate.coding_rate_grad(Z, EPS)) < 1e-10


def test_compression_operators_are_the_class_compression_gradient(mixture):
    Z, y = mixture
    C, gamma = compression_operators(Z, y, EPS, 3)
    assert np.allclose(gamma, np.bincount(y) / len(y))
    _, cache = rate.class_compression_forward(Z, y, EPS)
    dRc = rate.class_compression_backward(None, cache)
    ours = np.stack([gamma[j] * Z[i] @ C[j] for i, j in enumerate(y)])
    assert rel_error(ours, dRc) < 1e-10


def test_layer_direction_is_the_mcr2_gradient(mixture):
    Z, y = mixture
    E = expansion_operator(Z, EPS)
    C, gamma = compression_operators(Z, y, EPS, 3)
    direction = rate_reduction_gradient(Z, E, C, gamma, np.eye(3)[y])
    reference = -rate.mcr2_loss(Z, y, EPS)[1]
    # small entries are differences of two terms: judge them against the largest entry
    assert rel_error(direction, reference, floor=1e-3 * np.abs(reference).max()) < 1e-10
    # and against finite differences of Delta R itself, on a few rows
    Zs, ys = Z[:24].copy(), y[:24]
    Es = expansion_operator(Zs, EPS)
    Cs, gs = compression_operators(Zs, ys, EPS, 3)
    analytic = rate_reduction_gradient(Zs, Es, Cs, gs, np.eye(3)[ys])
    numeric = numerical_gradient(lambda: np.array(-rate.mcr2_loss(Zs, ys, EPS)[0]), Zs,
                                 np.array(1.0), h=1e-5)
    assert rel_error(analytic, numeric, floor=1e-3 * np.abs(analytic).max()) < 1e-6


def test_rate_reduction_never_falls_over_layers(mixture):
    Z, y = mixture
    net = ReduNet(depth=12, eps=EPS, eta=0.5)
    out = net.construct(Z, y)
    history = np.array(net.history)
    assert len(history) == 13 and len(net.layers) == 12
    assert np.all(np.diff(history) >= -1e-10), history
    assert history[-1] > history[0] + 1.0
    assert np.allclose(np.linalg.norm(out, axis=1), 1.0)
    # the same layers with the true labels reproduce the construction exactly
    assert np.abs(net.transform(Z, labels=y) - out).max() < 1e-12


def test_new_samples_are_transformed_with_soft_memberships():
    Z, y, _ = subspace_mixture(480, 16, 3, 3, noise=0.3, rng=1, normalize=True)
    net = ReduNet(depth=10, eps=EPS, eta=0.5, temperature=100.0)
    net.construct(Z[:240], y[:240])
    held_out = net.transform(Z[240:], return_all=True)
    rates = [net.rate_reduction(f, y[240:]) for f in held_out]
    assert rates[-1] > rates[0] + 0.5, rates
    assert np.mean(net.predict(Z[240:]) == y[240:]) > 0.9


def test_soft_membership_rows_and_limit(mixture):
    Z, y = mixture
    C, _ = compression_operators(Z, y, EPS, 3)
    pi = soft_membership(Z, C, 10.0)
    assert pi.shape == (len(Z), 3) and np.allclose(pi.sum(axis=1), 1.0)
    norms = np.linalg.norm(np.einsum("nd,jde->nje", Z, C), axis=-1)
    assert np.array_equal(soft_membership(Z, C, 1e6).argmax(axis=1), norms.argmin(axis=1))


def test_bad_use_is_refused(mixture):
    Z, y = mixture
    with pytest.raises(RuntimeError, match="before construct"):
        ReduNet(depth=2).transform(Z)
    with pytest.raises(ValueError, match="depth"):
        ReduNet(depth=0)
    with pytest.raises(ValueError, match="labels"):
        ReduNet(depth=2).construct(Z, y[:-1])
    with pytest.raises(TypeError, match="construct needs labels"):
        ReduNet(depth=2).construct(Z, None)
    with pytest.raises(ValueError, match="non-empty"):
        ReduNet(depth=2).construct(Z[:0], y[:0])
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match=f"num_classes must be a positive integer, got {bad}"):
            ReduNet(depth=2).construct(Z, y, num_classes=bad)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\), found 2"):
        ReduNet(depth=2).construct(Z, y, num_classes=2)
    with pytest.raises(ValueError, match="Z contains NaN"):
        ReduNet(depth=2).construct(np.full_like(Z, np.nan), y)


def test_new_samples_must_fit_the_constructed_network(mixture):
    Z, y = mixture
    net = ReduNet(depth=1)
    net.construct(Z, y)
    d, k = Z.shape[1], net.num_classes
    with pytest.raises(ValueError, match=f"Z has d = {d - 1} features; the network was "
                                         f"constructed on d = {d}"):
        net.transform(Z[:, :-1])
    with pytest.raises(ValueError, match=f"Z has d = {d - 1} features"):
        net.predict(Z[:, :-1])
    with pytest.raises(ValueError, match="Z contains NaN"):
        net.transform(np.full_like(Z, np.nan))
    with pytest.raises(ValueError, match=rf"labels must lie in \[0, {k}\)"):
        net.transform(Z, labels=np.full(len(Z), k))


def test_non_finite_settings_are_refused_by_name():
    for name in ("temperature", "eta", "eps"):
        for bad in (np.inf, np.nan):
            with pytest.raises(ValueError, match=rf"{name} must be finite and in \(0, inf\)"):
                ReduNet(depth=2, **{name: bad})


def test_huge_float32_features_are_scaled_not_zeroed(mixture):
    """Rows of norm 1e30 in float32 overflow a plain norm; the layers see unit rows instead."""
    Z, labels = mixture
    net = ReduNet(depth=2, eps=0.5, eta=0.5)
    small = net.construct(Z.astype(np.float32), labels)
    big = ReduNet(depth=2, eps=0.5, eta=0.5).construct((1e30 * Z).astype(np.float32), labels)
    np.testing.assert_allclose(np.linalg.norm(big, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(big, small, rtol=1e-4, atol=1e-5)
    out = net.transform((1e30 * Z).astype(np.float32))
    np.testing.assert_allclose(out, net.transform(Z.astype(np.float32)), rtol=1e-4, atol=1e-5)


def test_operators_follow_the_rate_precision_rule():
    """float32 operators that float32 cannot hold come from float64; tiny eps is refused."""
    rng = np.random.default_rng(5)
    Z = rng.standard_normal((6, 1)) @ rng.standard_normal((1, 4))       # rank one, d = 4
    E32 = expansion_operator(Z.astype(np.float32), 1e-3)
    E64 = expansion_operator(Z.astype(np.float32).astype(np.float64), 1e-3)
    assert E32.dtype == np.float32
    np.testing.assert_allclose(E32, E64, rtol=1e-4, atol=1e-6 * np.abs(E64).max())
    a = 4 / 6 / 1e-6
    np.testing.assert_allclose(E64, a * np.linalg.inv(np.eye(4) + a * Z.T @ Z), rtol=1e-6,
                               atol=1e-9 * a)
    with pytest.raises(ValueError, match=r"eps = 1e-09 is too small.*use eps >= "):
        expansion_operator(Z, 1e-9)
