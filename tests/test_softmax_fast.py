"""The fast softmax of MSSA's scores (a Gram matrix s w w^T) against the reference softmax,
on both sides of the bound that lets it skip the shift by the row max."""
import numpy as np
import pytest

import whitebox.functional as F
from whitebox.functional import fused
from whitebox.functional.softmax import _gram_needs_no_shift


def gram(rng, shape, norm, dtype):
    """s w w^T for w (B, K, N, p) of rows of about ``norm``, s = p^{-1/2}: (B, K, N, N)."""
    w = rng.standard_normal(shape) * (norm / np.sqrt(shape[-1]))
    return (shape[-1] ** -0.5 * (w @ w.swapaxes(-1, -2))).astype(dtype)


@pytest.fixture(params=[False, pytest.param(True, marks=pytest.mark.skipif(
    not fused.available(), reason="Numba is not installed"))], ids=["numpy", "loops"])
def loops(request):
    with fused.setting(request.param):
        yield request.param


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("norm", [3.0, 30.0, 300.0])
def test_gram_softmax_equals_the_reference_on_both_sides_of_the_bound(rng, loops, dtype, norm):
    S = gram(rng, (2, 3, 9, 4), norm, dtype)
    top = float(S.diagonal(axis1=-2, axis2=-1).max())
    # norm 3: top about 5, no shift; 30: about 450, beyond float32's and float64's exp
    assert _gram_needs_no_shift(S) == (top < np.log(np.finfo(dtype).max) - np.log(9) - 1)
    assert _gram_needs_no_shift(S) == (norm == 3.0)
    expected = F.softmax_forward(S.astype(np.float64))[0]
    y, _ = F.softmax_fast_forward(S.copy(), symmetric=True, gram=True)
    assert np.all(np.isfinite(y))
    tol = 1e-12 if dtype == "float64" else 2e-6
    np.testing.assert_allclose(y, expected, rtol=tol, atol=tol)


def test_one_large_block_makes_the_whole_array_take_the_shift(rng):
    S = gram(rng, (2, 2, 6, 4), 1.0, "float32")
    S[1, 0] = gram(rng, (6, 4), 40.0, "float32")                 # diagonal about 800
    assert not _gram_needs_no_shift(S)
    y, _ = F.softmax_fast_forward(S.copy(), symmetric=True, gram=True)
    np.testing.assert_allclose(y, F.softmax_forward(S.astype(np.float64))[0], rtol=2e-6,
                               atol=2e-6)


def test_a_nan_on_the_diagonal_takes_the_shift_and_reaches_the_output(rng, loops):
    S = gram(rng, (1, 2, 5, 3), 2.0, "float32")
    S[0, 1, 2, 2] = np.nan
    assert not _gram_needs_no_shift(S)
    y, _ = F.softmax_fast_forward(S.copy(), symmetric=True, gram=True)
    assert np.isnan(y[0, 1, 2]).all() and np.isfinite(y[0, 0]).all()


def test_device_arrays_keep_the_shift(rng):
    """Reading the bound back would sync a device: arrays other than NumPy's keep the shift."""
    class Device(np.ndarray):
        pass
    S = gram(rng, (1, 2, 5, 3), 1.0, "float32")
    assert _gram_needs_no_shift(S) and not _gram_needs_no_shift(S.view(Device))


def test_an_empty_batch_needs_no_bound():
    S = np.zeros((0, 2, 4, 4), np.float32)
    assert not _gram_needs_no_shift(S)
    y, _ = F.softmax_fast_forward(S, symmetric=True, gram=True)
    assert y.shape == (0, 2, 4, 4)


@pytest.mark.parametrize("scale", [None, 0.5])
@pytest.mark.parametrize("size", [0.5, 20.0])
def test_mssa_fast_path_equals_the_reference_with_small_and_large_scores(rng, loops, scale,
                                                                          size):
    """size 20 gives scores far beyond exp's range: the shift is taken, nothing overflows."""
    B, N, d, K = 2, 7, 12, 3
    x = size * rng.standard_normal((B, N, d))
    W_qkv, W_out = 0.4 * rng.standard_normal((d, d)), 0.4 * rng.standard_normal((d, d))
    b_out, dout = rng.standard_normal(d), rng.standard_normal((B, N, d))
    y, cache = F.mssa_fast_forward(x, W_qkv, W_out, b_out, K, scale)
    y_ref, cache_ref = F.mssa_forward(x, W_qkv, W_out, b_out, K, scale)
    np.testing.assert_allclose(cache["attn"], cache_ref["attn"], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(y, y_ref, rtol=1e-10, atol=1e-10)
    for got, ref in zip(F.mssa_fast_backward(dout, cache), F.mssa_backward(dout, cache_ref)):
        np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-9)
