"""whitebox.data.subspace_mixture: a union of low-dimensional Gaussians with known bases."""
import numpy as np
import pytest

from whitebox.data import subspace_bases, subspace_mixture


def test_shapes_dtypes_and_balanced_labels():
    X, y, U = subspace_mixture(103, 20, 4, 3, noise=0.1, rng=0)
    assert X.shape == (103, 20) and y.shape == (103,) and U.shape == (4, 20, 3)
    assert X.dtype == np.float64 and U.dtype == np.float64 and y.dtype == np.int64
    counts = np.bincount(y, minlength=4)
    assert counts.sum() == 103 and counts.max() - counts.min() <= 1
    assert len(np.unique(y[:20])) > 1                   # shuffled, not sorted by class
    X32, _, U32 = subspace_mixture(10, 20, 4, 3, dtype="float32")
    assert X32.dtype == np.float32 and U32.dtype == np.float32


@pytest.mark.parametrize("c", [0.0, 0.3, 0.9, 1.0])
def test_bases_are_orthonormal_with_the_requested_coherence(c):
    K, p = 3, 4
    U = subspace_bases(24, K, p, coherence=c, rng=1)
    for j in range(K):
        np.testing.assert_allclose(U[j].T @ U[j], np.eye(p), atol=1e-12)
        for k in range(j + 1, K):
            # every principal angle between two subspaces has cosine c
            np.testing.assert_allclose(U[j].T @ U[k], c * np.eye(p), atol=1e-12)


def test_random_subspaces_in_general_position():
    U = subspace_bases(10, 5, 4, coherence=None, rng=2)           # K p = 20 > d = 10
    for k in range(5):
        np.testing.assert_allclose(U[k].T @ U[k], np.eye(4), atol=1e-12)
    cosines = np.linalg.svd(U[0].T @ U[1], compute_uv=False)
    assert np.all(cosines > 0) and np.all(cosines <= 1 + 1e-12)
    assert not np.allclose(U[0], U[1])


def project(U, X):
    """Row i of X projected onto the subspace spanned by U[i]: U_i U_i^T x_i."""
    coeffs = np.einsum("ndp,nd->np", U, X)             # (n, p)
    return np.einsum("ndp,np->nd", U, coeffs)          # (n, d)


def test_noiseless_points_lie_on_their_subspace():
    X, y, U = subspace_mixture(200, 16, 3, 2, noise=0.0, rng=3, coherence=0.5)
    assert np.abs(X - project(U[y], X)).max() < 1e-12
    assert np.abs(X - project(U[(y + 1) % 3], X)).max() > 0.1   # but not on the others


def test_signal_and_noise_scales():
    X0, y, U = subspace_mixture(20000, 30, 2, 5, noise=0.0, rng=4)
    assert np.mean((X0 ** 2).sum(axis=1)) == pytest.approx(1.0, rel=0.03)
    X1, _, _ = subspace_mixture(20000, 30, 2, 5, noise=0.5, rng=4)
    assert np.mean(((X1 - X0) ** 2).sum(axis=1)) == pytest.approx(0.25, rel=0.03)


def test_normalize_and_reproducibility():
    X, _, _ = subspace_mixture(50, 12, 3, 2, noise=0.2, rng=5, normalize=True)
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, rtol=1e-12)
    a = subspace_mixture(30, 12, 3, 2, noise=0.2, rng=6)
    b = subspace_mixture(30, 12, 3, 2, noise=0.2, rng=np.random.default_rng(6))
    c = subspace_mixture(30, 12, 3, 2, noise=0.2, rng=7)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    assert not np.allclose(a[0], c[0])


def test_errors():
    with pytest.raises(ValueError, match=r"K p <= d"):
        subspace_mixture(10, 8, 3, 3)
    with pytest.raises(ValueError, match=r"\(K \+ 1\) p <= d"):
        subspace_mixture(10, 9, 3, 3, coherence=0.5)
    with pytest.raises(ValueError, match="coherence must be None or a number in"):
        subspace_mixture(10, 20, 2, 2, coherence=1.5)
    with pytest.raises(ValueError, match="p = 9 must not exceed the ambient d = 8"):
        subspace_mixture(10, 8, 1, 9, coherence=None)
    with pytest.raises(ValueError, match="n must be a positive integer"):
        subspace_mixture(0, 8, 2, 2)
    with pytest.raises(ValueError, match="K must be a positive integer"):
        subspace_mixture(5, 8, 2.5, 2)
    with pytest.raises(ValueError, match="noise must be a non-negative"):
        subspace_mixture(5, 8, 2, 2, noise=-0.1)
    with pytest.raises(ValueError, match="dtype"):
        subspace_mixture(5, 8, 2, 2, dtype="int32")
