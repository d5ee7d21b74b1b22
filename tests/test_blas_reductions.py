"""The reductions in functional/_blas.py against the plain NumPy reduction."""
import numpy as np
import pytest

from whitebox.functional._blas import matmul_rows, mean_last, sum_last, sum_leading

SHAPES = [(7,), (3, 5), (2, 3, 4), (2, 65, 96)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_reductions_match_plain_numpy(xp, rng, shape, dtype):
    x_np = rng.standard_normal(shape).astype(dtype)
    x = xp.asarray(x_np)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == "float32" else dict(rtol=1e-12, atol=1e-12)
    for got, want in ((sum_last(x), x_np.sum(-1, keepdims=True)),
                      (mean_last(x), x_np.mean(-1, keepdims=True)),
                      (sum_leading(x), x_np.reshape(-1, shape[-1]).sum(0))):
        assert got.dtype == x.dtype
        assert got.shape == want.shape
        np.testing.assert_allclose(np.asarray(got.get() if hasattr(got, "get") else got),
                                   want, **tol)


def test_reductions_of_non_contiguous_views(rng):
    x = rng.standard_normal((4, 6, 8))
    view = x.transpose(1, 0, 2)[:, ::2]                  # (6, 2, 8), strided
    np.testing.assert_allclose(sum_last(view), view.sum(-1, keepdims=True), rtol=1e-12)
    np.testing.assert_allclose(mean_last(view), view.mean(-1, keepdims=True), rtol=1e-12)
    np.testing.assert_allclose(sum_leading(view), view.sum((0, 1)), rtol=1e-12)


def test_mean_last_does_not_alias_its_input(rng):
    x = rng.standard_normal((3, 4))
    before = x.copy()
    m = mean_last(x)
    m += 1.0
    np.testing.assert_array_equal(x, before)


def test_matmul_rows_is_the_stacked_product(rng):
    x, M = rng.standard_normal((2, 3, 4)), rng.standard_normal((4, 5))
    np.testing.assert_allclose(matmul_rows(x, M), x @ M, rtol=1e-12)
