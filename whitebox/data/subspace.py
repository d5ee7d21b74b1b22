"""A union of K low-dimensional Gaussians: the data model the CRATE theory is built on.

Class k draws x = U_k c + noise, with U_k (d, p) an orthonormal basis of a
p-dimensional subspace and c ~ N(0, I_p / p), so the signal has unit expected
squared norm; the noise is N(0, noise^2 I_d / d), unit expected squared norm
scaled by noise^2. How the K subspaces sit relative to each other is the
``coherence`` knob:

- ``coherence=0.0``: mutually orthogonal subspaces (U_j^T U_k = 0), the
  easy case; needs K p <= d.
- ``coherence=c`` in (0, 1]: U_k = sqrt(1 - c) V_k + sqrt(c) V_0 with V_0,
  V_1, ..., V_K mutually orthogonal orthonormal blocks. Every U_k stays
  orthonormal and every pair has U_j^T U_k = c I_p: all principal angles
  between two subspaces have cosine c. c = 1 makes all K subspaces the same.
  Needs (K + 1) p <= d.
- ``coherence=None``: K independent uniformly random subspaces (general
  position, any K with p <= d); their overlaps are whatever chance gives.
"""
import numbers

import numpy as np


def _orthonormal_blocks(rng, d, count, p):
    """count mutually orthogonal (d, p) orthonormal blocks from one QR of a Gaussian."""
    Q, R = np.linalg.qr(rng.standard_normal((d, count * p)))   # (d, count p)
    Q = Q * np.sign(np.diag(R))      # fix QR's sign ambiguity: Haar-distributed columns
    return Q.reshape(d, count, p).transpose(1, 0, 2)            # (count, d, p)


def subspace_bases(d, K, p, coherence=0.0, rng=0):
    """Orthonormal bases U (K, d, p) of K subspaces of dimension p in R^d (see module doc)."""
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    for name, v in (("d", d), ("K", K), ("p", p)):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v <= 0:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    if p > d:
        raise ValueError(f"subspace dimension p = {p} must not exceed the ambient d = {d}")
    if coherence is None:
        return np.stack([_orthonormal_blocks(rng, d, 1, p)[0] for _ in range(K)])
    c = float(coherence)
    if not 0.0 <= c <= 1.0:
        raise ValueError(f"coherence must be None or a number in [0, 1], got {coherence!r}")
    if c == 0.0:
        if K * p > d:
            raise ValueError(f"K = {K} mutually orthogonal subspaces of dimension p = {p} need "
                             f"K p <= d, but K p = {K * p} > d = {d}; use coherence=None for "
                             "random subspaces")
        return _orthonormal_blocks(rng, d, K, p)
    if (K + 1) * p > d:
        raise ValueError(f"coherence > 0 builds K + 1 orthogonal blocks and needs (K + 1) p <= d, "
                         f"but (K + 1) p = {(K + 1) * p} > d = {d}")
    V = _orthonormal_blocks(rng, d, K + 1, p)                    # (K + 1, d, p)
    return np.sqrt(1.0 - c) * V[1:] + np.sqrt(c) * V[:1]         # (K, d, p)


def subspace_mixture(n, d, K, p, noise=0.0, rng=0, coherence=0.0, normalize=False,
                     dtype="float64"):
    """Sample n points from a union of K p-dimensional Gaussians in R^d.

    Inputs: n samples; d ambient dimension; K subspaces; p subspace dimension;
    noise the noise-to-signal ratio of expected norms (0: points lie exactly on
    their subspace); rng a np.random.Generator or an int seed; coherence 0.0
    (orthogonal), c in (0, 1] (every pair of subspaces at principal-angle
    cosine c) or None (independent random subspaces); normalize True to scale
    each point to unit length (the sphere MCR^2 features live on); dtype of
    the returned features and bases.
    Returns (NumPy arrays on the CPU; move them with whitebox.to_device):
        features (n, d), labels (n,) int64 in [0, K) (balanced: n // K or
        n // K + 1 per class, shuffled), bases (K, d, p) the true U_k.
    """
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n <= 0:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if not (isinstance(noise, numbers.Real) and np.isfinite(noise) and noise >= 0):
        raise ValueError(f"noise must be a non-negative finite number, got {noise!r}")
    if np.dtype(dtype).name not in ("float32", "float64"):
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    U = subspace_bases(d, K, p, coherence, rng)                  # (K, d, p)
    labels = rng.permutation(np.arange(n) % K).astype(np.int64)  # (n,)
    coeffs = rng.standard_normal((n, p)) / np.sqrt(p)            # (n, p)
    X = np.empty((n, d))
    for k in range(K):                                           # row i = U_{y_i} c_i
        rows = labels == k
        X[rows] = coeffs[rows] @ U[k].T                          # (n_k, d)
    X += noise / np.sqrt(d) * rng.standard_normal((n, d))
    if normalize:
        X /= np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
    return X.astype(dtype), labels, U.astype(dtype)
