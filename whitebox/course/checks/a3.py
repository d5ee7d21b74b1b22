"""A3: one ISTA step, one CRATE layer, the network's reverse walk and per-layer compression.

The Module parts are graded without the submission's other parts: the ISTA
block of a CRATE layer and the layers of a LayerStack are stand-ins
(runner.make_standin_class, y = tanh(x W + b)) in both the submission and the
reference, so a wrong ISTA step costs part 1 only.
"""
import numpy as np

from ...functional import ista_forward
from ...models.crate import LayerStack
from ...nn.crate_layers import CAPTURE_KEYS, CRATELayer, PreNorm
from ...nn.module import Module, ModuleList
from ...rate import measure_compression
from ..judge import check
from ..runner import make_standin_class
from .helpers import (assert_close, assert_gradient, backward, compare_backward, copy_state,
                      describe, fail, module_gradients, reference, rng, unpack)

StandIn = make_standin_class(Module)
ISTA = "whitebox.functional.ista:ista_forward"
ISTA_B = "whitebox.functional.ista:ista_backward"
PRENORM = "whitebox.nn.crate_layers:PreNorm"
LAYER = "whitebox.nn.crate_layers:CRATELayer"
STACK = "whitebox.models.crate:LayerStack"
MODULES = "whitebox.nn.module:ModuleList"
MEASURE = "whitebox.rate.measure:measure_compression"


# ------------------------------------------------------------- part 1: ISTA step (10)
def inputs(seed, shape=(2, 5, 6)):
    r = rng(seed)
    return r.standard_normal(shape), r.standard_normal((shape[-1], shape[-1])) * 0.3


@check("A3", 1, weight=1, cases={"eta0.1": dict(eta=0.1, lam=0.1),
                                 "eta0.5": dict(eta=0.5, lam=0.3)})
def ista_forward_values(run, eta, lam):
    x, W = inputs(1)
    y = unpack("ista_forward", run.forward(ISTA, x, W, eta, lam), 2)[0]
    assert_close("ista_forward", y, ista_forward(x, W, eta, lam)[0],
                 describe(x=x, W=W, eta=eta, lam=lam), 1e-10,
                 hint="ReLU(x + eta (x W - x W^T W) - eta lam)")


@check("A3", 1, weight=1)
def ista_forward_2d(run):
    x, W = inputs(2, (7, 4))
    y = unpack("ista_forward", run.forward(ISTA, x, W), 2)[0]
    assert_close("ista_forward (2-D x)", y, ista_forward(x, W)[0], describe(x=x, W=W), 1e-10)


@check("A3", 1, weight=3, needs=("ista_forward_values",), cases={"x": dict(wrt="x")})
@check("A3", 1, weight=8, needs=("ista_forward_values",), cases={"W": dict(wrt="W")})
def ista_backward_gradient(run, wrt):
    # dW carries most of the part (8 of 14): W appears twice in x W^T W, once more in x W
    x, W = inputs(3)
    pre = x + 0.2 * (x @ W - x @ W.T @ W) - 0.2 * 0.1
    assert np.abs(pre).min() > 1e-4         # the check stays away from the ReLU's kink
    dout = rng(4).standard_normal(x.shape)
    _, cache = ista_forward(x, W, 0.2, 0.1)
    got = unpack("ista_backward", backward(run, ISTA_B, dout, cache, ISTA, (x, W, 0.2, 0.1)), 2)
    grads = dict(zip(("x", "W"), got))
    assert_gradient("ista_backward", wrt, grads[wrt],
                    lambda: ista_forward(x, W, 0.2, 0.1)[0], {"x": x, "W": W}[wrt], dout,
                    describe(x=x, W=W, eta=0.2, lam=0.1),
                    hint="W appears twice in x W^T W: dW collects both terms, and x W once more"
                    if wrt == "W" else "dx = g + eta (g W^T - g W^T W) with g = dout where "
                                       "the ReLU passes")


# --------------------------------------------------------- part 2: one CRATE layer (10)
def layer_pair(run, seed):
    """A reference CRATELayer and the submission's, the same parameters, ISTA a stand-in."""
    ref = CRATELayer(6, heads=2, dim_head=3, dtype="float64", seed=seed)
    ref.ista.fn = StandIn(6, seed + 10)
    sub = run.new(LAYER, 6, heads=2, dim_head=3, dtype="float64", seed=seed)
    sub.attr("ista").set("fn", run.standin(6, seed + 10))
    sub.load_state_dict(copy_state(ref))
    return ref, sub


@check("A3", 2, weight=2)
def crate_layer_forward(run):
    ref, sub = layer_pair(run, 0)
    x = rng(1).standard_normal((2, 4, 6))
    with reference():
        expected = ref.forward(x)
    assert_close("CRATELayer.forward", sub.forward(x), expected, describe(x=x), 1e-10,
                 hint="Z_half = Z + MSSA(LN1(Z)); out = ISTA(LN2(Z_half)), no residual "
                      "around ISTA")


@check("A3", 2, weight=1)
def crate_layer_forward_capture(run):
    ref, sub = layer_pair(run, 0)
    x = rng(2).standard_normal((2, 4, 6))
    capture = run.keep({k: [] for k in CAPTURE_KEYS})
    y = sub.forward(x, capture)
    got = run.get(capture)
    if not isinstance(got, dict) or not all(isinstance(got.get(k), list) and len(got[k]) == 1
                                            for k in CAPTURE_KEYS):
        lengths = {k: len(v) if isinstance(v, list) else None for k, v in dict(
            got if isinstance(got, dict) else {}).items()}
        fail("CRATELayer.forward(x, capture) must append one entry to each of the capture "
             f"lists {list(CAPTURE_KEYS)}; got lengths {lengths}")
    want = {k: [] for k in CAPTURE_KEYS}
    with reference():
        ref.forward(x, want)
    for key in CAPTURE_KEYS:
        assert_close(f'CRATELayer.forward: capture["{key}"]', got[key][0], want[key][0],
                     describe(x=x), 1e-10)
    assert_close("CRATELayer.forward (with capture)", y, want["z"][0], describe(x=x), 1e-10)


@check("A3", 2, weight=3)
def prenorm_backward(run):
    ref = PreNorm(5, StandIn(5, 3), dtype="float64")
    sub = run.new(PRENORM, 5, run.standin(5, 3), dtype="float64")
    sub.load_state_dict(copy_state(ref))
    x = rng(3).standard_normal((3, 5))
    dout = rng(4).standard_normal((3, 5))
    compare_backward("PreNorm.backward", ref, sub, x, dout, describe(x=x),
                     hint="y = fn(LayerNorm(x)): backward runs fn's backward, then the norm's")


@check("A3", 2, weight=4, needs=("crate_layer_forward",))
def crate_layer_backward(run):
    ref, sub = layer_pair(run, 4)
    x = rng(4).standard_normal((2, 4, 6))
    dout = rng(5).standard_normal((2, 4, 6))
    compare_backward("CRATELayer.backward", ref, sub, x, dout, describe(x=x),
                     hint="the residual goes around MSSA only: "
                          "dZ = dZ_half + MSSA branch backward(dZ_half)")


# ------------------------------------------------- part 3: the network's reverse walk (10)
def stack_pair(run, seeds=(1, 2, 3)):
    ref = LayerStack(dtype="float64")
    ref.layers = ModuleList([StandIn(6, s) for s in seeds], dtype="float64")
    sub = run.new(STACK, dtype="float64")
    sub.set("layers", run.new(MODULES, [run.standin(6, s) for s in seeds], dtype="float64"))
    return ref, sub


@check("A3", 3, weight=2)
def layer_stack_forward(run):
    ref, sub = stack_pair(run)
    x = rng(1).standard_normal((2, 4, 6))
    assert_close("LayerStack.forward (three stand-in layers)", sub.forward(x), ref.forward(x),
                 describe(x=x, depth=3), 1e-12, hint="run the layers in order")


@check("A3", 3, weight=4, needs=("layer_stack_forward",))
def layer_stack_backward(run):
    ref, sub = stack_pair(run)
    x = rng(2).standard_normal((2, 3, 6))
    dout = rng(3).standard_normal((2, 3, 6))
    ref.forward(x)
    ref.zero_grad()
    dx = ref.backward(dout)
    sub.forward(x)
    sub.zero_grad()
    module_gradients("LayerStack.backward (three stand-in layers)", sub.backward(dout),
                     sub.grads(), dx, ref.grads(), describe(x=x, depth=3),
                     hint="walk the layers in reverse, each backward feeding the next")


@check("A3", 3, weight=1, cases={"eps2=0.01": dict(eps2=0.01), "eps2=0.5": dict(eps2=0.5)})
def measure_compression_value(run, eps2):
    r = rng(3)
    Z, U = r.standard_normal((3, 5, 8)), r.standard_normal((2, 8, 3))
    assert_close("measure_compression", run.call(MEASURE, Z, U, eps2),
                 measure_compression(Z, U, eps2), describe(Z=Z, U=U, eps2=eps2), 1e-9)


@check("A3", 3, weight=2, needs=("layer_stack_backward",))
def small_crate_trains(run):
    # two classes told apart by where the bright square sits; the whole network
    # runs, so parts 1 and 2 of the submission take part too
    r = rng(4)
    labels = np.arange(32) % 2
    images = r.standard_normal((32, 1, 8, 8)).astype(np.float32) * 0.3
    images[labels == 0, :, :4, :4] += 1.5
    images[labels == 1, :, 4:, 4:] += 1.5
    model = run.new("whitebox.models.crate:CRATE", image_size=8, patch_size=4, num_classes=2,
                    dim=16, depth=2, heads=2, dim_head=8, channels=1, seed=0)
    opt = run.new("whitebox.optim:Adam", model, lr=1e-2)
    losses = []
    for _ in range(30):
        model.zero_grad()
        loss, dlogits = unpack("cross_entropy", run.call("whitebox.losses:cross_entropy",
                                                         model.forward(images), labels), 2)
        model.backward(dlogits)
        opt.step()
        losses.append(float(np.asarray(loss, dtype=np.float64)))
    if not np.isfinite(losses).all() or not losses[-1] < 0.3 * losses[0]:
        fail(f"training a 2-layer CRATE for 30 Adam steps took the loss from {losses[0]:.3f} "
             f"only to {losses[-1]:.3f} (expected below 30% of it): the network's backward "
             "is wrong (this run uses your parts 1 and 2 as well: if their checks failed, "
             "fix them first)")
