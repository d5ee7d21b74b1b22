"""A1: the coding rate and its gradient, the compression rate and one step, MCR^2."""
import numpy as np

from ...rate import class_compression_rate, coding_rate, compression_rate, mcr2_loss
from ...rate.coding import coding_rate_forward
from ...rate.compression import compression_rate_forward, compression_step
from ...rate.gram import gram_logdet_forward
from ...rate.mcr2 import class_compression_forward
from ..judge import check
from .helpers import (as_array, assert_close, assert_gradient, backward, describe, fail, rng,
                      unpack)

GRAM = "whitebox.rate.gram:gram_logdet_forward"
GRAM_B = "whitebox.rate.gram:gram_logdet_backward"
RATE = "whitebox.rate.coding:coding_rate"
RATE_F = "whitebox.rate.coding:coding_rate_forward"
RATE_B = "whitebox.rate.coding:coding_rate_backward"
RC = "whitebox.rate.compression:compression_rate"
RC_F = "whitebox.rate.compression:compression_rate_forward"
RC_B = "whitebox.rate.compression:compression_rate_backward"
STEP = "whitebox.rate.compression:compression_step"
CC = "whitebox.rate.mcr2:class_compression_rate"
CC_F = "whitebox.rate.mcr2:class_compression_forward"
CC_B = "whitebox.rate.mcr2:class_compression_backward"
MCR2 = "whitebox.rate.mcr2:mcr2_loss"


# ------------------------------------------------------- part 1: coding rate (10)
@check("A1", 1, weight=1, cases={f"{n}x{m}-{s}": dict(n=n, m=m, side=s) for n, m, s in
                                 [(4, 7, "rows"), (4, 7, "cols"), (9, 3, "auto"),
                                  (9, 3, "rows")]})
def gram_logdet_forward_values(run, n, m, side):
    X = rng(1).standard_normal((2, n, m))
    h = unpack("gram_logdet_forward", run.forward(GRAM, X, 0.7, side), 2)[0]
    assert_close("gram_logdet_forward", h, gram_logdet_forward(X, 0.7, side)[0],
                 describe(X=X, a=0.7, side=side), 1e-9)


@check("A1", 1, weight=2, needs=("gram_logdet_forward_values",),
       cases={f"{n}x{m}-{s}": dict(n=n, m=m, side=s)
              for n, m, s in [(4, 7, "rows"), (9, 3, "cols"), (5, 5, "auto")]})
def gram_logdet_backward_gradient(run, n, m, side):
    X = rng(2).standard_normal((2, n, m))
    dout = rng(3).standard_normal(2)
    _, cache = gram_logdet_forward(X, 0.7, side)
    dX = backward(run, GRAM_B, dout, cache, GRAM, (X, 0.7, side))
    assert_gradient("gram_logdet_backward", "X", dX,
                    lambda: gram_logdet_forward(X, 0.7, side)[0], X, dout,
                    describe(X=X, a=0.7, side=side),
                    hint="d/dX 1/2 logdet(I + a X^T X) = a X (I + a X^T X)^-1")


@check("A1", 1, weight=1, cases={"6x10": dict(N=6, d=10), "20x5": dict(N=20, d=5)})
def coding_rate_value(run, N, d):
    Z = rng(4).standard_normal((N, d))
    assert_close("coding_rate", run.call(RATE, Z, 0.5), coding_rate(Z, 0.5),
                 describe(Z=Z, eps=0.5), 1e-9)


@check("A1", 1, weight=1)
def coding_rate_batched(run):
    Z = rng(5).standard_normal((3, 8, 4))
    assert_close("coding_rate (batched)", run.call(RATE, Z, 0.3), coding_rate(Z, 0.3),
                 describe(Z=Z, eps=0.3), 1e-9)


@check("A1", 1, weight=3, needs=("coding_rate_value",),
       cases={"5x8": dict(N=5, d=8), "12x3": dict(N=12, d=3)})
def coding_rate_gradient(run, N, d):
    Z = rng(6).standard_normal((2, N, d))
    dout = rng(7).standard_normal(2)
    _, cache = coding_rate_forward(Z, 0.6)
    dZ = backward(run, RATE_B, dout, cache, RATE_F, (Z, 0.6))
    assert_gradient("coding_rate_backward", "Z", dZ, lambda: coding_rate_forward(Z, 0.6)[0],
                    Z, dout, describe(Z=Z, eps=0.6, dout=dout),
                    hint="dR/dZ = a Z (I + a Z^T Z)^-1 with a = d / (N eps^2)")


@check("A1", 1, weight=1)
def coding_rate_gradient_float32_dtype(run):
    Z = rng(8).standard_normal((6, 4)).astype(np.float32)
    _, cache = coding_rate_forward(Z, 0.5, accumulate="float64")
    dZ = backward(run, RATE_B, None, cache, RATE_F, (Z, 0.5), dict(accumulate="float64"))
    if not isinstance(dZ, np.ndarray) or dZ.dtype != np.float32:
        fail(f"coding_rate_backward must return Z's dtype float32, got "
             f"{getattr(dZ, 'dtype', type(dZ).__name__)}")


# ---------------------------------------------- part 2: compression rate, step (10)
def inputs(seed, B=2, N=6, d=5, K=3, p=2):
    r = rng(seed)
    return r.standard_normal((B, N, d)), r.standard_normal((K, d, p))


@check("A1", 2, weight=1, cases={"N6-p2": dict(N=6, p=2), "N3-p4": dict(N=3, p=4)})
def compression_rate_value(run, N, p):
    Z, U = inputs(1, N=N, d=5, p=p)
    assert_close("compression_rate", run.call(RC, Z, U, 0.5), compression_rate(Z, U, 0.5),
                 describe(Z=Z, U=U, eps=0.5), 1e-9)


@check("A1", 2, weight=3, needs=("compression_rate_value",),
       cases={"Z": dict(wrt="Z", seed=2), "U": dict(wrt="U", seed=4)})
def compression_rate_gradient(run, wrt, seed):
    Z, U = inputs(seed)
    dout = rng(seed + 1).standard_normal(2)
    _, cache = compression_rate_forward(Z, U, 0.5)
    got = unpack("compression_rate_backward",
                 backward(run, RC_B, dout, cache, RC_F, (Z, U, 0.5)), 2)
    assert_gradient("compression_rate_backward", wrt, got[0 if wrt == "Z" else 1],
                    lambda: compression_rate_forward(Z, U, 0.5)[0], {"Z": Z, "U": U}[wrt],
                    dout, describe(Z=Z, U=U, eps=0.5),
                    hint="dRc/dZ = sum_k G_k U_k^T with G_k the gradient through W_k = Z U_k"
                    if wrt == "Z" else "dRc/dU_k = Z^T G_k, summed over the batch")


@check("A1", 2, weight=2)
def compression_step_value(run):
    Z, U = inputs(6, B=1)
    Z = Z[0]
    Z1 = run.call(STEP, Z, U, 0.5, 0.05)
    assert_close("compression_step", Z1, compression_step(Z, U, 0.5, 0.05),
                 describe(Z=Z, U=U, eps=0.5, kappa=0.05), 1e-9,
                 hint="one step Z - kappa dRc/dZ")


# --------------------------------------------------------------- part 3: MCR^2 (10)
LABELS = np.array([0, 2, 2, 0, 1, 2, 0, 2, 1, 2])
CLASSES = {"three classes": dict(labels=LABELS),
           "class 1 absent": dict(labels=np.where(LABELS == 1, 2, LABELS))}


@check("A1", 3, weight=1, cases=CLASSES)
def class_compression_value(run, labels):
    Z = rng(1).standard_normal((10, 4))
    assert_close("class_compression_rate", run.call(CC, Z, labels, 0.5),
                 class_compression_rate(Z, labels, 0.5),
                 describe(Z=Z, labels=labels, eps=0.5), 1e-9)


@check("A1", 3, weight=4, needs=("class_compression_value",))
def class_compression_gradient(run):
    Z = rng(2).standard_normal((10, 4))
    dout = np.asarray(1.7)
    _, cache = class_compression_forward(Z, LABELS, 0.5)
    dZ = backward(run, CC_B, dout, cache, CC_F, (Z, LABELS, 0.5))
    assert_gradient("class_compression_backward", "Z", dZ,
                    lambda: class_compression_forward(Z, LABELS, 0.5)[0], Z, dout,
                    describe(Z=Z, labels=LABELS, eps=0.5, dout=1.7),
                    hint="each class's term lands on its own rows, weighted N_j / N")


@check("A1", 3, weight=1)
def mcr2_loss_value(run):
    Z = rng(3).standard_normal((10, 5))
    Z /= np.linalg.norm(Z, axis=1, keepdims=True)
    loss = unpack("mcr2_loss", run.call(MCR2, Z, LABELS, 0.5), 2)[0]
    assert_close("mcr2_loss (value)", loss, mcr2_loss(Z, LABELS, 0.5)[0],
                 describe(Z=Z, eps=0.5), 1e-9, hint="the loss is Rc - R")


@check("A1", 3, weight=4, needs=("mcr2_loss_value",))
def mcr2_loss_gradient(run):
    Z = rng(3).standard_normal((10, 5))
    Z /= np.linalg.norm(Z, axis=1, keepdims=True)
    dZ = unpack("mcr2_loss", run.call(MCR2, Z, LABELS, 0.5), 2)[1]
    as_array("mcr2_loss (gradient)", dZ)
    assert_gradient("mcr2_loss", "Z", dZ, lambda: mcr2_loss(Z, LABELS, 0.5)[0], Z,
                    np.ones(()), describe(Z=Z, labels=LABELS, eps=0.5),
                    hint="the loss is -R + Rc, so its gradient is dRc/dZ - dR/dZ")
