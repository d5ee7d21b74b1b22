"""A4 part 1: the masked-autoencoding loss and the mask token."""
import numpy as np
import pytest

from course_helpers import assert_close, assert_gradient, describe, rng
from whitebox.functional.masked_mse import masked_mse_backward, masked_mse_forward
from whitebox.functional.masking import mask_tokens_backward, mask_tokens_forward

MASK = np.array([[1.0, 0, 1, 0, 1], [0, 1, 1, 0, 0]])


def direct_loss(pred, patches, mask, norm_pix):
    target = patches
    if norm_pix:
        mean = patches.mean(-1, keepdims=True)
        var = patches.var(-1, ddof=1, keepdims=True)
        target = (patches - mean) / np.sqrt(var + 1e-6)
    per_patch = ((pred - target) ** 2).mean(-1)
    return (per_patch * mask).sum() / mask.sum()


@pytest.mark.parametrize("norm_pix", [False, True])
def test_masked_mse_forward(norm_pix):
    r = rng(1)
    pred, patches = r.standard_normal((2, 5, 6)), r.standard_normal((2, 5, 6)) * 2 + 1
    loss, _ = masked_mse_forward(pred, patches, MASK, norm_pix)
    assert_close("masked_mse_forward", loss, direct_loss(pred, patches, MASK, norm_pix),
                 describe(pred=pred, mask=MASK, norm_pix=norm_pix), 1e-10)


@pytest.mark.parametrize("norm_pix", [False, True])
@pytest.mark.parametrize("wrt", ["pred", "patches"])
def test_masked_mse_backward(norm_pix, wrt):
    r = rng(2)
    pred, patches = r.standard_normal((2, 5, 6)), r.standard_normal((2, 5, 6)) * 2 + 1
    _, cache = masked_mse_forward(pred, patches, MASK, norm_pix)
    grads = dict(zip(("pred", "patches"), masked_mse_backward(1.3, cache)))
    assert_gradient("masked_mse_backward", wrt, grads[wrt],
                    lambda: masked_mse_forward(pred, patches, MASK, norm_pix)[0],
                    {"pred": pred, "patches": patches}[wrt], np.asarray(1.3),
                    describe(pred=pred, mask=MASK, norm_pix=norm_pix, dloss=1.3),
                    hint="only removed patches (mask 1) count, averaged over their number"
                    if wrt == "pred" else "with norm_pix the target depends on the patches "
                    "through their mean and unbiased variance")


@pytest.mark.parametrize("wrt", ["x", "token"])
def test_mask_tokens(wrt):
    r = rng(3)
    x, token = r.standard_normal((2, 5, 4)), r.standard_normal((1, 1, 4))
    y, cache = mask_tokens_forward(x, MASK, token)
    m = MASK[:, :, None]
    assert_close("mask_tokens_forward", y, (1 - m) * x + m * token, describe(x=x, mask=MASK),
                 1e-12)
    dout = r.standard_normal(y.shape)
    grads = dict(zip(("x", "token"), mask_tokens_backward(dout, cache)))
    assert_gradient("mask_tokens_backward", wrt, grads[wrt],
                    lambda: mask_tokens_forward(x, MASK, token)[0],
                    {"x": x, "token": token}[wrt], dout, describe(x=x, mask=MASK))
