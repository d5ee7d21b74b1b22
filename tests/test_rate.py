"""whitebox.rate: values against slogdet, gradients against finite differences, invariances."""
import math

import numpy as np
import pytest

from whitebox import rate
from whitebox.backend import to_numpy
from whitebox.gradcheck import check_backward, numerical_gradient, rel_error


# ----------------------------------------------------------------- references
def half_logdet_direct(X, a):
    """1/2 logdet(I_m + a X^T X) by slogdet on the column side, in float64."""
    X = np.asarray(X, dtype=np.float64)
    sign, logdet = np.linalg.slogdet(np.eye(X.shape[1]) + a * X.T @ X)
    assert sign > 0
    return 0.5 * logdet


def coding_rate_direct(Z, eps):
    N, d = Z.shape
    return half_logdet_direct(Z, d / (N * eps ** 2))


def compression_rate_direct(Z, U, eps):
    N, p = Z.shape[0], U.shape[2]
    return sum(half_logdet_direct(Z @ U[k], p / (N * eps ** 2)) for k in range(U.shape[0]))


def mcr2_direct(Z, labels, eps):
    N, d = Z.shape
    Rc = 0.0
    for j in np.unique(labels):
        Zj = Z[labels == j]
        Rc += len(Zj) / N * half_logdet_direct(Zj, d / (len(Zj) * eps ** 2))
    return Rc - coding_rate_direct(Z, eps)


def draw(rng, *shape):
    return rng.standard_normal(shape)


# Rates are O(10) while some gradient entries are O(1e-4): h = 1e-4 balances the
# O(h^2) truncation error against round-off (value * 1e-16 / h) for those entries.
H = 1e-4

SHAPES = [(6, 10), (10, 6), (7, 7), (3, 9, 5), (2, 4, 12)]   # N < d, N > d, N = d, batched


# ----------------------------------------------------------------- values
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("eps", [0.3, 1.0])
def test_coding_rate_matches_slogdet(xp, shape, eps):
    Z = draw(np.random.default_rng(1), *shape)
    got = to_numpy(rate.coding_rate(xp.asarray(Z), eps))
    Z3 = Z.reshape(-1, *shape[-2:])
    want = np.array([coding_rate_direct(z, eps) for z in Z3]).reshape(shape[:-2])
    assert got.shape == shape[:-2]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("K,p", [(3, 2), (1, 4), (2, 5)])
def test_compression_rate_matches_slogdet(xp, shape, K, p):
    rng = np.random.default_rng(2)
    Z, U = draw(rng, *shape), draw(rng, K, shape[-1], p)
    got = to_numpy(rate.compression_rate(xp.asarray(Z), xp.asarray(U), 0.5))
    Z3 = Z.reshape(-1, *shape[-2:])
    want = np.array([compression_rate_direct(z, U, 0.5) for z in Z3]).reshape(shape[:-2])
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_rate_reduction_and_sparse_values(xp):
    rng = np.random.default_rng(3)
    Z, U = draw(rng, 2, 8, 6), draw(rng, 3, 6, 2)
    Zx, Ux = xp.asarray(Z), xp.asarray(U)
    dR = to_numpy(rate.rate_reduction(Zx, Ux, 0.4))
    srr = to_numpy(rate.sparse_rate_reduction(Zx, Ux, 0.4, lam=0.05))
    for i in range(2):
        want = coding_rate_direct(Z[i], 0.4) - compression_rate_direct(Z[i], U, 0.4)
        assert dR[i] == pytest.approx(want, rel=1e-12)
        assert srr[i] == pytest.approx(want - 0.05 * np.abs(Z[i]).sum(), rel=1e-12)


def test_mcr2_value_matches_direct(xp):
    rng = np.random.default_rng(4)
    Z = draw(rng, 30, 8)
    labels = rng.integers(0, 4, size=30)
    loss, dZ = rate.mcr2_loss(xp.asarray(Z), xp.asarray(labels), 0.5)
    assert isinstance(loss, float)
    assert loss == pytest.approx(mcr2_direct(Z, labels, 0.5), rel=1e-12)
    assert dZ.shape == Z.shape
    Rc = float(rate.class_compression_rate(xp.asarray(Z), xp.asarray(labels), 0.5))
    assert Rc - float(rate.coding_rate(xp.asarray(Z), 0.5)) == pytest.approx(loss, rel=1e-12)


def test_mcr2_rewards_separated_classes():
    """Orthogonal classes give a larger rate reduction (a lower loss) than mixed ones."""
    from whitebox.data import subspace_mixture
    X, y, _ = subspace_mixture(120, 16, 4, 3, noise=0.0, rng=5, normalize=True)
    separated, _ = rate.mcr2_loss(X, y, 0.5)
    shuffled, _ = rate.mcr2_loss(X, np.random.default_rng(0).permutation(y), 0.5)
    assert separated < shuffled < 0


# ----------------------------------------------------------------- Gram side
@pytest.mark.parametrize("n,m", [(5, 9), (9, 5)])
def test_gram_side_switch_gives_same_value_and_gradient(n, m):
    X = draw(np.random.default_rng(6), 2, n, m)
    h_rows, c_rows = rate.gram_logdet_forward(X, 0.7, side="rows")
    h_cols, c_cols = rate.gram_logdet_forward(X, 0.7, side="cols")
    np.testing.assert_allclose(h_rows, h_cols, rtol=1e-12)
    assert rate.gram_side(n, m) == ("rows" if n <= m else "cols")
    assert c_rows[2].shape[-1] == n and c_cols[2].shape[-1] == m   # which matrix was factored
    dout = np.array([0.3, -1.2])
    np.testing.assert_allclose(rate.gram_logdet_backward(dout, c_rows),
                               rate.gram_logdet_backward(dout, c_cols), rtol=1e-10)


def test_coding_and_compression_side_switch():
    rng = np.random.default_rng(7)
    for N, d in [(4, 10), (10, 4)]:
        Z, U = draw(rng, N, d), draw(rng, 2, d, 3)
        r = [float(rate.coding_rate_forward(Z, 0.6, side=s)[0]) for s in ("rows", "cols")]
        c = [float(rate.compression_rate_forward(Z, U, 0.6, side=s)[0]) for s in ("rows", "cols")]
        assert r[0] == pytest.approx(r[1], rel=1e-12)
        assert c[0] == pytest.approx(c[1], rel=1e-12)


# ----------------------------------------------------------------- gradients
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("side", ["auto", "rows", "cols"])
def test_coding_rate_gradient(shape, side):
    Z = draw(np.random.default_rng(8), *shape)
    errs = check_backward(lambda Z: rate.coding_rate_forward(Z, 0.7, side=side),
                          rate.coding_rate_backward, [Z], h=H, tol=1e-7)
    assert errs[0] < 1e-7


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("side", ["auto", "rows", "cols"])
def test_compression_rate_gradient_Z_and_U(shape, side):
    rng = np.random.default_rng(9)
    Z, U = draw(rng, *shape), draw(rng, 3, shape[-1], 2)
    errs = check_backward(lambda Z, U: rate.compression_rate_forward(Z, U, 0.7, side=side),
                          rate.compression_rate_backward, [Z, U], h=H, tol=1e-7)
    assert set(errs) == {0, 1} and max(errs.values()) < 1e-7


def _fd_check(value, grad, x, tol=1e-7, seed=0):
    """Compare grad with central differences of sum(dout * value()) perturbing x in place."""
    dout = np.random.default_rng(seed).standard_normal(np.shape(value()))
    num = numerical_gradient(lambda: np.asarray(value()), x, dout, h=H)
    err = rel_error(grad(dout if dout.ndim else None), num)
    assert err < tol, err
    return err


def test_grad_helpers_match_finite_differences():
    rng = np.random.default_rng(10)
    Z, U = draw(rng, 2, 7, 6), draw(rng, 3, 6, 2)
    Z = np.sign(Z) * (0.2 + np.abs(Z))     # away from the l1 kink at 0
    eps, lam = 0.5, 0.03
    _fd_check(lambda: rate.coding_rate(Z, eps), lambda g: rate.coding_rate_grad(Z, eps, g), Z)
    for wrt, x in (("Z", Z), ("U", U)):
        _fd_check(lambda: rate.compression_rate(Z, U, eps),
                  lambda g: rate.compression_rate_grad(Z, U, eps, wrt=wrt, dout=g), x)
        _fd_check(lambda: rate.rate_reduction(Z, U, eps),
                  lambda g: rate.rate_reduction_grad(Z, U, eps, wrt=wrt, dout=g), x)
        _fd_check(lambda: rate.sparse_rate_reduction(Z, U, eps, lam),
                  lambda g: rate.sparse_rate_reduction_grad(Z, U, eps, lam, wrt=wrt, dout=g), x)
    dZ, dU = rate.compression_rate_grad(Z, U, eps, wrt="both")
    assert dZ.shape == Z.shape and dU.shape == U.shape


@pytest.mark.parametrize("N,d,classes", [(24, 6, 3), (9, 12, 2)])
def test_mcr2_gradient(N, d, classes):
    rng = np.random.default_rng(11)
    Z = draw(rng, N, d)
    labels = np.arange(N) % classes
    _, dZ = rate.mcr2_loss(Z, labels, 0.5)
    num = numerical_gradient(lambda: np.asarray(rate.mcr2_loss(Z, labels, 0.5)[0]), Z,
                             np.ones(()), h=H)
    assert rel_error(dZ, num) < 1e-7


def test_compression_step_is_exact_gradient_step():
    rng = np.random.default_rng(12)
    Z, U = draw(rng, 2, 9, 8), draw(rng, 4, 8, 2)
    step = rate.compression_step(Z, U, 0.5, kappa=0.01)
    np.testing.assert_allclose(step, Z - 0.01 * rate.compression_rate_grad(Z, U, 0.5),
                               rtol=1e-14)
    assert np.all(rate.compression_rate(step, U, 0.5) < rate.compression_rate(Z, U, 0.5))


# ----------------------------------------------------------------- batching, invariances
def test_batched_equals_looped():
    rng = np.random.default_rng(13)
    Z, U = draw(rng, 4, 6, 9), draw(rng, 3, 9, 2)
    vals = {"R": rate.coding_rate(Z, 0.5), "Rc": rate.compression_rate(Z, U, 0.5)}
    grads = {"R": rate.coding_rate_grad(Z, 0.5), "Rc": rate.compression_rate_grad(Z, U, 0.5)}
    dU = rate.compression_rate_grad(Z, U, 0.5, wrt="U")
    for i in range(4):
        assert vals["R"][i] == pytest.approx(float(rate.coding_rate(Z[i], 0.5)), rel=1e-13)
        assert vals["Rc"][i] == pytest.approx(float(rate.compression_rate(Z[i], U, 0.5)),
                                              rel=1e-13)
        np.testing.assert_allclose(grads["R"][i], rate.coding_rate_grad(Z[i], 0.5), rtol=1e-11)
        np.testing.assert_allclose(grads["Rc"][i], rate.compression_rate_grad(Z[i], U, 0.5),
                                   rtol=1e-11)
    looped_dU = sum(rate.compression_rate_grad(Z[i], U, 0.5, wrt="U") for i in range(4))
    np.testing.assert_allclose(dU, looped_dU, rtol=1e-11)


def test_invariances():
    rng = np.random.default_rng(14)
    Z, U = draw(rng, 10, 6), draw(rng, 2, 6, 3)
    Q, _ = np.linalg.qr(draw(rng, 6, 6))                      # an orthogonal rotation
    R = float(rate.coding_rate(Z, 0.5))
    assert float(rate.coding_rate(Z @ Q, 0.5)) == pytest.approx(R, rel=1e-12)
    assert float(rate.coding_rate(Z[rng.permutation(10)], 0.5)) == pytest.approx(R, rel=1e-12)
    # rotating features and bases together leaves every projection Z U_k unchanged
    QU = np.einsum("ij,kjp->kip", Q.T, U)
    assert float(rate.compression_rate(Z @ Q, QU, 0.5)) == pytest.approx(
        float(rate.compression_rate(Z, U, 0.5)), rel=1e-12)
    # one subspace spanning everything: Rc is R
    I = np.eye(6)[None]
    assert float(rate.compression_rate(Z, I, 0.5)) == pytest.approx(R, rel=1e-12)
    np.testing.assert_allclose(rate.compression_rate_grad(Z, I, 0.5),
                               rate.coding_rate_grad(Z, 0.5), rtol=1e-12)
    assert abs(float(rate.rate_reduction(Z, I, 0.5))) < 1e-12


def test_official_eps_convention():
    """The official code's eps is epsilon squared: scale d/(N eps_official)."""
    Z = draw(np.random.default_rng(15), 12, 5)
    official = 0.5 * np.linalg.slogdet(np.eye(5) + 5 / (12 * 0.5) * Z.T @ Z)[1]
    assert float(rate.coding_rate(Z, math.sqrt(0.5))) == pytest.approx(official, rel=1e-12)


def test_float32_with_float64_accumulation():
    rng = np.random.default_rng(16)
    Z64, U64 = draw(rng, 3, 20, 16), draw(rng, 2, 16, 8)
    Z, U = Z64.astype(np.float32), U64.astype(np.float32)
    ref = rate.coding_rate(Z.astype(np.float64), 0.5)
    acc = rate.coding_rate(Z, 0.5, accumulate="float64")
    plain = rate.coding_rate(Z, 0.5)
    assert acc.dtype == np.float64 and plain.dtype == np.float32
    np.testing.assert_allclose(acc, ref, rtol=1e-12)
    np.testing.assert_allclose(plain, ref, rtol=1e-4)
    g = rate.compression_rate_grad(Z, U, 0.5, wrt="both", accumulate="float64")
    assert g[0].dtype == np.float32 and g[1].dtype == np.float32
    assert rate.compression_step(Z, U, 0.5, 0.1).dtype == np.float32
    assert rate.mcr2_loss(Z[0], np.arange(20) % 3, 0.5)[1].dtype == np.float32


# ----------------------------------------------------------------- measurement
def test_measure_compression_matches_official_convention(xp):
    rng = np.random.default_rng(17)
    Z, U = draw(rng, 3, 11, 12), draw(rng, 4, 12, 3)
    want = 0.0
    for b in range(3):
        for k in range(4):
            W = Z[b] @ U[k]
            W /= np.linalg.norm(W, axis=1, keepdims=True)
            want += 0.5 * np.linalg.slogdet(np.eye(11) + 3 / (11 * 0.01) * W @ W.T)[1]
    want /= 3
    got = rate.measure_compression(xp.asarray(Z), xp.asarray(U))
    assert isinstance(got, float) and got == pytest.approx(want, rel=1e-12)
    assert rate.measure_compression(xp.asarray(3.0 * Z), xp.asarray(U)) == pytest.approx(
        got, rel=1e-10)                                         # scale does not matter
    single = rate.measure_compression(xp.asarray(Z[0]), xp.asarray(U))
    assert single == pytest.approx(rate.measure_compression(xp.asarray(Z[:1]), xp.asarray(U)))


def test_bases_from_qkv_follow_head_slicing():
    K, p, d = 3, 2, 5
    W = draw(np.random.default_rng(18), K * p, d)
    x = draw(np.random.default_rng(19), 4, d)
    U = rate.bases_from_qkv(W, K)
    w = x @ W.T                                                 # (N, K p), official qkv output
    for k in range(K):
        np.testing.assert_allclose(x @ U[k], w[:, k * p:(k + 1) * p], rtol=1e-13)


# ----------------------------------------------------------------- errors
def test_errors_name_the_argument():
    rng = np.random.default_rng(20)
    Z, U = draw(rng, 5, 4), draw(rng, 2, 4, 2)
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="eps"):
            rate.coding_rate(Z, bad)
    with pytest.raises(TypeError, match="eps"):
        rate.coding_rate(Z, "0.5")
    for bad in (np.nan, np.inf):
        Zb = Z.copy()
        Zb[1, 2] = bad
        with pytest.raises(ValueError, match="Z contains NaN or infinite"):
            rate.compression_rate(Zb, U, 0.5)
    with pytest.raises(ValueError, match=r"U has shape \(2, 3, 2\), so d = 3, but Z has d = 4"):
        rate.compression_rate(Z, draw(rng, 2, 3, 2), 0.5)
    with pytest.raises(ValueError, match=r"U must have shape \(K, d, p\)"):
        rate.compression_rate(Z, draw(rng, 4, 2), 0.5)
    with pytest.raises(ValueError, match=r"labels must have shape \(5,\)"):
        rate.mcr2_loss(Z, np.array([0, 1, 0]), 0.5)
    with pytest.raises(TypeError, match="labels must be an integer array"):
        rate.mcr2_loss(Z, np.zeros(5), 0.5)
    with pytest.raises(ValueError, match="labels must be non-negative"):
        rate.mcr2_loss(Z, np.array([0, 1, -1, 0, 1]), 0.5)
    with pytest.raises(ValueError, match=r"Z must have shape \(N, d\) or \(B, N, d\)"):
        rate.coding_rate(np.ones(4), 0.5)
    with pytest.raises(TypeError, match="Z must be a floating-point"):
        rate.coding_rate(np.ones((3, 4), dtype=int), 0.5)
    with pytest.raises(ValueError, match="wrt must be one of"):
        rate.compression_rate_grad(Z, U, 0.5, wrt="V")
    with pytest.raises(ValueError, match="accumulate must be one of"):
        rate.coding_rate(Z, 0.5, accumulate="float16")
    with pytest.raises(ValueError, match="dout must have the shape"):
        rate.coding_rate_grad(Z[None], 0.5, dout=np.ones(3))
    with pytest.raises(ValueError, match="kappa"):
        rate.compression_step(Z, U, 0.5, kappa=float("nan"))
    with pytest.raises(TypeError, match="kappa must be a real number.*'a'"):
        rate.compression_step(Z, U, 0.5, kappa="a")
    with pytest.raises(TypeError, match="labels must be an integer array on the same backend"):
        rate.mcr2_loss(Z, [0, 1, 0, 1, 0], 0.5)
    W = draw(rng, 6, 4)
    for bad in (0, -2):
        with pytest.raises(ValueError, match=f"num_heads must be an integer >= 1, got {bad}"):
            rate.bases_from_qkv(W, bad)
    with pytest.raises(TypeError, match="num_heads"):
        rate.bases_from_qkv(W, 2.0)
    with pytest.raises(ValueError, match="lam"):
        rate.sparse_rate_reduction(Z, U, 0.5, lam=-1.0)
    with pytest.raises(ValueError, match="eps2"):
        rate.measure_compression(Z, U, eps2=0.0)
    with pytest.raises(ValueError, match="side must be one of"):
        rate.coding_rate_forward(Z, 0.5, side="left")


def test_labels_on_another_backend_than_z_are_refused():
    """The label check compares the labels' backend with the one the features gave."""
    import types

    from whitebox.functional._checks import check_labels
    other = types.SimpleNamespace(__name__="otherbackend", ndarray=np.ndarray)
    with pytest.raises(TypeError, match=r"labels must be .* same backend as Z \(otherbackend\)"):
        check_labels(np.array([0, 1, 0]), 3, other)
    check_labels(np.array([0, 1, 0]), 3, np)                   # same backend: accepted


def test_negative_scale_is_refused():
    """I + a G with a < 0 need not be positive definite: a clear error, never a NaN."""
    X = draw(np.random.default_rng(21), 4, 3)
    with pytest.raises(ValueError, match="a must be a non-negative finite scale, got -10.0"):
        rate.gram_logdet_forward(X, -10.0)


# ----------------------------------------------------------------- precision rule
def issue_example():
    r = np.random.default_rng(4)
    return np.outer(r.standard_normal(20), r.standard_normal(8)).astype(np.float32)


def test_float32_rank_one_example_is_right_or_refused():
    """float32 cannot hold this logdet (condition ~6e7): promoted by default, refused on request."""
    Z = issue_example()
    R = rate.coding_rate(Z, 1e-3)
    assert R.dtype == np.float32
    assert float(R) == pytest.approx(coding_rate_direct(Z, 1e-3), rel=1e-6)   # 9.0660, not 9.74
    g, g64 = rate.coding_rate_grad(Z, 1e-3), rate.coding_rate_grad(Z.astype(np.float64), 1e-3)
    assert g.dtype == np.float32 and rel_error(g, g64) < 1e-5
    with pytest.raises(ValueError, match="float32 cannot hold.*accumulate='float64'"):
        rate.coding_rate(Z, 1e-3, accumulate="float32")
    with pytest.raises(ValueError, match="float32 cannot hold.*accumulate='float64'"):
        rate.compression_rate_grad(Z, np.eye(8, dtype=np.float32)[None], 1e-3,
                                   accumulate="float32")


def _sweep(accumulate, seed, draws):
    """Random float32 draws of every rank: each result within tolerance of float64, or refused."""
    rng = np.random.default_rng(seed)
    checked = refused = 0
    for _ in range(draws):
        N, d = (int(v) for v in rng.integers(2, 24, size=2))
        rank = 1 if rng.random() < 0.5 else int(rng.integers(1, min(N, d) + 1))
        Z = (draw(rng, N, rank) @ draw(rng, rank, d) * 10 ** rng.uniform(-1, 1))
        Z = Z.astype(np.float32)
        U = np.linalg.qr(draw(rng, d, d))[0][:, :2 * (d // 2)].reshape(d, -1, 2)
        U = U.transpose(1, 0, 2).astype(np.float32)                 # (K, d, 2)
        labels = np.arange(N) % 2
        eps = 10 ** rng.uniform(-4, 0)
        Z64, U64 = Z.astype(np.float64), U.astype(np.float64)
        cases = [
            (lambda A, Ub: rate.coding_rate(A, eps, accumulate=accumulate),
             lambda A, Ub: rate.coding_rate_grad(A, eps, accumulate=accumulate)),
            (lambda A, Ub: rate.compression_rate(A, Ub, eps, accumulate=accumulate),
             lambda A, Ub: rate.compression_rate_grad(A, Ub, eps, "both", accumulate=accumulate)),
            (lambda A, Ub: rate.mcr2_loss(A, labels, eps, accumulate=accumulate)[0],
             lambda A, Ub: rate.mcr2_loss(A, labels, eps, accumulate=accumulate)[1]),
        ]
        if U.shape[0] == 0:
            cases = cases[::2]
        for value, grad in cases:
            try:
                v, g = value(Z, U), grad(Z, U)
            except ValueError as err:
                assert "accumulate='float64'" in str(err) or "eps >=" in str(err)
                refused += 1
                continue
            v64, g64 = value(Z64, U64), grad(Z64, U64)
            assert abs(float(v) - float(v64)) <= 1e-4 * max(1.0, abs(float(v64)))
            pairs = zip(g, g64) if isinstance(g, tuple) else [(g, g64)]
            for a, b in pairs:
                assert np.linalg.norm(a - b) <= 1e-3 * max(np.linalg.norm(b), 1e-30)
            checked += 1
    return checked, refused


def test_float32_sweep_never_silently_wrong():
    checked, refused = _sweep(None, 22, 60)
    assert refused == 0 and checked > 100          # promoted where needed: all correct
    checked, refused = _sweep("float32", 23, 60)
    assert refused > 10 and checked > 20           # both kinds occur in the sweep


def test_tiny_eps_and_empty_inputs():
    Z = draw(np.random.default_rng(24), 6, 4)
    for call in (lambda e: rate.coding_rate(Z, e),
                 lambda e: rate.compression_rate(Z, np.eye(4)[None], e),
                 lambda e: rate.mcr2_loss(Z, np.arange(6) % 2, e)):
        with pytest.raises(ValueError, match=r"eps = 1e-200 is too small.*at least \d\.\d+e-155"):
            call(1e-200)
    # rank-deficient features: eps = 1e-9 leaves eigenvalues 1 beside ones near 1e18
    Z = np.repeat(Z[:, :2], 2, axis=1)
    for call in (lambda e: rate.coding_rate(Z, e),
                 lambda e: rate.compression_rate(Z, np.eye(4)[None], e),
                 lambda e: rate.mcr2_loss(Z, np.arange(6) % 2, e)):
        with pytest.raises(ValueError, match=r"eps = 1e-09 is too small.*use eps >= \d"):
            call(1e-9)
    with pytest.raises(ValueError, match=r"sqrt\(eps2\) = .* is too small"):
        rate.measure_compression(Z, np.eye(4)[None], eps2=1e-320)
    for shape in ((0, 4), (6, 0), (2, 0, 4)):
        with pytest.raises(ValueError, match="Z must have at least one token and one feature"):
            rate.coding_rate(np.zeros(shape), 0.5)
    empty = np.zeros((0, 6, 4))                    # an empty batch: an empty answer
    assert rate.coding_rate(empty, 0.5).shape == (0,)
    assert rate.coding_rate_grad(empty, 0.5).shape == (0, 6, 4)
    assert rate.compression_rate(empty, np.eye(4)[None], 0.5).shape == (0,)


# ----------------------------------------------------------------- backends
@pytest.mark.gpu
def test_numpy_cupy_agree_float32(xp):
    if xp is np:
        pytest.skip("compares CuPy with NumPy; nothing to compare on NumPy alone")
    rng = np.random.default_rng(22)
    Z, U = draw(rng, 4, 197, 48).astype(np.float32), draw(rng, 3, 48, 16).astype(np.float32)
    labels = np.arange(197) % 5
    Zx, Ux = xp.asarray(Z), xp.asarray(U)
    pairs = [
        (rate.coding_rate(Zx, 0.5), rate.coding_rate(Z, 0.5)),
        (rate.coding_rate_grad(Zx, 0.5), rate.coding_rate_grad(Z, 0.5)),
        (rate.compression_rate(Zx, Ux, 0.5), rate.compression_rate(Z, U, 0.5)),
        (rate.compression_rate_grad(Zx, Ux, 0.5, wrt="U"),
         rate.compression_rate_grad(Z, U, 0.5, wrt="U")),
        (rate.mcr2_loss(Zx[0], xp.asarray(labels), 0.5)[1], rate.mcr2_loss(Z[0], labels, 0.5)[1]),
    ]
    for got, want in pairs:
        np.testing.assert_allclose(to_numpy(got), want, rtol=2e-3, atol=2e-4)
    with pytest.raises(TypeError, match="same backend as Z"):
        rate.mcr2_loss(Zx[0], labels, 0.5)                      # NumPy labels, CuPy features


def test_half_precision_is_promoted_too():
    """float16 input is computed at least in float32, under the same rule."""
    Z = draw(np.random.default_rng(25), 5, 4).astype(np.float16)
    assert float(rate.coding_rate(np.zeros((3, 2), np.float16), 0.5)) == 0.0
    R = rate.coding_rate(Z, 0.5)
    assert R.dtype == np.float16
    assert float(R) == pytest.approx(coding_rate_direct(Z, 0.5), rel=1e-3)
    assert rate.coding_rate_grad(Z, 0.5).dtype == np.float16


# ------------------------------------------------ the line between computable and not
def _orthonormal(rng, n, k):
    return np.linalg.qr(rng.standard_normal((n, k)))[0]


def _with_singular_values(rng, N, d, s):
    """A float64 (N, d) matrix whose singular values are s (the rest 0)."""
    r = len(s)
    return _orthonormal(rng, N, r) @ np.diag(s) @ _orthonormal(rng, d, r).T


def _exact_half_logdet(s, a):
    """1/2 logdet(I + a X^T X) = 1/2 sum_i log(1 + a s_i^2), from the singular values."""
    return 0.5 * sum(math.log1p(a * v * v) for v in s)


def _longdouble_reference(X, a):
    """(1/2 logdet(I + a X^T X), a X (I + a X^T X)^{-1}) in extended precision (np.longdouble).

    Cholesky and Gauss-Jordan written out, since LAPACK has no long double.
    """
    X = np.asarray(X, dtype=np.longdouble)
    k = X.shape[1]
    M = np.eye(k, dtype=np.longdouble) + np.longdouble(a) * (X.T @ X)
    L = np.zeros_like(M)
    for j in range(k):
        L[j, j] = np.sqrt(M[j, j] - L[j, :j] @ L[j, :j])
        L[j + 1:, j] = (M[j + 1:, j] - L[j + 1:, :j] @ L[j, :j]) / L[j, j]
    A = np.concatenate([M, np.eye(k, dtype=np.longdouble)], axis=1)
    for j in range(k):                                 # SPD: no pivoting needed
        A[j] /= A[j, j]
        for i in range(k):
            if i != j:
                A[i] -= A[i, j] * A[j]
    return np.log(np.diagonal(L)).sum(), np.longdouble(a) * X @ A[:, k:]


def test_well_conditioned_float64_is_computed_not_refused():
    """Every eigenvalue of I + a G far above 1 (full-rank features, large a) is no reason to refuse.

    These were refused by a bound that took the smallest eigenvalue to be 1.
    """
    rng = np.random.default_rng(30)
    Z = 1e4 * rng.standard_normal((64, 500))           # 64 tokens of width 500, entries ~1e4
    R, dZ = rate.coding_rate(Z, 0.5), rate.coding_rate_grad(Z, 0.5)
    ref, dref = _longdouble_reference(Z.T, 500 / 64 / 0.25)     # the 64 x 64 side
    assert abs(float(R) - float(ref)) <= 1e-12 * float(ref)
    assert rel_error(dZ, np.asarray(dref, dtype=np.float64).T) < 1e-10
    s = [3.0, 2.0, 1.0, 0.5]
    X = _with_singular_values(rng, 6, 4, s)            # full rank
    for eps in (1e-9, 1e-12):
        a = 4 / 6 / eps ** 2
        assert float(rate.coding_rate(X, eps)) == pytest.approx(_exact_half_logdet(s, a),
                                                               rel=1e-12)
        ref, dref = _longdouble_reference(X, a)
        assert rel_error(rate.coding_rate_grad(X, eps), np.asarray(dref, np.float64)) < 1e-8


def test_float32_holds_well_conditioned_large_features():
    """float32 with accumulate='float32' computes a full-rank case far past the old bound."""
    rng = np.random.default_rng(31)
    Z = (1e4 * rng.standard_normal((64, 500))).astype(np.float32)
    R = rate.coding_rate(Z, 0.5, accumulate="float32")
    ref, dref = _longdouble_reference(Z.T.astype(np.float64), 500 / 64 / 0.25)
    assert R.dtype == np.float32 and abs(float(R) - float(ref)) <= 1e-5 * float(ref)
    dZ = rate.coding_rate_grad(Z, 0.5, accumulate="float32")
    assert rel_error(dZ, np.asarray(dref, np.float64).T) < 1e-4


def test_uncomputable_is_refused_because_it_is_wrong():
    """Rank-deficient features at eps = 1e-9: float64 itself gives a wrong number, so refuse."""
    rng = np.random.default_rng(32)
    s = [3.0, 1.0]
    X = _with_singular_values(rng, 6, 4, s)            # rank 2 of 4
    a = 4 / 6 / 1e-18
    exact = _exact_half_logdet(s, a)
    with np.errstate(all="ignore"):
        sign, raw = np.linalg.slogdet(np.eye(4) + a * X.T @ X)
    assert not (sign > 0 and abs(0.5 * raw - exact) <= 1e-4 * exact)    # unguarded: wrong
    with pytest.raises(ValueError, match=r"eps = 1e-09 is too small.*use eps >= "):
        rate.coding_rate(X, 1e-9)
    message = str(_raises(lambda: rate.coding_rate(X, 1e-9)))
    eps_hint = float(message.split("eps >= ")[1].split()[0])
    assert float(rate.coding_rate(X, eps_hint)) == pytest.approx(           # the hint suffices
        _exact_half_logdet(s, 4 / 6 / eps_hint ** 2), rel=1e-4)      # the rule's budget


def _raises(call):
    with pytest.raises(ValueError) as info:
        call()
    return info.value


@pytest.mark.parametrize("cond, holds", [(1e11, True), (1e12, True), (1e14, False),
                                         (1e16, False)])
def test_both_sides_of_the_float64_line(cond, holds):
    """cond(I + a G) set exactly: below 4.5e12 returned (to the exact value), above refused."""
    rng = np.random.default_rng(33)
    s = [math.sqrt(cond), 1.0]                         # a = 1: eigenvalues 1 + cond, 2
    X = _with_singular_values(rng, 6, 2, s)
    if holds:
        h, cache = rate.gram_logdet_forward(X, 1.0)
        assert float(h) == pytest.approx(_exact_half_logdet(s, 1.0), rel=1e-6)
        _, dref = _longdouble_reference(X, 1.0)
        assert rel_error(rate.gram_logdet_backward(None, cache),
                         np.asarray(dref, np.float64)) < 1e-3
    else:
        with pytest.raises(ValueError, match="the scale a = 1 is too large"):
            rate.gram_logdet_forward(X, 1.0)


@pytest.mark.parametrize("cond, holds", [(1e2, True), (1e3, True), (1e5, False)])
def test_both_sides_of_the_float32_line(cond, holds):
    """float32 holds cond <= 8.4e3 itself; past it, refused on request or promoted by default."""
    rng = np.random.default_rng(34)
    s = [math.sqrt(cond), 1.0]
    X = _with_singular_values(rng, 6, 2, s).astype(np.float32)
    exact = _exact_half_logdet(s, 1.0)
    if holds:
        h, _ = rate.gram_logdet_forward(X, 1.0, accumulate="float32")
        assert h.dtype == np.float32 and float(h) == pytest.approx(exact, rel=1e-4)
    else:
        with pytest.raises(ValueError, match="float32 cannot hold"):
            rate.gram_logdet_forward(X, 1.0, accumulate="float32")
    h, _ = rate.gram_logdet_forward(X, 1.0)            # the default: promoted where needed
    assert h.dtype == np.float32 and float(h) == pytest.approx(exact, rel=1e-4)


def test_float32_accepted_through_the_factor_bound_is_within_budget():
    """Near-rank-deficient features of every scale: what float32 accepts (many only through
    tr(M^{-1}), past the row-sum bound) is within 1e-4 (value) and 3e-4 (gradient)."""
    rng = np.random.default_rng(35)
    accepted = through_factor = 0
    for _ in range(120):
        N, d = (int(v) for v in rng.integers(2, 30, size=2))
        r = int(rng.integers(1, min(N, d) + 1))
        Z = draw(rng, N, r) @ draw(rng, r, d) + 10 ** rng.uniform(-3, 0) * draw(rng, N, d)
        Z = (Z * 10 ** rng.uniform(-1, 3)).astype(np.float32)
        eps = 10 ** rng.uniform(-3, 0.5)
        try:
            v = rate.coding_rate(Z, eps, accumulate="float32")
            g = rate.coding_rate_grad(Z, eps, accumulate="float32")
        except ValueError as err:
            assert "float32 cannot hold" in str(err)
            continue
        Z64 = Z.astype(np.float64)
        G = Z64 @ Z64.T if N <= d else Z64.T @ Z64
        a = d / N / eps ** 2
        through_factor += 1 + a * min(np.abs(G).sum(1).max(), np.trace(G)) > 8.4e3
        v64, g64 = rate.coding_rate(Z64, eps), rate.coding_rate_grad(Z64, eps)
        assert abs(float(v) - float(v64)) <= 1e-4 * max(1.0, abs(float(v64)))
        assert np.linalg.norm(g - g64) <= 3e-4 * np.linalg.norm(g64)
        accepted += 1
    assert accepted > 20 and through_factor > 10
