"""Fused loops for the elementwise work of a step, compiled by Numba where it is installed.

NumPy makes one pass over memory per call. LayerNorm's forward and backward
take about nine such passes over the (tokens, d) data even when arranged
with care (layernorm.py's NumPy path), and softmax five over the N x N
scores; on CPU each pass costs about as much as it reads and writes. A
compiled loop does a row's whole arithmetic while the row sits in the
fastest cache: each input is read once and each output written once.

The loops here are the same equations as the readable references, written
row by row. They run only where all of these hold, and the ops fall back to
their NumPy arrangement otherwise (`usable` decides):

- Numba is installed: ``pip install "whitebox-crate[fast]"``. This is the
  only module that imports it; nothing else needs it.
- The switch is on: ``WHITEBOX_FUSED=0`` in the environment, or
  ``set_enabled(False)``, turns it off; ``with setting(False):`` only
  inside a block.
- The arrays are NumPy (CuPy runs the NumPy arrangement on the device),
  C-contiguous, and all float32 or all float64.

Each loop is compiled on first use (a second or two per dtype) and cached on
disk next to this file. The loops release the GIL, so the shards of
whitebox.training.threaded run them at the same time. Floating-point
reassociation is allowed (so reductions vectorise; results agree with the
references to round-off); NaN and infinity keep their IEEE meaning, so a
NaN in the data still reaches the loss.

Exponentials stay with NumPy: its exp is vectorised, a compiled loop's calls
the scalar libm exp and is several times slower. Softmax is therefore
fused around it (whitebox.functional.softmax.softmax_fast_forward): one loop
subtracts each row's max, NumPy exponentiates in place, a second loop
divides each row by its sum (three passes instead of five). MSSA's backward
(whitebox.functional.mssa.attention_heads_fast_backward) runs the softmax
backward and the symmetric sum dS + dS^T in one loop.
"""
import contextlib
import os

import numpy as np

try:
    import numba
except ImportError:                                  # the fused loops are optional
    numba = None

_enabled = numba is not None and os.environ.get("WHITEBOX_FUSED", "1") != "0"
# reassociation and contraction let LLVM vectorise the row reductions; not "nnan"/"ninf"
_FASTMATH = {"reassoc", "contract", "arcp", "nsz"}


def available():
    """True when Numba is installed (the fused loops can run at all)."""
    return numba is not None


def enabled():
    """True when the ops use the fused loops for arrays that allow them."""
    return _enabled


def set_enabled(flag):
    """Turn the fused loops on or off; returns the previous setting.

    Turning them on without Numba installed is an error that says how to install it.
    """
    global _enabled
    if flag and numba is None:
        raise RuntimeError("the fused loops need Numba: pip install \"whitebox-crate[fast]\"")
    previous, _enabled = _enabled, bool(flag)
    return previous


@contextlib.contextmanager
def setting(flag):
    """``with setting(False):`` runs the NumPy arrangement of every op inside the
    block (``setting(True)`` the fused loops); the previous setting comes back after."""
    previous = set_enabled(flag)
    try:
        yield
    finally:
        set_enabled(previous)


def usable(*arrays):
    """True when the fused loops may run on these arrays (see the module docstring)."""
    if not _enabled:
        return False
    dtype = arrays[0].dtype
    if dtype != np.float32 and dtype != np.float64:
        return False
    return all(type(a) is np.ndarray and a.dtype == dtype and a.flags.c_contiguous
               for a in arrays)


def _compiled(loop):
    """The loop compiled (nogil, cached, the fast-math flags above); itself without Numba."""
    if numba is None:
        return loop
    return numba.njit(nogil=True, cache=True, fastmath=_FASTMATH)(loop)


# ---------------------------------------------------------------- LayerNorm

@_compiled
def layernorm_rows_forward(x, gamma, beta, eps, y, xhat, rstd):
    """Per row i of x (n, d): mean, biased variance, rstd[i] = 1 / sqrt(var + eps),
    xhat[i] = (x[i] - mean) rstd[i], y[i] = xhat[i] gamma + beta. Writes y, xhat, rstd."""
    n, d = x.shape
    for i in range(n):
        total = x.dtype.type(0)
        for j in range(d):
            total += x[i, j]
        mean = x.dtype.type(total / d)
        squares = x.dtype.type(0)
        for j in range(d):
            c = x[i, j] - mean
            squares += c * c
        r = x.dtype.type(1 / np.sqrt(squares / d + eps))
        rstd[i] = r
        for j in range(d):
            h = (x[i, j] - mean) * r
            xhat[i, j] = h
            y[i, j] = h * gamma[j] + beta[j]


@_compiled
def layernorm_rows_backward(dout, xhat, rstd, gamma, dx, dgamma, dbeta):
    """Per row: g = dout gamma, dx = (g - mean(g) - xhat mean(g xhat)) rstd;
    dgamma = sum over rows of dout xhat, dbeta = sum of dout. Writes dx, dgamma, dbeta."""
    n, d = dout.shape
    for j in range(d):
        dgamma[j] = 0
        dbeta[j] = 0
    for i in range(n):
        g_sum = dout.dtype.type(0)
        gx_sum = dout.dtype.type(0)
        for j in range(d):
            g = dout[i, j] * gamma[j]
            g_sum += g
            gx_sum += g * xhat[i, j]
            dgamma[j] += dout[i, j] * xhat[i, j]
            dbeta[j] += dout[i, j]
        g_mean = dout.dtype.type(g_sum / d)
        gx_mean = dout.dtype.type(gx_sum / d)
        r = rstd[i]
        for j in range(d):
            dx[i, j] = (dout[i, j] * gamma[j] - g_mean - xhat[i, j] * gx_mean) * r


# ---------------------------------------------------------------- softmax

@_compiled
def subtract_row_max(S):
    """S[i] -= max S[i] for every row of S (rows, N), in place."""
    rows, n = S.shape
    for i in range(rows):
        m = S[i, 0]
        for j in range(1, n):
            m = max(m, S[i, j])
        for j in range(n):
            S[i, j] -= m


@_compiled
def divide_row_sum(E):
    """E[i] /= sum E[i] for every row of E (rows, N), in place."""
    rows, n = E.shape
    for i in range(rows):
        total = E.dtype.type(0)
        for j in range(n):
            total += E[i, j]
        inv = E.dtype.type(1 / total)
        for j in range(n):
            E[i, j] *= inv


@_compiled
def attention_scores_backward(dA, A, softmax):
    """For each N x N block of dA and A (blocks, N, N), in place in dA:
    dS = A * (dA - rowsum(dA * A)) (or dS = dA when softmax is False), then
    dS + dS^T, the symmetric term of S = s w w^T. Returns dA, now holding it."""
    blocks, n, _ = dA.shape
    for b in range(blocks):
        if softmax:
            for i in range(n):
                dot = dA.dtype.type(0)
                for j in range(n):
                    dot += dA[b, i, j] * A[b, i, j]
                for j in range(n):
                    dA[b, i, j] = A[b, i, j] * (dA[b, i, j] - dot)
        for i in range(n):
            dA[b, i, i] *= 2
            for j in range(i + 1, n):
                both = dA[b, i, j] + dA[b, j, i]
                dA[b, i, j] = both
                dA[b, j, i] = both
    return dA

