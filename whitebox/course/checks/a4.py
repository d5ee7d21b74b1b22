"""A4: the masked loss and the mask token, one decoder layer, the autoencoder's backward."""
import numpy as np

from ...functional.masked_mse import masked_mse_forward
from ...functional.masking import mask_tokens_forward
from ...models.crate_mae import CRATEMAE
from ...nn.decoder_layers import DecoderLayer
from ..judge import check
from .helpers import (assert_close, assert_gradient, backward, compare_backward, copy_state,
                      describe, fail, reference, rng, unpack)

MSE = "whitebox.functional.masked_mse:masked_mse_forward"
MSE_B = "whitebox.functional.masked_mse:masked_mse_backward"
MASKING = "whitebox.functional.masking:mask_tokens_forward"
MASKING_B = "whitebox.functional.masking:mask_tokens_backward"
DECODER = "whitebox.nn.decoder_layers:DecoderLayer"
MAE = "whitebox.models.crate_mae:CRATEMAE"
MASK = np.array([[1.0, 0, 1, 0, 1], [0, 1, 1, 0, 0]])
NORM_PIX = {"plain": dict(norm_pix=False), "norm_pix": dict(norm_pix=True)}


# ----------------------------------------------- part 1: the masked loss, the mask token (10)
def pair(seed):
    r = rng(seed)
    return r.standard_normal((2, 5, 6)), r.standard_normal((2, 5, 6)) * 2 + 1


@check("A4", 1, weight=1, cases=NORM_PIX)
def masked_mse_forward_value(run, norm_pix):
    pred, patches = pair(1)
    loss = unpack("masked_mse_forward", run.forward(MSE, pred, patches, MASK, norm_pix), 2)[0]
    assert_close("masked_mse_forward", loss, masked_mse_forward(pred, patches, MASK, norm_pix)[0],
                 describe(pred=pred, mask=MASK, norm_pix=norm_pix), 1e-10,
                 hint="the mean over each patch's pixels, averaged over the removed patches")


def masked_mse_backward_gradient(run, norm_pix, wrt):
    pred, patches = pair(2)
    _, cache = masked_mse_forward(pred, patches, MASK, norm_pix)
    got = unpack("masked_mse_backward", backward(run, MSE_B, 1.3, cache, MSE,
                                                 (pred, patches, MASK, norm_pix)), 2)
    grads = dict(zip(("pred", "patches"), got))
    assert_gradient("masked_mse_backward", wrt, grads[wrt],
                    lambda: masked_mse_forward(pred, patches, MASK, norm_pix)[0],
                    {"pred": pred, "patches": patches}[wrt], np.asarray(1.3),
                    describe(pred=pred, mask=MASK, norm_pix=norm_pix, dloss=1.3),
                    hint="only removed patches (mask 1) count, averaged over their number"
                    if wrt == "pred" else "with norm_pix the target depends on the patches "
                    "through their mean and unbiased variance")


check("A4", 1, weight=3, needs=("masked_mse_forward_value",),
      cases={f"{k}-pred": dict(v, wrt="pred") for k, v in NORM_PIX.items()}
      )(masked_mse_backward_gradient)
check("A4", 1, weight=2, needs=("masked_mse_forward_value",),
      cases={f"{k}-patches": dict(v, wrt="patches") for k, v in NORM_PIX.items()}
      )(masked_mse_backward_gradient)


def tokens():
    r = rng(3)
    return r.standard_normal((2, 5, 4)), r.standard_normal((1, 1, 4))


@check("A4", 1, weight=1)
def mask_tokens_forward_value(run):
    x, token = tokens()
    y = unpack("mask_tokens_forward", run.forward(MASKING, x, MASK, token), 2)[0]
    assert_close("mask_tokens_forward", y, mask_tokens_forward(x, MASK, token)[0],
                 describe(x=x, mask=MASK), 1e-12, hint="(1 - m) x + m token")


@check("A4", 1, weight=2, needs=("mask_tokens_forward_value",),
       cases={"x": dict(wrt="x"), "token": dict(wrt="token")})
def mask_tokens_backward_gradient(run, wrt):
    x, token = tokens()
    _, cache = mask_tokens_forward(x, MASK, token)
    dout = rng(4).standard_normal(x.shape)
    got = unpack("mask_tokens_backward",
                 backward(run, MASKING_B, dout, cache, MASKING, (x, MASK, token)), 2)
    grads = dict(zip(("x", "token"), got))
    assert_gradient("mask_tokens_backward", wrt, grads[wrt],
                    lambda: mask_tokens_forward(x, MASK, token)[0],
                    {"x": x, "token": token}[wrt], dout, describe(x=x, mask=MASK),
                    hint="the token's gradient sums dout over every masked place"
                    if wrt == "token" else "")


# ------------------------------------------------------- part 2: one decoder layer (10)
SOFTMAX = {"softmax": dict(softmax=True), "no-softmax": dict(softmax=False)}


def decoder_pair(run, seed, softmax=True):
    ref = DecoderLayer(6, heads=2, dim_head=3, softmax=softmax, dtype="float64", seed=seed)
    sub = run.new(DECODER, 6, heads=2, dim_head=3, softmax=softmax, dtype="float64", seed=seed)
    sub.load_state_dict(copy_state(ref))
    return ref, sub


@check("A4", 2, weight=1, cases=SOFTMAX)
def decoder_layer_forward(run, softmax):
    ref, sub = decoder_pair(run, 1, softmax)
    x = rng(1).standard_normal((2, 4, 6))
    with reference():
        expected = ref.forward(x)
    assert_close("DecoderLayer.forward", sub.forward(x), expected,
                 describe(x=x, softmax=softmax), 1e-10,
                 hint="y = LN0(x) W^T; out = y - MSSA(LN1(y))")


@check("A4", 2, weight=1)
def decoder_layer_forward_capture(run):
    ref, sub = decoder_pair(run, 2)
    x = rng(2).standard_normal((2, 4, 6))
    keys = ("y", "mssa_in", "attention", "z")
    capture = run.keep({k: [] for k in keys})
    out = sub.forward(x, capture)
    got = run.get(capture)
    if not isinstance(got, dict) or not all(isinstance(got.get(k), list) and len(got[k]) == 1
                                            for k in keys):
        fail("DecoderLayer.forward(x, capture) must append one entry to each capture list "
             f"{list(keys)}")
    with reference():
        expected = ref.forward(x)
    assert_close('DecoderLayer.forward: capture["z"]', got["z"][0], expected, describe(x=x),
                 1e-10)
    assert_close("DecoderLayer.forward (with capture)", out, expected, describe(x=x), 1e-10)


@check("A4", 2, weight=4, needs=("decoder_layer_forward",), cases=SOFTMAX)
def decoder_layer_backward(run, softmax):
    ref, sub = decoder_pair(run, 3, softmax)
    x = rng(3).standard_normal((2, 4, 6))
    dout = rng(4).standard_normal((2, 4, 6))
    compare_backward("DecoderLayer.backward", ref, sub, x, dout, describe(x=x, softmax=softmax),
                     hint="out = y - MSSA(LN1(y)): the MSSA branch receives -dout, and "
                          "dy = dout + (its backward); then the step's backward")


# ------------------------------------------------- part 3: the autoencoder's backward (10)
MAE_MASK = np.array([[1.0, 0, 1, 0], [0, 1, 1, 0]])
TINY = dict(image_size=8, patch_size=4, dim=8, depth=1, heads=2, decoder_depth=1, channels=1)
DEPENDS = (" (the model runs your parts 1 and 2 as well: if their checks failed, fix them "
           "first)")


@check("A4", 3, weight=4, cases=NORM_PIX)
def crate_mae_backward(run, norm_pix):
    ref = CRATEMAE(**TINY, norm_pix_loss=norm_pix, dtype="float64", seed=0)
    sub = run.new(MAE, **TINY, norm_pix_loss=norm_pix, dtype="float64", seed=0)
    sub.load_state_dict(copy_state(ref))
    images = rng(1).standard_normal((2, 1, 8, 8))
    compare_backward("CRATEMAE.backward", ref, sub, images, 1.0,
                     describe(images=images, norm_pix=norm_pix), 1e-6, mask=MAE_MASK,
                     hint="the reverse walk: loss, decoder head, decoder layers, mask tokens, "
                          "encoder, patch embedding" + DEPENDS)


@check("A4", 3, weight=2, needs=("crate_mae_backward",))
def crate_mae_trains(run):
    model = run.new(MAE, **TINY, dtype="float32", seed=0)
    opt = run.new("whitebox.optim:Adam", model, lr=1e-2)
    r = rng(3)
    images = np.repeat(r.standard_normal((4, 1, 8, 8)).astype(np.float32), 2, axis=0)
    mask = np.tile(MAE_MASK, (4, 1)).astype(np.float32)
    losses = []
    for _ in range(30):
        model.zero_grad()
        out = model.forward(images, mask=mask)
        loss = out[0] if isinstance(out, (tuple, list)) and out else out
        model.backward(1.0)
        opt.step()
        losses.append(float(np.asarray(loss, dtype=np.float64)))
    if not np.isfinite(losses).all() or not losses[-1] < 0.7 * losses[0]:
        fail(f"30 Adam steps on 8 fixed images took the masked loss from {losses[0]:.3f} only "
             f"to {losses[-1]:.3f} (expected below 70% of it): the autoencoder's backward is "
             "wrong" + DEPENDS)
