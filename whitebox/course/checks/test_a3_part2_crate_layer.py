"""A3 part 2: one CRATE layer, Z^{l+1/2} = Z + MSSA(LN1(Z)), Z^{l+1} = ISTA(LN2(Z^{l+1/2}))."""
from course_helpers import assert_close, describe, rng
from module_checks import check_module_gradients
from whitebox.nn import CRATELayer, ISTA, PreNorm


def layer(seed=0):
    return CRATELayer(6, heads=2, dim_head=3, dtype="float64", seed=seed)


def test_crate_layer_forward():
    L = layer()
    x = rng(1).standard_normal((2, 4, 6))
    y = L(x)
    attn, ista = L.attn, L.ista
    half = x + attn.fn(attn.norm(x))
    expected = ista.fn(ista.norm(half))
    assert_close("CRATELayer.forward", y, expected, describe(x=x), 1e-12)


def test_crate_layer_forward_capture():
    L = layer()
    x = rng(2).standard_normal((2, 4, 6))
    capture = {k: [] for k in ("mssa_in", "attention", "z_half", "ista_in", "code", "z")}
    y = L(x, capture)
    assert all(len(v) == 1 for v in capture.values()), \
        "CRATELayer.forward(x, capture) must append one entry to each of the capture lists " \
        f"{list(capture)}; got lengths {[len(v) for v in capture.values()]}"
    assert_close('CRATELayer.forward: capture["z"]', capture["z"][0], y, "", 1e-12)
    # CRATE's layer output is its sparse code: the ISTA step has no residual
    assert_close('CRATELayer.forward: capture["code"]', capture["code"][0], y, "", 1e-12)


def test_prenorm_backward():
    m = PreNorm(5, ISTA(5, dtype="float64", seed=3), dtype="float64")
    x = rng(3).standard_normal((3, 5))
    check_module_gradients("PreNorm.backward", m, x, hint="y = fn(LayerNorm(x)): "
                           "backward runs fn's backward, then the norm's")


def test_crate_layer_backward():
    L = layer(4)
    x = rng(4).standard_normal((2, 4, 6))
    check_module_gradients("CRATELayer.backward", L, x,
                           hint="the residual goes around MSSA only: "
                                "dZ = dZ_half + MSSA branch backward(dZ_half)")
